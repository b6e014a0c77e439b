"""What every `gguf-serve` command shares: the Typer app, global options, settings, output.

Settings come only from `load_settings(**flags)`. An invalid setting ends a command with one
line and exit status 2, any other error of ours with one line and status 1: no tracebacks for
things a user can fix.
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

from server.registry import PullProgress, Registry
from server.settings import Settings, load_settings

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


@dataclass(frozen=True)
class _Globals:
    home: Path | None = None
    config_dir: Path | None = None


@app.callback()
def _root(ctx: typer.Context, home: HomeOption = None, config_dir: ConfigDirOption = None) -> None:
    """A local inference server for GGUF models, with OpenAI- and Ollama-compatible APIs."""
    ctx.obj = _Globals(home, config_dir)


def settings_for(
    ctx: typer.Context, home: Path | None, config_dir: Path | None, **overrides: Any
) -> Settings:
    """Settings from files, environment and these flags (a command's flags beat global ones)."""
    given = ctx.obj if isinstance(ctx.obj, _Globals) else _Globals()
    return load_settings(
        home=home or given.home, config_dir=config_dir or given.config_dir, **overrides
    )


def registry_for(ctx: typer.Context, home: Path | None, config_dir: Path | None) -> Registry:
    """The registry for a store command; its logs show only warnings unless log_level is debug."""
    settings = settings_for(ctx, home, config_dir)
    level = logging.DEBUG if settings.log_level == "debug" else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    return Registry(settings)


class PullView:
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

    def __enter__(self) -> PullView:
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


def echo_columns(rows: Sequence[Sequence[str]]) -> None:
    """Left-aligned columns separated by three spaces, like `ollama list` (tabwriter)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        typer.echo("   ".join(cells).rstrip())


def fail(message: str, status: int) -> NoReturn:
    typer.echo(f"gguf-serve: {' '.join(message.split())}", err=True)
    sys.exit(status)
