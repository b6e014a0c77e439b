"""The `gguf-serve` command, one module per group of subcommands.

`common` holds the Typer app and what the commands share; importing a group module registers its
commands. The server (FastAPI, llama_cpp) is imported only by the commands that need it.
"""

from __future__ import annotations

# Importing a group registers its commands, in this order in `--help`.
from server.cli import serve  # noqa: F401

# isort: split
from server.cli import models  # noqa: F401

# isort: split
from server.cli import run  # noqa: F401

# isort: split
from server.cli import insight  # noqa: F401

# isort: split
from server.cli import ops  # noqa: F401

# isort: split
from server.cli import compare  # noqa: F401

# isort: split
from server.cli import scale  # noqa: F401

# isort: split
from server.cli.common import app, fail
from server.errors import GGUFServeError
from server.settings import SettingsError

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> None:
    """Console-script entry: run the command, turning our errors into one line and a status."""
    try:
        app(args=argv, prog_name="gguf-serve")
    except SettingsError as exc:
        fail(str(exc), 2)
    except GGUFServeError as exc:
        fail(f"error: {exc.message}", 1)
    except OSError as exc:
        fail(f"error: {exc}", 1)
