"""`gguf-serve serve`: run the HTTP server (FastAPI and llama_cpp are imported only here)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from server.cli.common import ConfigDirOption, HomeOption, app, settings_for


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port to listen on.")] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Default model tag (setting `default_model`).")
    ] = None,
    parallel: Annotated[
        int | None, typer.Option(help="Parallel slots per model (setting `load.n_parallel`).")
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            help="API key(s) clients must send, comma-separated (setting `api_keys`).",
            show_default=False,
        ),
    ] = None,
    api_key_file: Annotated[
        Path | None,
        typer.Option(
            help="File of API keys, one per line (setting `api_key_file`).", show_default=False
        ),
    ] = None,
    config_dir: ConfigDirOption = None,
    home: HomeOption = None,
) -> None:
    """Run the HTTP server."""
    flags: dict[str, Any] = {
        "host": host,
        "port": port,
        "default_model": model,
        "api_keys": api_key,
        "api_key_file": api_key_file,
    }
    settings = settings_for(ctx, home, config_dir, **flags)
    if parallel is not None:
        # An init kwarg replaces the nested `load` wholesale, so pass the full merged dict.
        load = {**settings.load.model_dump(), "n_parallel": parallel}
        settings = settings_for(ctx, home, config_dir, **flags, load=load)
    from server.app import run_server  # here, so store commands never import FastAPI/llama_cpp

    run_server(settings)
