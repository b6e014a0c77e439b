"""`gguf-serve compare` and `gguf-serve recommend`: the trade-off table and the advice."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ByteSize, TypeAdapter, ValidationError
from rich.console import Console

from server.cli.common import ConfigDirOption, HomeOption, app, echo_columns, fail, registry_for
from server.cli.insight_options import (
    DEFAULT_CHUNKS,
    DEFAULT_TOP,
    BatchOption,
    ChunksOption,
    DatasetOption,
    FlashOption,
    JSONOption,
    KVOption,
    ReferenceOption,
    RefreshOption,
    TextOption,
    ThreadsOption,
    TopKOption,
    TypeKOption,
    TypeVOption,
    kv_types,
    measurer,
    scoring_options,
)
from server.cli.insight_view import ScoreView
from server.insight.cache import InsightCache
from server.insight.compare import Comparison, cached_speed, compare, expand_names
from server.insight.memory_column import available_memory
from server.insight.plot import PlotX
from server.insight.recommend import binary_size, recommend
from server.registry.humanize import human_bytes, human_number

ContextOption = Annotated[
    int | None,
    typer.Option(
        "--ctx",
        min=1,
        help="Context you will run at (default: setting load.n_ctx).",
        show_default=False,
    ),
]


@app.command(name="compare")
def compare_cmd(
    ctx: typer.Context,
    names: Annotated[
        list[str], typer.Argument(help="Models, or a family name (`smollm2`) for all its tags.")
    ],
    context: ContextOption = None,
    kv_type: KVOption = None,
    type_k: TypeKOption = None,
    type_v: TypeVOption = None,
    flash_attn: FlashOption = "auto",
    text: TextOption = None,
    dataset: DatasetOption = "pydoc",
    window: Annotated[
        int, typer.Option("--window", min=16, help="Scoring window in tokens.")
    ] = 512,
    chunks: ChunksOption = DEFAULT_CHUNKS,
    batch: BatchOption = 2048,
    reference: ReferenceOption = None,
    top_k: TopKOption = DEFAULT_TOP,
    speed: Annotated[
        bool, typer.Option("--speed/--no-speed", help="Measure prompt and decode tokens/s.")
    ] = True,
    speed_prompt: Annotated[
        int, typer.Option("--speed-prompt", min=1, help="Prompt tokens for the speed test.")
    ] = 512,
    speed_gen: Annotated[
        int, typer.Option("--speed-gen", min=1, help="Generated tokens for the speed test.")
    ] = 128,
    threads: ThreadsOption = 0,
    refresh: RefreshOption = False,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Draw the trade-off to this PNG file.", show_default=False),
    ] = None,
    plot_x: Annotated[
        PlotX, typer.Option("--plot-x", help="Plot against memory or file size.")
    ] = "memory",
    as_json: JSONOption = False,
    config_dir: ConfigDirOption = None,
    home: HomeOption = None,
) -> None:
    """One row per model: size, memory, perplexity, KL divergence and speed, side by side.

    Also bits per weight, Δ perplexity vs the reference and same-top-token %; the memory is at
    your context and KV type, the speed measured here. Figures are cached."""
    registry = registry_for(ctx, home, config_dir)
    settings = registry.settings
    run_ctx = context or settings.load.n_ctx
    options = scoring_options(window, batch, kv_types(kv_type, type_k, type_v), flash_attn, threads)
    models = expand_names(registry, names)
    console = Console(stderr=True)
    with ScoreView(console) as view:
        measure = measurer(
            registry,
            settings,
            text=text,
            dataset=dataset,
            options=options,
            chunks=chunks,
            top_k=top_k,
            refresh=refresh,
            progress=view.update,
        )
        speed_fn = None
        if speed:
            speed_fn = cached_speed(
                InsightCache(settings.cache_dir / "insight"),
                options,
                n_prompt=speed_prompt,
                n_gen=speed_gen,
                refresh=refresh,
                before=lambda name: console.print(
                    f"measuring the speed of {name}", highlight=False
                ),
            )
        try:
            table = compare(measure, models, context=run_ctx, reference=reference, speed=speed_fn)
        except KeyboardInterrupt:
            view.__exit__()
            fail(view.interrupted(), 130)
    if plot is not None:
        from server.insight.plot import plot_tradeoff

        plot_tradeoff(table, plot, x=plot_x)
    if as_json:
        typer.echo(table.model_dump_json(indent=2))
    else:
        _print_table(table)
    if plot is not None:
        typer.echo(f"plot written to {plot}", err=True)


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _print_table(table: Comparison) -> None:
    typer.echo(
        f"{table.text.name}: {table.chunks} windows of {table.window} tokens; memory at "
        f"{table.context} tokens, KV {table.type_k}/{table.type_v}; * = Pareto front"
    )
    rows = [
        [
            "",
            "MODEL",
            "QUANT",
            "SIZE",
            "BPW",
            "PARAMS",
            "MEMORY",
            "PPL",
            "Δ PPL",
            "KLD",
            "KLD 99%",
            "SAME TOP",
            "PP t/s",
            "TG t/s",
        ]
    ]
    for r in table.rows:
        rows.append(
            [
                "*" if r.pareto else "",
                r.model,
                r.quant,
                human_bytes(r.file_size),
                f"{r.bits_per_weight:.2f}",
                human_number(r.parameters),
                binary_size(r.memory),
                f"{r.ppl:.3f} ± {r.ppl_error:.3f}",
                "ref" if r.is_reference else f"{r.delta_pct:+.2f}%",
                "ref" if r.is_reference else f"{r.kld_mean:.4f}",
                "ref" if r.is_reference else f"{r.kld_p99:.3f}",
                "ref" if r.is_reference else f"{r.same_top_pct:.1f}%",
                _num(r.prompt_tps, 0),
                _num(r.decode_tps, 1),
            ]
        )
    echo_columns(rows)


def parse_memory(text: str) -> int:
    """`8GiB`, `512MiB`, `8 GB`, `1500000000` -> bytes. Raises typer.BadParameter."""
    try:
        value = int(TypeAdapter(ByteSize).validate_python(text))
    except ValidationError:
        raise typer.BadParameter(f"{text!r} is not a size (e.g. 8GiB, 512MiB, 16GB)") from None
    if value <= 0:
        raise typer.BadParameter("the memory budget must be positive")
    return value


@app.command(name="recommend")
def recommend_cmd(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="A model or a family, e.g. smollm2.")],
    memory: Annotated[
        str | None,
        typer.Option(
            "--memory",
            help="Memory budget, e.g. 8GiB (default: available RAM).",
            show_default=False,
        ),
    ] = None,
    context: ContextOption = None,
    kv_type: KVOption = None,
    type_k: TypeKOption = None,
    type_v: TypeVOption = None,
    as_json: JSONOption = False,
    config_dir: ConfigDirOption = None,
    home: HomeOption = None,
) -> None:
    """The best quant of a family that fits the memory, and why, in two lines.

    From measured figures when `compare` has run, from rules of thumb otherwise."""
    registry = registry_for(ctx, home, config_dir)
    settings = registry.settings
    budget = parse_memory(memory) if memory is not None else available_memory()
    if budget is None:
        fail("cannot tell how much memory this machine has free; pass --memory", 2)
    kv = kv_types(kv_type, type_k, type_v)
    answer = recommend(
        registry,
        InsightCache(settings.cache_dir / "insight"),
        name,
        budget=budget,
        budget_source="given" if memory is not None else "detected",
        context=context or settings.load.n_ctx,
        type_k=kv[0],
        type_v=kv[1],
    )
    if as_json:
        typer.echo(answer.model_dump_json(indent=2))
    else:
        if answer.model is not None:
            typer.echo(answer.model)
        for line in answer.reason:
            typer.echo(f"  {line}")
    if answer.model is None:
        raise typer.Exit(1)
