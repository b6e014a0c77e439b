"""Options shared by `perplexity` and `compare`, and the objects they build from them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from pydantic import ValidationError

from server.engine.measure_types import ScoringOptions
from server.engine.options import CacheType, FlashAttn
from server.insight.cache import InsightCache
from server.insight.measure import DEFAULT_TOP_K, Measurer, ProgressFn
from server.insight.texts import load_text
from server.registry import Registry
from server.settings import Settings
from server.validation import describe

TextOption = Annotated[
    Path | None,
    typer.Option(
        "--text", help="Score this UTF-8 text file instead of a dataset.", show_default=False
    ),
]
DatasetOption = Annotated[
    Literal["pydoc"],
    typer.Option("--dataset", help="Built-in text: CPython's pydoc_data.topics."),
]
WindowOption = Annotated[
    int, typer.Option("--ctx", min=16, help="Scoring window in tokens (llama.cpp's -c).")
]
ChunksOption = Annotated[
    int, typer.Option("--chunks", min=0, help="Windows to score; 0 = the whole text.")
]
BatchOption = Annotated[
    int,
    typer.Option("--batch", min=16, help="Tokens per decode: batch/ctx windows run together."),
]
KVOption = Annotated[
    CacheType | None,
    typer.Option("--kv-type", help="KV cache type for K and V.", show_default=False),
]
TypeKOption = Annotated[
    CacheType | None,
    typer.Option("--type-k", help="KV cache type for K.", show_default=False),
]
TypeVOption = Annotated[
    CacheType | None,
    typer.Option("--type-v", help="KV cache type for V.", show_default=False),
]
FlashOption = Annotated[FlashAttn, typer.Option("--flash-attn", help="Flash attention.")]
ReferenceOption = Annotated[
    str | None,
    typer.Option(
        "--reference",
        help="Reference for KL divergence (default: the highest-precision model of the family).",
        show_default=False,
    ),
]
NoKLDOption = Annotated[
    bool, typer.Option("--no-kld", help="Perplexity only: no reference, no KL divergence.")
]
TopKOption = Annotated[
    int, typer.Option("--top-k", min=1, help="Reference log-probabilities kept per position.")
]
ThreadsOption = Annotated[int, typer.Option("--threads", min=0, help="CPU threads; 0 = all cores.")]
RefreshOption = Annotated[
    bool, typer.Option("--refresh", help="Measure again instead of reading the cache.")
]
JSONOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

DEFAULT_CHUNKS = 16
DEFAULT_TOP = DEFAULT_TOP_K


def kv_types(kv_type: str | None, type_k: str | None, type_v: str | None) -> tuple[str, str]:
    """(type_k, type_v): `--type-k/--type-v` beat `--kv-type`, which beats f16."""
    return (type_k or kv_type or "f16", type_v or kv_type or "f16")


def scoring_options(
    window: int, batch: int, kv: tuple[str, str], flash_attn: str, threads: int
) -> ScoringOptions:
    """Raises typer.BadParameter naming the option at fault."""
    try:
        return ScoringOptions.model_validate(
            {
                "n_ctx": window,
                "n_batch": batch,
                "type_k": kv[0],
                "type_v": kv[1],
                "flash_attn": flash_attn,
                "n_threads": threads,
            }
        )
    except ValidationError as exc:
        raise typer.BadParameter(describe(exc.errors())) from None


def measurer(
    registry: Registry,
    settings: Settings,
    *,
    text: Path | None,
    dataset: str,
    options: ScoringOptions,
    chunks: int,
    top_k: int,
    refresh: bool,
    progress: ProgressFn,
) -> Measurer:
    """A Measurer over the chosen text, caching under the `cache_dir` setting."""
    return Measurer(
        registry,
        InsightCache(settings.cache_dir / "insight"),
        load_text(text, dataset),
        options,
        chunks=chunks,
        top_k=top_k,
        refresh=refresh,
        progress=progress,
    )
