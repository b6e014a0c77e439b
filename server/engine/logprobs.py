"""Log-probabilities of a sampled token and its top alternatives, from the raw logits."""

from __future__ import annotations

from typing import Any

import llama_cpp
import numpy as np

from server.engine.tokenizer import Tokenizer
from server.engine.types import TokenLogprob


def _entry(tokenizer: Tokenizer, token: int) -> tuple[str, tuple[int, ...]]:
    data = tokenizer.piece(token)
    return data.decode("utf-8", errors="replace"), tuple(data)


def token_logprobs(
    ctx: Any, idx: int, token: int, top_n: int, tokenizer: Tokenizer
) -> TokenLogprob:
    """The model's log-probability of `token` at output row `idx` (before sampler changes)."""
    ptr = llama_cpp.llama_get_logits_ith(ctx, idx)
    logits = np.ctypeslib.as_array(ptr, shape=(tokenizer.n_vocab,)).astype(np.float64)
    peak = logits.max()
    log_z = peak + np.log(np.exp(logits - peak).sum())
    text, raw = _entry(tokenizer, token)
    top: tuple[tuple[str, float, tuple[int, ...]], ...] = ()
    if top_n > 0:
        ids = np.argpartition(-logits, top_n)[:top_n]
        ids = ids[np.argsort(-logits[ids], kind="stable")]
        entries = []
        for t in ids:
            alt_text, alt_raw = _entry(tokenizer, int(t))
            entries.append((alt_text, float(logits[t] - log_z), alt_raw))
        top = tuple(entries)
    return TokenLogprob(token=text, logprob=float(logits[token] - log_z), bytes=raw, top=top)
