"""The one place where load options meet llama.cpp: validation, then model + context creation."""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp

from server.engine.options import CACHE_TYPES, UNQUANTIZED_CACHE_TYPES, LoadOptions
from server.errors import InvalidLoadOptions, ModelLoadError

logger = logging.getLogger(__name__)
_llama_logger = logging.getLogger("server.engine.llama_cpp")

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
# ggml_log_level: 1 debug, 2 info (chatty load details: kept at DEBUG), 3 warn, 4 error, 5 cont.
_GGML_LEVELS = {1: logging.DEBUG, 2: logging.DEBUG, 3: logging.WARNING, 4: logging.ERROR}
_last_level = [logging.DEBUG]

_backend_lock = threading.Lock()
_backend_ready = False


@llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
def _route_llama_log(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
    """Send llama.cpp's log lines to Python logging instead of stderr."""
    py_level = _last_level[0] if level == 5 else _GGML_LEVELS.get(level, logging.DEBUG)
    _last_level[0] = py_level
    if text and _llama_logger.isEnabledFor(py_level):
        message = text.decode("utf-8", errors="replace").rstrip("\n")
        if message:
            _llama_logger.log(py_level, "%s", message)


def _ensure_backend() -> None:
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            llama_cpp.llama_log_set(_route_llama_log, ctypes.c_void_p(0))
            llama_cpp.llama_backend_init()
            _backend_ready = True


@dataclass(frozen=True)
class ModelFacts:
    """What validation needs to know about a model file (from its GGUF header)."""

    n_ctx_train: int
    n_layer: int


def resolve_options(options: LoadOptions, facts: ModelFacts, *, n_ctx_cap: int) -> LoadOptions:
    """Validate `options` against the model and return the effective options.

    Raises InvalidLoadOptions with a message that says what to change.
    """
    changes: dict[str, Any] = {}
    if options.type_v not in UNQUANTIZED_CACHE_TYPES:
        if options.flash_attn == "off":
            raise InvalidLoadOptions(
                f"a quantized V cache (type_v={options.type_v}) needs flash attention: "
                "set flash_attn to 'on' (or use type_v f16)",
                param="type_v",
            )
        changes["flash_attn"] = "on"
    if options.n_ctx == 0:
        changes["n_ctx"] = min(facts.n_ctx_train, n_ctx_cap) if facts.n_ctx_train else n_ctx_cap
    elif facts.n_ctx_train and options.n_ctx > facts.n_ctx_train:
        raise InvalidLoadOptions(
            f"n_ctx={options.n_ctx} is above the model's trained context length "
            f"{facts.n_ctx_train}; use at most {facts.n_ctx_train} (or 0 for the trained length)",
            param="n_ctx",
        )
    if options.n_gpu_layers > facts.n_layer:
        changes["n_gpu_layers"] = -1
    if options.n_ubatch > options.n_batch:
        changes["n_ubatch"] = options.n_batch
    if options.n_threads == 0:
        changes["n_threads"] = os.cpu_count() or 1
    return options.model_copy(update=changes) if changes else options


def cache_type_id(name: str) -> int:
    """The ggml type id for a KV cache type name; raises InvalidLoadOptions listing valid names."""
    try:
        return GGML_TYPES[name]
    except KeyError:
        raise InvalidLoadOptions(
            f"unknown cache type {name!r}; valid types: {', '.join(CACHE_TYPES)}"
        ) from None


class LlamaHandles:
    """Owns a llama_model and one llama_context built from effective LoadOptions."""

    def __init__(self, path: Path, options: LoadOptions, *, embeddings: bool = False) -> None:
        _ensure_backend()
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
        model = llama_cpp.llama_model_load_from_file(str(path).encode(), mparams)
        if not model:
            raise ModelLoadError(f"llama.cpp could not load {path.name}")
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
        cparams.no_perf = True
        cparams.embeddings = embeddings
        if embeddings:
            cparams.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED
        ctx = llama_cpp.llama_init_from_model(model, cparams)
        if not ctx:
            llama_cpp.llama_model_free(model)
            raise ModelLoadError(
                f"llama.cpp could not create a context for {path.name} "
                f"(n_ctx={cparams.n_ctx}, type_k={options.type_k}, type_v={options.type_v}, "
                f"flash_attn={options.flash_attn}); see the log for the reason"
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
