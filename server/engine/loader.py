"""The one place where load options meet llama.cpp: validation, then model + context creation."""

from __future__ import annotations

import ctypes
import logging
import threading
from pathlib import Path

import llama_cpp

from server.engine import llama_log
from server.engine.options import (
    CACHE_TYPES,
    LoadOptions,
    ModelFacts,
    resolve_options,
)
from server.errors import InvalidLoadOptions, ModelLoadError

__all__ = ["GGML_TYPES", "LlamaHandles", "ModelFacts", "cache_type_id", "resolve_options"]

logger = logging.getLogger(__name__)

# ggml_type ids; BF16 (30) is missing from llama_cpp's Python constants.
GGML_TYPES: dict[str, int] = {
    "f32": llama_cpp.GGML_TYPE_F32,
    "f16": llama_cpp.GGML_TYPE_F16,
    "bf16": 30,
    "q8_0": llama_cpp.GGML_TYPE_Q8_0,
    "q4_0": llama_cpp.GGML_TYPE_Q4_0,
    "q4_1": llama_cpp.GGML_TYPE_Q4_1,
    "iq4_nl": llama_cpp.GGML_TYPE_IQ4_NL,
    "q5_0": llama_cpp.GGML_TYPE_Q5_0,
    "q5_1": llama_cpp.GGML_TYPE_Q5_1,
}
assert set(GGML_TYPES) == set(CACHE_TYPES)

_FLASH_ATTN = {
    "on": llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED,
    "off": llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED,
    "auto": llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO,
}
_backend_lock = threading.Lock()
_backend_ready = False


def ensure_backend() -> None:
    """Route llama.cpp's log to Python logging and initialise its backends (once)."""
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            llama_log.install()
            llama_cpp.llama_backend_init()
            _backend_ready = True


def cache_type_id(name: str) -> int:
    """The ggml type id for a KV cache type name; raises InvalidLoadOptions listing valid names."""
    try:
        return GGML_TYPES[name]
    except KeyError:
        raise InvalidLoadOptions(
            f"unknown cache type {name!r}; valid types: {', '.join(CACHE_TYPES)}"
        ) from None


def check_loadable(path: Path) -> None:
    """Everything llama.cpp checks before it reads the weights: the header, that it knows the
    architecture, the hyper-parameters it requires, the vocabulary, every tensor's presence and
    shape. A `no_alloc` load (llama.cpp's memory-fit pass): nothing is allocated or read, so
    nothing has to make room for it.

    Raises ModelLoadError with llama.cpp's reason.
    """
    ensure_backend()
    params = llama_cpp.llama_model_default_params()
    params.no_alloc = True
    params.load_mode = llama_cpp.LLAMA_LOAD_MODE_NONE  # a no_alloc load maps nothing
    with llama_log.capture() as log:
        model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise ModelLoadError(f"llama.cpp refuses it: {_reason(log)}")
    llama_cpp.llama_model_free(model)


def _reason(log: llama_log.CapturedLog) -> str:
    return log.reason() or "llama.cpp logged no reason"


class LlamaHandles:
    """Owns a llama_model and one llama_context built from effective LoadOptions."""

    def __init__(
        self,
        path: Path,
        options: LoadOptions,
        *,
        embeddings: bool = False,
        n_outputs_max: int = 0,
    ) -> None:
        """Load `path` and create its context.

        `n_gpu_layers` must be a count here (the memory plan resolves `auto`). `n_outputs_max`
        bounds the logits rows of one decode (0: llama.cpp's default, n_batch); the compute
        buffer holds that many rows of n_vocab floats, so an engine that samples one token per
        slot passes its slot count. Raises InvalidLoadOptions, ModelLoadError.
        """
        if not isinstance(options.n_gpu_layers, int):
            raise InvalidLoadOptions("n_gpu_layers must be resolved to a count before loading")
        ensure_backend()
        self.options = options
        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = options.n_gpu_layers
        if options.rpc_servers:  # only in a supervised child: llama.cpp aborts if one dies
            from server.engine.rpc import register_servers

            for dev in register_servers(options.rpc_servers):
                logger.info(
                    "rpc device %s at %s: %d MiB free", dev.name, dev.endpoint, dev.free >> 20
                )
        if options.tensor_split:
            split = (
                ctypes.c_float * max(len(options.tensor_split), llama_cpp.llama_max_devices())
            )()
            split[: len(options.tensor_split)] = options.tensor_split
            self._tensor_split = split  # llama.cpp reads it during the load
            mparams.tensor_split = split
        if options.use_mmap:
            mparams.load_mode = (
                llama_cpp.LLAMA_LOAD_MODE_MMAP_MLOCK
                if options.use_mlock
                else llama_cpp.LLAMA_LOAD_MODE_MMAP
            )
        else:
            mparams.load_mode = (
                llama_cpp.LLAMA_LOAD_MODE_MLOCK
                if options.use_mlock
                else llama_cpp.LLAMA_LOAD_MODE_NONE
            )
        with llama_log.capture() as log:
            model = llama_cpp.llama_model_load_from_file(str(path).encode(), mparams)
        if not model:
            raise ModelLoadError(f"llama.cpp could not load it: {_reason(log)}")
        self.model = model
        self.vocab = llama_cpp.llama_model_get_vocab(model)
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_seq_max = options.n_parallel
        cparams.n_ctx = options.n_ctx * options.n_parallel
        cparams.n_batch = options.n_batch
        cparams.n_ubatch = options.n_ubatch
        cparams.n_threads = options.n_threads
        cparams.n_threads_batch = options.n_threads
        cparams.flash_attn_type = _FLASH_ATTN[options.flash_attn]
        cparams.type_k = cache_type_id(options.type_k)
        cparams.type_v = cache_type_id(options.type_v)
        cparams.kv_unified = False  # per-slot streams: faster when prompts do not share a prefix
        cparams.swa_full = options.swa_full
        cparams.n_outputs_max = n_outputs_max
        cparams.no_perf = True
        cparams.embeddings = embeddings
        if embeddings:
            cparams.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED
        with llama_log.capture() as log:
            ctx = llama_cpp.llama_init_from_model(model, cparams)
        if not ctx:
            llama_cpp.llama_model_free(model)
            raise ModelLoadError(
                f"llama.cpp could not create its context (n_ctx={cparams.n_ctx}, "
                f"type_k={options.type_k}, type_v={options.type_v}, "
                f"flash_attn={options.flash_attn}): {_reason(log)}"
            )
        self.ctx = ctx
        self.memory = llama_cpp.llama_get_memory(ctx)
        self.n_ctx_seq = int(llama_cpp.llama_n_ctx_seq(ctx))
        self._closed = False

    def close(self) -> None:
        """Free the context and the model (idempotent)."""
        if self._closed:
            return
        self._closed = True
        llama_cpp.llama_free(self.ctx)
        llama_cpp.llama_model_free(self.model)
