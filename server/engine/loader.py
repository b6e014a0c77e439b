"""The one place where load options meet llama.cpp: validation, then model + context creation."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp

from server.engine import llama_log
from server.engine.options import CACHE_TYPES, UNQUANTIZED_CACHE_TYPES, LoadOptions
from server.errors import InvalidLoadOptions, ModelLoadError

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


def _ensure_backend() -> None:
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            llama_log.install()
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


def check_loadable(path: Path) -> None:
    """Everything llama.cpp checks before it reads the weights: the header, that it knows the
    architecture, the hyper-parameters it requires, the vocabulary, every tensor's presence and
    shape. A `no_alloc` load (llama.cpp's memory-fit pass): nothing is allocated or read, so
    nothing has to make room for it.

    Raises ModelLoadError with llama.cpp's reason.
    """
    _ensure_backend()
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

    def __init__(self, path: Path, options: LoadOptions, *, embeddings: bool = False) -> None:
        _ensure_backend()
        self.options = options
        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = options.n_gpu_layers
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
