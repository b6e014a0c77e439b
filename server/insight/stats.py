"""Statistics over scored tokens, with the formulas of llama.cpp's perplexity tool.

Perplexity is exp(mean NLL); its error is ppl * the standard error of the mean NLL. KL
divergence: mean ± standard error, percentiles with linear interpolation, the share of
positions where both models rank the same token first (± binomial error), and the perplexity
ratio with an error that uses the covariance of the two models' NLL on the same tokens.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from server.insight.results import KLDStats

Array = np.ndarray[Any, Any]

PERCENTILES = (("p90", 90.0), ("p95", 95.0), ("p99", 99.0), ("p999", 99.9))


def mean_and_error(values: Array) -> tuple[float, float]:
    """The mean and its standard error (0 for ten values or fewer, as llama.cpp reports)."""
    count = len(values)
    if count == 0:
        return 0.0, 0.0
    mean = float(np.mean(values))
    var = float(np.mean(np.square(values))) - mean * mean
    error = math.sqrt(var / (count - 1)) if var > 0 and count > 10 else 0.0
    return mean, error


def perplexity(nll: Array) -> tuple[float, float]:
    """(perplexity, its standard error) from per-token negative log-likelihoods."""
    count = len(nll)
    if count == 0:
        return math.nan, math.nan
    mean = float(np.mean(nll))
    var = float(np.mean(np.square(nll))) - mean * mean
    ppl = math.exp(mean)
    error = ppl * math.sqrt(var / (count - 1)) if var > 0 and count > 1 else 0.0
    return ppl, error


def kld_stats(
    kld: Array, same_top: Array, nll: Array, nll_ref: Array, *, reference: str, top_k: int
) -> KLDStats:
    """KL divergence statistics of one model against a reference on the same tokens."""
    count = len(kld)
    mean, error = mean_and_error(kld)
    quantiles = np.percentile(kld, [p for _, p in PERCENTILES]) if count else [math.nan] * 4
    same = float(np.mean(same_top)) if count else math.nan
    same_error = math.sqrt(same * (1 - same) / (count - 1)) if count > 1 else 0.0
    log_q, err_q = mean_and_error(nll)
    log_b, err_b = mean_and_error(nll_ref)
    cov = 0.0
    if count >= 10:
        cov = (float(np.mean(nll * nll_ref)) - log_q * log_b) / (count - 1)
    ratio = math.exp(log_q - log_b)
    ratio_error = ratio * math.sqrt(max(err_q * err_q + err_b * err_b - 2 * cov, 0.0))
    return KLDStats(
        reference=reference,
        top_k=top_k,
        mean=mean,
        mean_error=error,
        median=float(np.median(kld)) if count else math.nan,
        maximum=float(np.max(kld)) if count else math.nan,
        **{name: float(q) for (name, _), q in zip(PERCENTILES, quantiles, strict=True)},
        same_top_pct=100 * same,
        same_top_error_pct=100 * same_error,
        ppl_ratio=ratio,
        ppl_ratio_error=ratio_error,
    )
