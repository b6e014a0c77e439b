"""The `gguf-serve` command: serve, pull, list, show, rm, cp, import, quantize.

Settings come only from `load_settings(**flags)`. An invalid setting ends the command with one
line and exit status 2, any other error of ours with one line and status 1: no tracebacks for
things a user can fix. The server (FastAPI, llama_cpp) is imported only by `serve` and llama_cpp
by `quantize`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from server.errors import GGUFServeError
from server.registry import GGUFInfo, ModelRecord, PullProgress, Registry
from server.registry.humanize import human_age, human_bytes
from server.settings import Settings, SettingsError, load_settings

app = typer.Typer(
    name="gguf-serve",
    help="A local inference server for GGUF models, with OpenAI- and Ollama-compatible APIs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

HomeOption = Annotated[
    Path | None,
    typer.Option("--home", help="Model store directory (setting `home`).", show_default=False),
]
ConfigDirOption = Annotated[
    Path | None,
    typer.Option(
        "--config-dir", help="Directory of server.yaml and models.yaml.", show_default=False
    ),
]
_TEMPLATE_LINES = 6


@dataclass(frozen=True)
class _Globals:
    home: Path | None = None
    config_dir: Path | None = None


@app.callback()
def _root(ctx: typer.Context, home: HomeOption = None, config_dir: ConfigDirOption = None) -> None:
    """A local inference server for GGUF models, with OpenAI- and Ollama-compatible APIs."""
    ctx.obj = _Globals(home, config_dir)


def _settings(
    ctx: typer.Context, home: Path | None, config_dir: Path | None, **overrides: Any
) -> Settings:
    """Settings from files, environment and these flags (a command's flags beat global ones)."""
    given = ctx.obj if isinstance(ctx.obj, _Globals) else _Globals()
    return load_settings(
        home=home or given.home, config_dir=config_dir or given.config_dir, **overrides
    )


def _registry(ctx: typer.Context, home: Path | None, config_dir: Path | None) -> Registry:
    """The registry for a store command; its logs show only warnings unless log_level is debug."""
    settings = _settings(ctx, home, config_dir)
    level = logging.DEBUG if settings.log_level == "debug" else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    return Registry(settings)


# --- serve --------------------------------------------------------------------------------------


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
    config_dir: ConfigDirOption = None,
    home: HomeOption = None,
) -> None:
    """Run the HTTP server."""
    flags: dict[str, Any] = {"host": host, "port": port, "default_model": model}
    settings = _settings(ctx, home, config_dir, **flags)
    if parallel is not None:
        # An init kwarg replaces the nested `load` wholesale, so pass the full merged dict.
        load = {**settings.load.model_dump(), "n_parallel": parallel}
        settings = _settings(ctx, home, config_dir, **flags, load=load)
    from server.app import run_server  # here, so store commands never import FastAPI/llama_cpp

    run_server(settings)


# --- registry commands --------------------------------------------------------------------------


@app.command()
def pull(
    ctx: typer.Context,
    tag: Annotated[
        str,
        typer.Argument(
            help="Model name (smollm2:135m, llama3.1:8b, hf.co/user/repo:Q4_K_M) "
            "or an https URL of a .gguf file."
        ),
    ],
    as_name: Annotated[
        str | None,
        typer.Option(
            "--as", help="Store under this name (required for a URL).", show_default=False
        ),
    ] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Allow plain http to hosts that are not loopback.")
    ] = False,
    digest: Annotated[
        str | None,
        typer.Option("--digest", help="sha256:<hex> a URL download must have.", show_default=False),
    ] = None,
    config_dir: ConfigDirOption = None,
    home: HomeOption = None,
) -> None:
    """Download a model into the store (Ollama registry, Hugging Face, a URL, the catalog)."""
    registry = _registry(ctx, home, config_dir)
    console = Console(stderr=True)
    with _PullView(console) as view:
        record = registry.pull(tag, view.update, as_name=as_name, insecure=insecure, digest=digest)
    typer.echo(f"pulled {record.name} ({record.short_id}, {human_bytes(record.size)})")


@app.command("list")
def list_(ctx: typer.Context, config_dir: ConfigDirOption = None, home: HomeOption = None) -> None:
    """List the models in the store (and in Ollama's store, marked `ollama`)."""
    registry = _registry(ctx, home, config_dir)
    records = registry.list()
    rows = [["NAME", "ID", "SIZE", "QUANT", "PARAMS", "MODIFIED"]]
    rows += [
        [
            record.name.display,
            record.short_id,
            human_bytes(record.size),
            record.config.file_type or "-",
            record.config.model_type or "-",
            human_age(record.modified_at),
        ]
        for record in records
    ]
    if any(record.from_ollama for record in records):  # the column only when it says something
        rows[0].append("FROM")
        for row, record in zip(rows[1:], records, strict=True):
            row.append("ollama" if record.from_ollama else "")
    _echo_columns(rows)


@app.command()
def show(
    ctx: typer.Context,
    tag: Annotated[str, typer.Argument(help="Model name.")],
    template: Annotated[
        bool, typer.Option("--template", help="Print the whole chat template.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print every header fact as JSON.")
    ] = False,
    config_dir: ConfigDirOption = None,
    home: HomeOption = None,
) -> None:
    """Show what a model's GGUF header says."""
    registry = _registry(ctx, home, config_dir)
    resolved = registry.resolve(tag)
    info = resolved.info
    if as_json:
        typer.echo(info.model_dump_json(indent=2))
        return
    if template:
        typer.echo(info.chat_template or "")
        return
    record = registry.record(resolved.model_name)
    typer.echo("\n".join(_describe(record, info)))


@app.command()
def rm(
    ctx: typer.Context,
    tags: Annotated[list[str], typer.Argument(help="Model names.")],
    config_dir: ConfigDirOption = None,
    home: HomeOption = None,
) -> None:
    """Remove models; their blobs go when no other model uses them."""
    registry = _registry(ctx, home, config_dir)
    for tag in tags:
        typer.echo(f"deleted '{registry.remove(tag)}'")


@app.command()
def cp(
    ctx: typer.Context,
    src: Annotated[str, typer.Argument(help="Existing model name.")],
    dst: Annotated[str, typer.Argument(help="New name.")],
    config_dir: ConfigDirOption = None,
    home: HomeOption = None,
) -> None:
    """Give a model another name (no bytes are copied)."""
    registry = _registry(ctx, home, config_dir)
    record = registry.copy(src, dst)
    typer.echo(f"copied '{src}' to '{record.name}'")


@app.command("import")
def import_(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="A local .gguf file.")],
    tag: Annotated[str, typer.Argument(help="Name to store it under.")],
    config_dir: ConfigDirOption = None,
    home: HomeOption = None,
) -> None:
    """Copy a local GGUF file into the store under a name."""
    registry = _registry(ctx, home, config_dir)
    record = registry.import_file(path, tag)
    typer.echo(f"imported {path} as {record.name} ({record.short_id}, {human_bytes(record.size)})")


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
    registry = _registry(ctx, home, config_dir)
    from server.engine.quantize import LlamaQuantizer  # loads llama_cpp: only for this command

    console = Console(stderr=True)
    with _PullView(console, unit="tensors") as view:
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


# --- output helpers -----------------------------------------------------------------------------


class _PullView:
    """Progress on stderr: one line per step, a bar for each download (or tensor count)."""

    def __init__(self, console: Console, *, unit: str = "bytes") -> None:
        columns = (
            (DownloadColumn(), TransferSpeedColumn())
            if unit == "bytes"
            else (MofNCompleteColumn(), TextColumn(unit))
        )
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            *columns,
            TimeRemainingColumn(),
            console=console,
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> _PullView:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._tasks:
            self._progress.stop()

    def update(self, event: PullProgress) -> None:
        if event.completed is None and event.total is None:  # a step, not a transfer
            self._progress.console.print(event.status, highlight=False)
            return
        task = self._tasks.get(event.status)
        if task is None:
            if not self._tasks:
                self._progress.start()  # started late, so a failed pull leaves no empty bar
            task = self._tasks[event.status] = self._progress.add_task(
                event.status, total=event.total
            )
        self._progress.update(task, completed=event.completed or 0, total=event.total)


def _echo_columns(rows: Sequence[Sequence[str]]) -> None:
    """Left-aligned columns separated by three spaces, like `ollama list` (tabwriter)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        typer.echo("   ".join(cells).rstrip())


def _describe(record: ModelRecord, info: GGUFInfo) -> list[str]:
    """The `show` report: model facts, tensor types, a chat template excerpt."""

    def opt(value: object) -> str:
        return "-" if value is None else str(value)

    quant = info.quant if info.file_type is None else f"{info.quant} (file type {info.file_type})"
    facts = [
        ("name", record.name.display),
        ("ID", record.short_id),
        ("architecture", info.architecture),
        ("parameters", f"{info.parameter_size} ({info.parameter_count:,})"),
        ("quantization", quant),
        ("bits per weight", f"{info.bits_per_weight:.2f}"),
        ("context length", opt(info.context_length)),
        ("layers", opt(info.block_count)),
        ("heads", opt(info.head_count)),
        ("KV heads", opt(info.head_count_kv)),
        ("embedding length", opt(info.embedding_length)),
        ("size", human_bytes(record.size)),
    ]
    facts += [("source", _source_text(record))]
    lines = ["  Model"]
    lines += [f"    {key:<20}{value}" for key, value in facts]
    lines += ["", "  Tensor types"]
    lines += [f"    {kind:<20}{count}" for kind, count in info.tensor_types.items()]
    lines += ["", "  Chat template"]
    if info.chat_template is None:
        lines.append("    (none)")
    else:
        template_lines = info.chat_template.splitlines() or [""]
        for line in template_lines[:_TEMPLATE_LINES]:
            lines.append("    " + (line if len(line) <= 96 else line[:95] + "…"))
        if len(template_lines) > _TEMPLATE_LINES:
            lines.append(f"    … ({len(template_lines)} lines; --template prints it all)")
    return lines


def _source_text(record: ModelRecord) -> str:
    if record.from_ollama:
        return f"ollama store {record.manifest_path.parents[4]} (read-only)"
    facts = record.config.gguf_serve
    if facts is None or facts.source is None:
        return "-"
    extra = facts.source.model_extra or {}
    details = " ".join(f"{key}={value}" for key, value in extra.items() if key != "sha256")
    return f"{facts.source.type} {details}".strip()


# --- entry point --------------------------------------------------------------------------------


def _fail(message: str, status: int) -> NoReturn:
    typer.echo(f"gguf-serve: {' '.join(message.split())}", err=True)
    sys.exit(status)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry: run the command, turning our errors into one line and a status."""
    try:
        app(args=argv, prog_name="gguf-serve")
    except SettingsError as exc:
        _fail(str(exc), 2)
    except GGUFServeError as exc:
        _fail(f"error: {exc.message}", 1)
    except OSError as exc:
        _fail(f"error: {exc}", 1)
