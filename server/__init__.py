"""gguf-serve: a local inference server for quantized GGUF models."""

__version__ = "0.1.0"
