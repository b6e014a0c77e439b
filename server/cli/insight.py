"""Quantization insight commands: quantize (llama_cpp is imported only when one runs)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from server.cli.common import ConfigDirOption, HomeOption, PullView, app, registry_for
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
