"""`recommend`: the best quant of a family that fits a memory budget, and why, in two lines.

Candidates are the family's stored models. One fits when its memory at the chosen context and
KV types (see memory_column) is within the budget less a margin (10%: allocator slack, the OS,
the prompt's own buffers). From measured figures (any `perplexity` / `compare` run covering
every model that fits, on the same text and window): the smallest model whose perplexity is
within 1% of the best that fits. Otherwise the rules of thumb in `rules`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, Field

from server.insight.cache import InsightCache
from server.insight.family import family_members
from server.insight.memory_column import memory_at_context
from server.insight.results import PerplexityResult
from server.insight.rules import explain_rule, rule_key
from server.registry import Registry

TOLERANCE_PCT = 1.0
DEFAULT_MARGIN = 0.10


class Candidate(BaseModel):
    """One model of the family, with what it needs and (when measured) what it loses."""

    model: str
    quant: str
    parameters: int
    file_size: int
    memory: int = Field(description="Bytes at the chosen context and KV types.")
    fits: bool
    ppl: float | None = None
    ppl_error: float | None = None
    delta_pct: float | None = Field(None, description="Perplexity vs the family reference, %.")
    kld_mean: float | None = None


class Recommendation(BaseModel):
    """The answer of `recommend` (CLI and POST /recommend)."""

    family: str
    model: str | None = Field(description="The recommended model; None when nothing fits.")
    quant: str | None
    memory_budget: int
    budget_source: Literal["given", "detected"]
    usable_memory: int = Field(description="The budget less the margin.")
    margin_pct: float
    context: int
    type_k: str
    type_v: str
    basis: Literal["measured", "rules", "none"]
    measured_on: str | None = Field(None, description="Text, window and chunks of the figures.")
    reason: list[str] = Field(description="Two lines: what fits, and why this one.")
    candidates: list[Candidate]


def binary_size(size: float) -> str:
    """Memory as GiB / MiB with one decimal: 8589934592 -> "8.0 GiB"."""
    for scale, unit in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{int(size)} B"


def _measured(
    results: Iterable[PerplexityResult], digests: dict[str, str], type_k: str, type_v: str
) -> tuple[str, dict[str, PerplexityResult]] | None:
    """The largest set of comparable results (same text, window, chunks, KV types) for the
    digests given (name -> digest), preferring the requested KV types, then KLD, then recency."""
    wanted = set(digests.values())
    groups: dict[tuple[str, int, int, str, str], dict[str, PerplexityResult]] = defaultdict(dict)
    for result in results:
        if result.model_digest not in wanted:
            continue
        key = (result.text.sha256, result.n_ctx, result.chunks, result.type_k, result.type_v)
        have = groups[key].get(result.model_digest)
        if have is None or (have.kld is None and result.kld is not None):
            groups[key][result.model_digest] = result
    if not groups:
        return None
    key, best = max(
        groups.items(),
        key=lambda item: (
            len(item[1]),
            item[0][3:] == (type_k, type_v),
            max(r.measured_at for r in item[1].values()),
        ),
    )
    if len(best) < len(wanted):
        return None
    sample = next(iter(best.values()))
    label = f"{sample.text.name}, {sample.chunks} windows of {sample.n_ctx}, KV {key[3]}/{key[4]}"
    by_name = {name: best[digest] for name, digest in digests.items()}
    return label, by_name


def recommend(
    registry: Registry,
    cache: InsightCache,
    name_or_family: str,
    *,
    budget: int,
    budget_source: Literal["given", "detected"],
    context: int,
    type_k: str = "f16",
    type_v: str = "f16",
    margin: float = DEFAULT_MARGIN,
) -> Recommendation:
    """Choose a model of the family for the budget. Raises InvalidName, ModelNotFound."""
    members = family_members(registry, name_or_family)
    family = members[0].model_name.model
    usable = int(budget * (1 - margin))
    candidates = [
        Candidate(
            model=m.name,
            quant=m.info.quant,
            parameters=m.info.parameter_count,
            file_size=m.info.size_bytes,
            memory=(need := memory_at_context(m.info, context, type_k, type_v)),
            fits=need <= usable,
        )
        for m in members
    ]
    answer = Recommendation(
        family=family,
        model=None,
        quant=None,
        memory_budget=budget,
        budget_source=budget_source,
        usable_memory=usable,
        margin_pct=100 * margin,
        context=context,
        type_k=type_k,
        type_v=type_v,
        basis="none",
        reason=[],
        candidates=candidates,
    )
    fitting = [c for c in candidates if c.fits]
    if not fitting:
        smallest = min(candidates, key=lambda c: c.memory)
        answer.reason = [
            f"Nothing fits: the smallest {family} model, {smallest.model}, needs "
            f"{binary_size(smallest.memory)} at {context} tokens; {binary_size(usable)} is usable "
            f"of {binary_size(budget)} ({budget_source}, less {100 * margin:.0f}%).",
            "Try a shorter context (--ctx), a quantized KV cache (--kv-type q8_0), or a smaller "
            "model.",
        ]
        return answer
    digests = {c.model: registry.record(c.model).model_digest for c in fitting}
    measured = _measured(cache.results(), digests, type_k, type_v)
    if measured is not None:
        label, figures = measured
        for c in fitting:
            r = figures[c.model]
            c.ppl, c.ppl_error = r.ppl, r.ppl_error
            c.delta_pct = r.kld.delta_pct if r.kld else None
            c.kld_mean = r.kld.mean if r.kld else None
        best = min(fitting, key=lambda c: (c.ppl or 0.0, c.memory))
        limit = (best.ppl or 0.0) * (1 + TOLERANCE_PCT / 100)
        choice = min((c for c in fitting if (c.ppl or 0.0) <= limit), key=lambda c: c.memory)
        answer.basis, answer.measured_on = "measured", label
        why = _measured_reason(choice, best, label)
    else:
        choice = max(
            fitting,
            key=lambda c: rule_key(c.quant, _bpw(c), c.parameters, c.memory),
        )
        answer.basis = "rules"
        others = [c.quant for c in candidates if not c.fits]
        why = f"{explain_rule(choice.quant, _bpw(choice), others)} Run `gguf-serve compare {family}` to measure."
    answer.model, answer.quant = choice.model, choice.quant
    answer.reason = [
        f"{choice.model} ({choice.quant}) needs {binary_size(choice.memory)} at {context} tokens "
        f"(KV {type_k}/{type_v}); {binary_size(usable)} usable of {binary_size(budget)} "
        f"{budget_source}: {len(fitting)} of {len(candidates)} {family} models fit.",
        why,
    ]
    return answer


def _bpw(candidate: Candidate) -> float:
    return candidate.file_size * 8 / candidate.parameters if candidate.parameters else 0.0


def _measured_reason(choice: Candidate, best: Candidate, label: str) -> str:
    delta = ""
    if choice.delta_pct is not None and choice.kld_mean is not None:
        delta = f" ({choice.delta_pct:+.1f}% vs the reference, KLD {choice.kld_mean:.3f})"
    head = f"Measured ({label}): perplexity {choice.ppl:.2f}{delta}"
    if choice.model == best.model:
        return f"{head}, the lowest of the models that fit."
    return (
        f"{head}, within {TOLERANCE_PCT:.0f}% of the best that fits ({best.model}, "
        f"{best.ppl:.2f}) and smaller."
    )
