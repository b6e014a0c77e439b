"""Rules of thumb about quant types, used by `recommend` when nothing has been measured.

The tiers encode what llama.cpp's own measurements (and ours, docs/QUANTIZATION.md) show:
- 8 bits and up (Q8_0, F16, BF16, F32) are indistinguishable in use, so the smallest wins: Q8_0
  whenever memory allows;
- K-quants lose less than the legacy quants (Q4_0, Q4_1, Q5_0, Q5_1) of the same size;
- below 4 bits (Q3_K, Q2_K, IQ3, IQ2) the loss becomes obvious: only when nothing else fits;
- a bigger model at 4 bits or more beats a smaller one at any precision, but a smaller model at
  Q4_K_M usually beats a bigger one at Q2_K.
"""

from __future__ import annotations

NEAR_LOSSLESS = 9.0
FOUR_BITS = 4.0

TIERS: dict[str, float] = {
    "F32": NEAR_LOSSLESS,
    "F16": NEAR_LOSSLESS,
    "BF16": NEAR_LOSSLESS,
    "Q8_0": NEAR_LOSSLESS,
    "Q6_K": 8.0,
    "Q5_K_M": 7.0,
    "Q5_K_S": 6.5,
    "Q5_1": 6.2,
    "Q5_0": 6.0,
    "Q4_K_M": 5.0,
    "Q4_K_S": 4.6,
    "IQ4_XS": 4.6,
    "IQ4_NL": 4.5,
    "Q4_1": 4.3,
    "Q4_0": FOUR_BITS,
    "Q3_K_L": 3.0,
    "Q3_K_M": 2.5,
    "IQ3_M": 2.5,
    "IQ3_S": 2.3,
    "Q3_K_S": 2.0,
    "IQ3_XS": 2.0,
    "IQ3_XXS": 1.8,
    "Q2_K": 1.0,
    "Q2_K_S": 0.9,
    "IQ2_M": 0.9,
    "IQ2_S": 0.8,
    "IQ2_XS": 0.7,
    "IQ2_XXS": 0.6,
    "IQ1_M": 0.3,
    "IQ1_S": 0.2,
}
LEGACY = frozenset({"Q4_0", "Q4_1", "Q5_0", "Q5_1"})


def tier(quant: str, bits_per_weight: float) -> float:
    """A quant's quality tier (higher is better); unknown types are placed by bits per weight."""
    known = TIERS.get(quant.upper())
    if known is not None:
        return known
    return min(NEAR_LOSSLESS, max(0.0, bits_per_weight - 3.0))


def rule_key(quant: str, bits_per_weight: float, parameters: int, memory: int) -> tuple[float, ...]:
    """Sort key, best first when sorted descending: 4 bits or better, then the bigger model,
    then the better tier, then the smaller footprint."""
    level = tier(quant, bits_per_weight)
    return (float(level >= FOUR_BITS), float(parameters), level, -float(memory))


def explain_rule(quant: str, bits_per_weight: float, others: list[str]) -> str:
    """Why the rules picked `quant`, in one sentence."""
    level = tier(quant, bits_per_weight)
    upper = quant.upper()
    if level >= NEAR_LOSSLESS:
        return (
            "Rule of thumb: 8 bits and more are near-lossless, so the smallest of them "
            f"({upper}) is the choice when memory allows."
        )
    if level < FOUR_BITS:
        return (
            f"Rule of thumb: nothing of 4 bits or more fits, and {upper} loses noticeably; a "
            "smaller model at Q4_K_M is often better than a bigger one at 2-3 bits."
        )
    if upper in LEGACY:
        return f"Rule of thumb: the best tier that fits is a legacy quant ({upper})."
    larger = [q for q in others if tier(q, 0) > level]
    tail = f" ({', '.join(larger)} do not fit)" if larger else ""
    return (
        f"Rule of thumb: {upper} is the highest-quality type that fits{tail}; K-quants lose "
        "less than legacy quants of the same size."
    )
