"""Pooled embeddings from a model loaded for chat: a second llama context on the same weights.

Why a second context rather than one context toggled with llama_set_embeddings: the chat
context holds every slot's KV cache (prefix reuse for the next turn), causal attention and
per-token logits; an embedding pass needs pooling fixed at context creation, all tokens as
outputs and a clean cache. Toggling would mean clearing or working around live slots between
decode steps. A second context shares the weights (no second copy) and costs only its own KV
cache and compute buffers, allocated on the first embedding request.

Only the engine's worker thread calls into an Embedder (via BatchEngine.call).
"""

from __future__ import annotations

import ctypes
import logging
from typing import Any

import llama_cpp
import numpy as np

from server.errors import EngineError

logger = logging.getLogger(__name__)

_POOLING_NAMES = {
    llama_cpp.LLAMA_POOLING_TYPE_MEAN: "mean",
    llama_cpp.LLAMA_POOLING_TYPE_CLS: "cls",
    llama_cpp.LLAMA_POOLING_TYPE_LAST: "last",
}
MAX_SEQUENCES = 32  # inputs pooled in one decode
_FLASH_ATTN = {
    "on": llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED,
    "off": llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED,
    "auto": llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO,
}


def _meta(model: Any, key: str) -> str | None:
    buf = ctypes.create_string_buffer(256)
    n = llama_cpp.llama_model_meta_val_str(model, key.encode(), buf, len(buf))
    return buf.value.decode("utf-8", errors="replace") if n >= 0 else None


def pooling_of(model: Any) -> int:
    """The GGUF's `<arch>.pooling_type` when it names a pooled type, else MEAN."""
    arch = _meta(model, "general.architecture") or ""
    value = _meta(model, f"{arch}.pooling_type")
    try:
        pooling = int(value) if value is not None else -1
    except ValueError:
        pooling = -1
    return pooling if pooling in _POOLING_NAMES else llama_cpp.LLAMA_POOLING_TYPE_MEAN


class Embedder:
    """An embeddings-only context (unified KV) over a loaded llama_model.

    Pooling: llama.cpp pools per ubatch, so a sequence split across ubatches would come back
    pooled over its last piece only. For causal models (every chat model) the context returns
    per-token embeddings with a bounded ubatch and the pooling (mean / first / last token, as
    llama.cpp's) is done here: the whole input never has to fit one ubatch, whose compute buffer
    holds a logits row per token (n_ubatch x n_vocab floats: 2 GB at 4096 x 128k). Non-causal
    encoders need the whole input in one ubatch anyway and use llama.cpp's pooling.
    """

    def __init__(
        self, model: Any, *, n_ctx: int, n_ubatch: int, n_threads: int, flash_attn: str
    ) -> None:
        self.pooling = pooling_of(model)
        self.n_embd = int(llama_cpp.llama_model_n_embd_out(model))
        self.n_ctx = n_ctx
        self._encoder_only = bool(
            llama_cpp.llama_model_has_encoder(model)
            and not llama_cpp.llama_model_has_decoder(model)
        )
        arch = _meta(model, "general.architecture") or ""
        causal = (_meta(model, f"{arch}.attention.causal") or "true").lower() != "false"
        self._pool_here = causal and not self._encoder_only
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_ctx
        params.n_ubatch = min(n_ubatch, n_ctx) if self._pool_here else n_ctx
        params.n_seq_max = MAX_SEQUENCES
        params.n_threads = n_threads
        params.n_threads_batch = n_threads
        params.flash_attn_type = _FLASH_ATTN[flash_attn]
        params.embeddings = True
        params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_NONE if self._pool_here else self.pooling
        params.kv_unified = True  # the sequences of one batch share the n_ctx cells
        params.no_perf = True
        ctx = llama_cpp.llama_init_from_model(model, params)
        if not ctx:
            raise EngineError("llama.cpp could not create an embeddings context for this model")
        self._ctx = ctx
        self._memory = llama_cpp.llama_get_memory(ctx)
        self._batch = llama_cpp.llama_batch_init(n_ctx, 0, 1)
        logger.info(
            "embeddings context ready: n_ctx=%d, n_ubatch=%d, pooling=%s%s, n_embd=%d",
            n_ctx,
            params.n_ubatch,
            _POOLING_NAMES[self.pooling],
            " (pooled by gguf-serve)" if self._pool_here else "",
            self.n_embd,
        )

    def batches(self, inputs: list[list[int]]) -> list[list[int]]:
        """Indices of `inputs` grouped so that each group fits one decode."""
        groups: list[list[int]] = []
        used = 0
        for i, tokens in enumerate(inputs):
            if not groups or used + len(tokens) > self.n_ctx or len(groups[-1]) >= MAX_SEQUENCES:
                groups.append([])
                used = 0
            groups[-1].append(i)
            used += len(tokens)
        return groups

    def embed(self, inputs: list[list[int]]) -> list[np.ndarray[Any, np.dtype[np.float32]]]:
        """One pooled vector per input; the inputs must fit one decode together (see batches)."""
        batch = self._batch
        n = 0
        for seq, tokens in enumerate(inputs):
            for pos, token in enumerate(tokens):
                batch.token[n] = token
                batch.pos[n] = pos
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = seq
                batch.logits[n] = 1
                n += 1
        batch.n_tokens = n
        llama_cpp.llama_memory_clear(self._memory, True)
        run = llama_cpp.llama_encode if self._encoder_only else llama_cpp.llama_decode
        try:
            rc = run(self._ctx, batch)
            if rc != 0:
                raise EngineError(f"the embeddings pass failed (llama.cpp returned {rc})")
            if self._pool_here:
                return self._pool(inputs, n)
            out = []
            for seq in range(len(inputs)):
                ptr = llama_cpp.llama_get_embeddings_seq(self._ctx, seq)
                if not ptr:
                    raise EngineError("llama.cpp returned no pooled embedding")
                out.append(np.ctypeslib.as_array(ptr, shape=(self.n_embd,)).copy())
            return out
        finally:
            llama_cpp.llama_memory_clear(self._memory, True)

    def _pool(self, inputs: list[list[int]], n: int) -> list[np.ndarray[Any, np.dtype[np.float32]]]:
        ptr = llama_cpp.llama_get_embeddings(self._ctx)
        if not ptr:
            raise EngineError("llama.cpp returned no token embeddings")
        rows = np.ctypeslib.as_array(ptr, shape=(n, self.n_embd))  # batch order
        out = []
        start = 0
        for tokens in inputs:
            seq = rows[start : start + len(tokens)]
            start += len(tokens)
            if self.pooling == llama_cpp.LLAMA_POOLING_TYPE_CLS:
                out.append(seq[0].copy())
            elif self.pooling == llama_cpp.LLAMA_POOLING_TYPE_LAST:
                out.append(seq[-1].copy())
            else:
                out.append(seq.mean(axis=0, dtype=np.float32))
        return out

    def close(self) -> None:
        llama_cpp.llama_batch_free(self._batch)
        llama_cpp.llama_free(self._ctx)


def normalized(vector: np.ndarray[Any, np.dtype[np.float32]]) -> list[float]:
    """`vector` scaled to unit L2 norm (a zero vector stays zero)."""
    norm = float(np.linalg.norm(vector))
    return (vector / norm if norm > 0 else vector).astype(float).tolist()  # type: ignore[no-any-return]
