"""Operating commands: plan (memory before loading), ps (what a server has loaded), stop."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Annotated, Any

import typer

from server.cli.common import ConfigDirOption, HomeOption, app, echo_columns, fail, settings_for
from server.cli.plan_view import describe_plan
from server.registry.humanize import binary_bytes, human_until
from server.settings import Settings

GpuLayersOption = Annotated[
    str | None,
    typer.Option(
        "--gpu-layers",
        help="Layers offloaded to the GPU(s) and rpc-servers: auto (as many as fit), -1 (all), "
        "or a count.",
        show_default=False,
    ),
]
HostOption = Annotated[
    str | None,
    typer.Option("--host", help="The server's address (setting `host`).", show_default=False),
]
PortOption = Annotated[
    int | None, typer.Option("--port", help="The server's port (setting `port`).")
]


@app.command()
def plan(
    ctx: typer.Context,
    name: Annotated[
        str,
        typer.Argument(
            help="Model name: in the store, or hf.co/..., a registry name or an https URL "
            "(only the header is read, never the weights)."
        ),
    ],
    n_ctx: Annotated[
        int | None, typer.Option("--ctx", help="Context per slot in tokens (0 = trained length).")
    ] = None,
    parallel: Annotated[int | None, typer.Option("--parallel", help="Slots.")] = None,
    kv_type: Annotated[
        str | None, typer.Option("--kv-type", help="KV cache type for K and V (q8_0, q4_0, f16).")
    ] = None,
    type_k: Annotated[str | None, typer.Option("--type-k", help="KV cache type for K.")] = None,
    type_v: Annotated[str | None, typer.Option("--type-v", help="KV cache type for V.")] = None,
    gpu_layers: GpuLayersOption = None,
    flash_attn: Annotated[
        str | None, typer.Option("--flash-attn", help="on, off or auto.", show_default=False)
    ] = None,
    rpc: Annotated[
        str | None,
        typer.Option(
            "--rpc",
            help="rpc-servers to split the model over, host:port[,host:port] (as llama.cpp's "
            "--rpc; setting load.rpc_servers): their devices are asked for their memory.",
            show_default=False,
        ),
    ] = None,
    tensor_split: Annotated[
        str | None,
        typer.Option(
            "--tensor-split",
            help="Share of the offloaded layers per device, e.g. 1,1 (llama.cpp's order: "
            "rpc-servers first, then GPUs; default: by free memory).",
            show_default=False,
        ),
    ] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Allow plain http to hosts that are not loopback.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
    config_dir: ConfigDirOption = None,
    home: HomeOption = None,
) -> None:
    """How much memory a model takes, per device, before it is loaded or even downloaded."""
    settings = settings_for(ctx, home, config_dir)
    _quiet_logs(settings)
    from server.planning import Planner
    from server.registry import Registry

    overrides: dict[str, Any] = {
        "n_ctx": n_ctx,
        "n_parallel": parallel,
        "type_k": type_k or kv_type,
        "type_v": type_v or kv_type,
        "flash_attn": flash_attn,
        "n_gpu_layers": _gpu_layers(gpu_layers),
        "rpc_servers": rpc,
        "tensor_split": tensor_split and [part.strip() for part in tensor_split.split(",")],
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    planner = Planner(settings, Registry(settings))
    target = planner.target(name, insecure=insecure)
    result = planner.plan(target, planner.options(target, overrides))
    if as_json:
        out = {
            "model": target.name,
            "source": target.source,
            "header_bytes": target.header_bytes,
            "plan": result.model_dump(mode="json"),
        }
        typer.echo(json.dumps(out, indent=2))
        return
    typer.echo("\n".join(describe_plan(target, result)))


@app.command()
def ps(
    ctx: typer.Context,
    host: HostOption = None,
    port: PortOption = None,
    config_dir: ConfigDirOption = None,
    home: HomeOption = None,
) -> None:
    """List the models a running server has loaded, with their memory and expiry."""
    settings = settings_for(ctx, home, config_dir, host=host, port=port)
    body = _call(settings, "GET", "/api/ps")
    rows = [["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "KV", "SLOTS", "UNTIL"]]
    for m in body.get("models", []):
        size, vram = int(m.get("size", 0)), int(m.get("size_vram", 0))
        rows.append(
            [
                m.get("name", "?"),
                str(m.get("digest", ""))[:12],
                binary_bytes(size),
                _processor(size, vram),
                str(m.get("context_length", "")),
                "/".join(str(m.get(k) or "-") for k in ("kv_type_k", "kv_type_v")),
                str(m.get("parallel") or "-"),
                human_until(datetime.fromisoformat(m["expires_at"].replace("Z", "+00:00"))),
            ]
        )
    echo_columns(rows)


@app.command()
def stop(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Model name.")],
    host: HostOption = None,
    port: PortOption = None,
    config_dir: ConfigDirOption = None,
    home: HomeOption = None,
) -> None:
    """Unload a model from a running server (once its requests finish)."""
    settings = settings_for(ctx, home, config_dir, host=host, port=port)
    loaded = [m.get("name") for m in _call(settings, "GET", "/api/ps").get("models", [])]
    if not any(str(n).lower() == name.lower() for n in loaded):
        fail(f"error: {name} is not loaded", 1)
    _call(settings, "POST", "/api/generate", {"model": name, "keep_alive": 0})
    typer.echo(f"stopped {name}")


def _gpu_layers(value: str | None) -> int | str | None:
    if value is None or value.lower() == "auto":
        return value and "auto"
    try:
        return int(value)
    except ValueError:
        fail(f"invalid --gpu-layers {value!r}: use auto, -1 or a count", 2)


def _processor(size: int, vram: int) -> str:
    """`ollama ps`'s PROCESSOR column: 100% CPU, 100% GPU, or the split."""
    if size <= 0 or vram <= 0:
        return "100% CPU"
    if vram >= size:
        return "100% GPU"
    gpu = round(100 * vram / size)
    return f"{100 - gpu}%/{gpu}% CPU/GPU"


def _call(settings: Settings, method: str, path: str, body: Any = None) -> dict[str, Any]:
    """One request to the server at settings.host:port; a failure ends the command."""
    import httpx

    host = settings.host if settings.host not in ("0.0.0.0", "::") else "127.0.0.1"
    url = f"http://{host}:{settings.port}{path}"
    try:
        response = httpx.request(method, url, json=body, timeout=120)
    except httpx.TransportError as exc:
        fail(
            f"error: no gguf-serve server answers at {url}: {exc} (start one with `gguf-serve serve`)",
            1,
        )
    try:
        data = response.json()
    except ValueError:
        data = {}
    if response.status_code >= 400:
        message = data.get("error") if isinstance(data, dict) else None
        if isinstance(message, dict):
            message = message.get("message")
        fail(f"error: {message or f'HTTP {response.status_code}'}", 1)
    return data if isinstance(data, dict) else {}


def _quiet_logs(settings: Settings) -> None:
    level = logging.DEBUG if settings.log_level == "debug" else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
