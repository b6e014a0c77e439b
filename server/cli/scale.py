"""Commands for more than one machine: `rpc-server` (a host lending its memory to a split
model) and `ray` (replicas on a Ray cluster)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from server.cli.common import ConfigDirOption, HomeOption, app, fail, settings_for


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


@app.command("ray")
def ray_command(
    ctx: typer.Context,
    replicas: Annotated[
        str | None, typer.Option(help="Replica count, or 'auto' to autoscale (`ray.replicas`).")
    ] = None,
    router: Annotated[
        str | None, typer.Option(help="affinity | power-of-two (setting `ray.router`).")
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster: 'auto' or ray://HEAD:10001 (`ray.address`).")
    ] = None,
    http_host: Annotated[str | None, typer.Option(help="Ray proxy address.")] = None,
    http_port: Annotated[int | None, typer.Option(help="Ray proxy port.")] = None,
    cpus_per_replica: Annotated[
        float | None, typer.Option(help="CPUs (threads) per replica.")
    ] = None,
    gpus_per_replica: Annotated[float | None, typer.Option(help="GPUs per replica.")] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Default model each replica preloads.")
    ] = None,
    config_dir: ConfigDirOption = None,
    home: HomeOption = None,
) -> None:
    """Serve replicas of gguf-serve on a Ray cluster (needs the `ray` extra)."""
    given = {
        "replicas": int(replicas) if replicas and replicas.isdigit() else replicas,
        "router": router,
        "address": address,
        "http_host": http_host,
        "http_port": http_port,
        "cpus_per_replica": cpus_per_replica,
        "gpus_per_replica": gpus_per_replica,
    }
    settings = settings_for(ctx, home, config_dir, default_model=model)
    ray_opts = {**settings.ray.model_dump(), **{k: v for k, v in given.items() if v is not None}}
    settings = settings_for(ctx, home, config_dir, default_model=model, ray=ray_opts)
    try:
        from server.deploy.ray import run
    except ImportError:
        fail("Ray is not installed: pip install 'gguf-serve[ray]'", 1)
    from server.app import configure_logging

    configure_logging(settings.log_level)
    run(settings)
