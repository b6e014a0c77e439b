"""`compare`: one row per model with size, memory, loss and speed, and the Pareto front.

Rows reuse every cached figure: after one `compare`, `recommend` and a repeated `compare` read
the cache. Speed is measured here and now (cached too, with the time it was measured), and
depends on what else the machine is doing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from pydantic import BaseModel, Field

from server.engine.measure_types import ScoringOptions, SpeedResult
from server.errors import GGUFServeError, ModelNotFound
from server.insight.cache import InsightCache, cache_key
from server.insight.family import family_members
from server.insight.measure import AUTO, Measurer
from server.insight.memory_column import memory_at_context
from server.insight.results import PerplexityResult, TextInfo
from server.registry import Registry, ResolvedModel, parse_name

logger = logging.getLogger(__name__)


SpeedFn = Callable[[ResolvedModel, str], SpeedResult]  # (model, file digest) -> figures


class CompareRow(BaseModel):
    """One model in the comparison."""

    model: str
    quant: str
    file_size: int = Field(description="Bytes of the GGUF file.")
    bits_per_weight: float
    parameters: int
    memory: int = Field(description="Bytes to run at the chosen context and KV types.")
    ppl: float
    ppl_error: float
    reference: str = Field(description="The model KLD and Δ are measured against.")
    is_reference: bool
    delta_pct: float = Field(description="Perplexity change vs the reference, in percent.")
    delta_error_pct: float
    kld_mean: float
    kld_p99: float
    same_top_pct: float
    prompt_tps: float | None = Field(None, description="None with --no-speed.")
    decode_tps: float | None = None
    pareto: bool = Field(False, description="No other row is both smaller and better.")


class Comparison(BaseModel):
    """The table `compare` prints, and what `--json` writes."""

    text: TextInfo
    window: int
    chunks: int
    context: int
    type_k: str
    type_v: str
    rows: list[CompareRow]


def expand_names(registry: Registry, names: Sequence[str]) -> list[ResolvedModel]:
    """Each name as a stored model, or a family name (`smollm2`) as all of its models.

    Raises InvalidName, ModelNotFound.
    """
    out: dict[str, ResolvedModel] = {}
    for name in names:
        if registry.find(parse_name(name)) is not None:
            found = [registry.resolve(name)]
        else:
            found = family_members(registry, name)
        for model in found:
            out.setdefault(model.model_name.full, model)
    if not out:
        raise ModelNotFound("no models to compare")
    return list(out.values())


def pareto_front(points: Sequence[tuple[float, float]]) -> list[bool]:
    """For (cost, loss) points: True where no other point is no worse on both and better on one."""
    flags = []
    for i, (cost, loss) in enumerate(points):
        dominated = any(
            c <= cost and lo <= loss and (c < cost or lo < loss)
            for j, (c, lo) in enumerate(points)
            if j != i
        )
        flags.append(not dominated)
    return flags


def build_row(
    model: ResolvedModel,
    result: PerplexityResult,
    memory: int,
    speed: SpeedResult | None,
) -> CompareRow:
    kld = result.kld
    return CompareRow(
        model=model.name,
        quant=model.info.quant,
        file_size=model.info.size_bytes,
        bits_per_weight=model.info.bits_per_weight,
        parameters=model.info.parameter_count,
        memory=memory,
        ppl=result.ppl,
        ppl_error=result.ppl_error,
        reference=kld.reference if kld is not None else model.name,
        is_reference=kld is None,
        delta_pct=kld.delta_pct if kld is not None else 0.0,
        delta_error_pct=100 * kld.ppl_ratio_error if kld is not None else 0.0,
        kld_mean=kld.mean if kld is not None else 0.0,
        kld_p99=kld.p99 if kld is not None else 0.0,
        same_top_pct=kld.same_top_pct if kld is not None else 100.0,
        prompt_tps=speed.prompt_tps if speed is not None else None,
        decode_tps=speed.decode_tps if speed is not None else None,
    )


def compare(
    measurer: Measurer,
    models: Sequence[ResolvedModel],
    *,
    context: int,
    reference: str | None,
    speed: SpeedFn | None,
) -> Comparison:
    """Measure (or read) every model and build the table, most precise first.

    Raises what Measurer.perplexity raises.
    """
    registry = measurer.registry
    options = measurer.options
    ref_digest = registry.record(reference).model_digest if reference else None
    rows = []
    for model in models:
        digest = registry.record(model.model_name.full).model_digest
        ref = None if digest == ref_digest else (reference or AUTO)
        result = measurer.perplexity(model.model_name.full, ref)
        memory = memory_at_context(model.info, context, options.type_k, options.type_v)
        figures = None
        if speed is not None:
            try:
                figures = speed(model, digest)
            except GGUFServeError as exc:
                logger.warning("could not measure the speed of %s: %s", model.name, exc.message)
        rows.append(build_row(model, result, memory, figures))
    rows.sort(key=lambda r: (-r.bits_per_weight, r.model))
    front = pareto_front([(row.memory, row.ppl) for row in rows])
    for row, on_front in zip(rows, front, strict=True):
        row.pareto = on_front
    first = result  # every row used the same text and window
    return Comparison(
        text=first.text,
        window=options.n_ctx,
        chunks=first.chunks,
        context=context,
        type_k=options.type_k,
        type_v=options.type_v,
        rows=rows,
    )


def cached_speed(
    cache: InsightCache,
    options: ScoringOptions,
    *,
    n_prompt: int,
    n_gen: int,
    refresh: bool,
    before: Callable[[str], None] = lambda _: None,
) -> SpeedFn:
    """A SpeedFn that measures with engine.speed (loaded on first use) and caches the figures;
    `before(name)` is called before a measurement (for a progress line)."""

    def speed(model: ResolvedModel, digest: str) -> SpeedResult:
        key = cache_key(
            kind="speed",
            model=digest,
            n_prompt=n_prompt,
            n_gen=n_gen,
            threads=options.n_threads,
            type_k=options.type_k,
            type_v=options.type_v,
            flash_attn=options.flash_attn,
        )
        cached = None if refresh else cache.load_model("speed", key, SpeedResult)
        if cached is not None:
            return cached.model_copy(update={"cached": True})
        from server.engine.loader import ModelFacts
        from server.engine.speed import measure_speed

        before(model.name)
        info = model.info
        result = measure_speed(
            model.path,
            ModelFacts(info.context_length or 0, info.block_count or 0),
            n_prompt=n_prompt,
            n_gen=n_gen,
            n_threads=options.n_threads,
            type_k=options.type_k,
            type_v=options.type_v,
            flash_attn=options.flash_attn,
        )
        cache.save_model("speed", key, result)
        return result

    return speed
