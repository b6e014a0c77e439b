"""Commands for more than one machine: `rpc-server` (a host lending its memory to a split
model) and `ray` (replicas on a Ray cluster)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from server.cli.common import app


@app.command("rpc-server")
def rpc_server(
    host: Annotated[
        str, typer.Option("--host", "-H", help="Address to bind: loopback or a private one.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", min=1, max=65535)] = 50052,
    threads: Annotated[
        int | None, typer.Option("--threads", "-t", min=1, help="CPU threads (default: half).")
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="Devices to expose, e.g. CUDA0,CUDA1 (default: all GPUs).")
    ] = None,
    cache: Annotated[
        bool, typer.Option("--cache", help="Keep received tensors in a local file cache.")
    ] = False,
    binary: Annotated[
        Path | None, typer.Option(help="The rpc-server binary (default: PATH, then the clone).")
    ] = None,
    allow_public_bind: Annotated[
        bool,
        typer.Option(
            "--allow-public-bind",
            help="Bind to a public or any-address interface although rpc-server has no "
            "authentication (only behind a firewall that limits who reaches it).",
        ),
    ] = False,
) -> None:
    """Run llama.cpp's rpc-server so another host's gguf-serve can put layers here.

    Pair it with `load.rpc_servers: ["THIS_HOST:PORT"]` on the serving host.
    """
    from server.deploy.rpc_server import check_bind, command, find_binary

    check_bind(host, allow_public=allow_public_bind)
    argv = command(find_binary(binary), host, port, threads=threads, devices=device, cache=cache)
    os.execv(argv[0], argv)  # the server is the process: signals and exit status are its own
