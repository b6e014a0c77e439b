"""Quantization insight commands: quantize and perplexity (llama_cpp is imported only when one
runs; compare and recommend are in `cli.compare`)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from server.cli.common import ConfigDirOption, HomeOption, PullView, app, fail, registry_for
from server.cli.insight_options import (
    DEFAULT_CHUNKS,
    DEFAULT_TOP,
    BatchOption,
    ChunksOption,
    DatasetOption,
    FlashOption,
    JSONOption,
    KVOption,
    NoKLDOption,
    ReferenceOption,
    RefreshOption,
    TextOption,
    ThreadsOption,
    TopKOption,
    TypeKOption,
    TypeVOption,
    WindowOption,
    kv_types,
    measurer,
    scoring_options,
)
from server.cli.insight_view import ScoreView, perplexity_lines
from server.insight.measure import AUTO
from server.registry.humanize import human_bytes


@app.command()
def quantize(
    ctx: typer.Context,
    src: Annotated[str, typer.Argument(help="Model to quantize, e.g. smollm2:135m-f16.")],
    quant: Annotated[
        str, typer.Argument(help="Target type: q8_0 q6_K q5_K_M q5_0 q4_K_M q4_K_S q4_0 f16 ...")
    ],
    as_name: Annotated[
        str | None,
        typer.Option(
            "--as",
            help="Name of the new model (default: SRC's tag with QUANT).",
            show_default=False,
        ),
    ] = None,
    allow_requantize: Annotated[
        bool,
        typer.Option(
            "--allow-requantize", help="Quantize a source that is already quantized (lossy)."
        ),
    ] = False,
    threads: Annotated[
        int, typer.Option("--threads", min=0, help="CPU threads; 0 = all cores.")
    ] = 0,
    config_dir: ConfigDirOption = None,
    home: HomeOption = None,
) -> None:
    """Store a model re-quantized with llama.cpp under a new tag that records its source."""
    registry = registry_for(ctx, home, config_dir)
    from server.engine.quantize import LlamaQuantizer  # loads llama_cpp: only for this command

    console = Console(stderr=True)
    with PullView(console, unit="tensors") as view:
        record = registry.quantize(
            src,
            quant,
            LlamaQuantizer(threads),
            as_name=as_name,
            allow_requantize=allow_requantize,
            progress=view.update,
        )
    typer.echo(
        f"quantized {src} to {record.config.file_type} as {record.name} "
        f"({record.short_id}, {human_bytes(record.size)})"
    )


@app.command()
def perplexity(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Model to measure, e.g. smollm2:135m-q4_K_M.")],
    text: TextOption = None,
    dataset: DatasetOption = "pydoc",
    window: WindowOption = 512,
    chunks: ChunksOption = DEFAULT_CHUNKS,
    batch: BatchOption = 2048,
    kv_type: KVOption = None,
    type_k: TypeKOption = None,
    type_v: TypeVOption = None,
    flash_attn: FlashOption = "auto",
    reference: ReferenceOption = None,
    no_kld: NoKLDOption = False,
    top_k: TopKOption = DEFAULT_TOP,
    threads: ThreadsOption = 0,
    refresh: RefreshOption = False,
    as_json: JSONOption = False,
    config_dir: ConfigDirOption = None,
    home: HomeOption = None,
) -> None:
    """Perplexity ± error, as llama.cpp computes it, and KL divergence against a reference.

    The reference is the family's highest-precision model. Cached: repeating a command is
    instant."""
    registry = registry_for(ctx, home, config_dir)
    options = scoring_options(window, batch, kv_types(kv_type, type_k, type_v), flash_attn, threads)
    with ScoreView(Console(stderr=True)) as view:
        measure = measurer(
            registry,
            registry.settings,
            text=text,
            dataset=dataset,
            options=options,
            chunks=chunks,
            top_k=top_k,
            refresh=refresh,
            progress=view.update,
        )
        try:
            result = measure.perplexity(name, None if no_kld else reference or AUTO)
        except KeyboardInterrupt:
            view.__exit__()
            fail(view.interrupted(), 130)
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    for line in perplexity_lines(result):
        typer.echo(line)
