"""The engine: loading GGUF models through llama-cpp-python and generating with them.

Importing this package does not import llama_cpp; only `loader` and the batch engine do.
"""
