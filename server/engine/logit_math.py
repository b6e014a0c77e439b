"""Per-token figures from a block of logits: what llama.cpp's perplexity tool computes per token.

Pure numpy (no llama_cpp), so the arithmetic is unit-tested on synthetic logits. Rows are the
positions scored in one context window; columns the vocabulary.

KL divergence is computed against a reference kept as its top-k log-probabilities per position
(the full distribution is n_vocab floats per token: 800 MB for 16 windows of a 49k vocabulary).
The probability mass outside the reference's top k is treated as one "rest" outcome on both
sides, which gives KL(P||Q) over a coarser partition of the vocabulary: by the log-sum
inequality never more than the exact figure, and equal to it when k is the vocabulary size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

Array = np.ndarray[Any, Any]

# Below this the "rest" mass is rounding noise of float32 log-probabilities.
_TINY = 1e-12


@dataclass(frozen=True)
class TopK:
    """A reference distribution per position: the k most likely token ids and log-probs."""

    ids: Array  # int32 [n, k], most likely first
    logprobs: Array  # float32 [n, k]


@dataclass(frozen=True)
class TokenScores:
    """Per position: negative log-likelihood of the actual next token, and against a reference."""

    nll: Array  # float64 [n]
    kld: Array | None = None  # float64 [n]: KL(reference || this model), top-k approximation
    same_top: Array | None = None  # bool [n]: this model's most likely token = the reference's
    top: TopK | None = None  # this model's own top-k, kept to serve as a reference


def log_normalizer(logits: Array) -> Array:
    """log(sum(exp(row))) per row, as llama.cpp computes it: float32 exps summed in float64."""
    peak = logits.max(axis=1)
    sums = np.exp(logits - peak[:, None]).sum(axis=1, dtype=np.float64)
    return np.asarray(peak.astype(np.float64) + np.log(sums))


def top_k(logits: Array, log_z: Array, k: int) -> TopK:
    """The `k` largest log-probabilities per row, most likely first (ties: lower id first)."""
    n_vocab = logits.shape[1]
    k = min(k, n_vocab)
    if k == n_vocab:
        ids = np.argsort(-logits, axis=1, kind="stable")
    else:
        part = np.argpartition(-logits, k - 1, axis=1)[:, :k]
        values = np.take_along_axis(logits, part, axis=1)
        # Sort the k candidates by value, then id, so equal logits keep a stable order.
        order = np.lexsort((part, -values), axis=1)
        ids = np.take_along_axis(part, order, axis=1)
    values = np.take_along_axis(logits, ids, axis=1).astype(np.float64)
    return TopK(ids.astype(np.int32), (values - log_z[:, None]).astype(np.float32))


def score_rows(
    logits: Array, targets: Array, reference: TopK | None = None, keep_top: int = 0
) -> TokenScores:
    """NLL of `targets` under `logits`; given a reference, per-token KLD and same-top flags;
    given `keep_top`, this model's own top-k.

    `logits` float32 [n, n_vocab]; `targets` int [n]; `reference` top-k of n rows.
    """
    rows = np.arange(len(targets))
    log_z = log_normalizer(logits)
    nll = log_z - logits[rows, targets].astype(np.float64)
    kld = same_top = None
    if reference is not None:
        kld = kld_top_k(logits, log_z, reference)
        same_top = np.argmax(logits, axis=1) == reference.ids[:, 0]
    top = top_k(logits, log_z, keep_top) if keep_top > 0 else None
    return TokenScores(nll, kld, same_top, top)


def kld_top_k(logits: Array, log_z: Array, reference: TopK) -> Array:
    """KL(reference || model) per row over the reference's top k plus one "rest" bucket."""
    ref_lp = reference.logprobs.astype(np.float64)
    ref_p = np.exp(ref_lp)
    model_lp = np.take_along_axis(logits, reference.ids, axis=1).astype(np.float64) - log_z[:, None]
    kld = (ref_p * (ref_lp - model_lp)).sum(axis=1)
    ref_rest = 1.0 - ref_p.sum(axis=1)
    model_rest = np.maximum(1.0 - np.exp(model_lp).sum(axis=1), _TINY)
    rest = ref_rest > _TINY
    kld[rest] += ref_rest[rest] * (np.log(ref_rest[rest]) - np.log(model_rest[rest]))
    return np.asarray(kld, dtype=np.float64)
