"""Crash-safe file writes and the check that a path stays inside the store."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from server.errors import InvalidName

FILE_MODE = 0o644  # mkstemp creates 0600; store files are readable like Ollama's


def fsync_dir(directory: Path) -> None:
    """Flush a directory entry so a rename inside it survives a crash."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so readers see the old file or the whole new one, never a part.

    Temp file in the same directory, fsync, os.replace, fsync the directory. Raises OSError.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix="-partial")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def ensure_within(root: Path, path: Path) -> Path:
    """Return `path` if it resolves to somewhere under `root`.

    Raises InvalidName otherwise: the path was built from a name or digest that escapes the store.
    """
    base = root.resolve()
    resolved = path.resolve()
    if resolved != base and base not in resolved.parents:
        raise InvalidName(f"{path} is outside the model store {root}")
    return path
