"""The texts perplexity is measured on: a user's file, or one that ships with Python itself."""

from __future__ import annotations

import hashlib
import platform
from dataclasses import dataclass
from pathlib import Path

from server.errors import InvalidRequest

DATASETS = ("pydoc",)
DEFAULT_DATASET = "pydoc"


@dataclass(frozen=True)
class Text:
    """A text to score, its display name and the digest that keys every cached result."""

    name: str
    content: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content.encode("utf-8")).hexdigest()


def _normalise(content: str) -> str:
    """Drop one trailing newline, as llama.cpp's `-f FILE` does, so both tools see one string."""
    return content[:-1] if content.endswith("\n") else content


def pydoc_text() -> Text:
    """CPython's `pydoc_data.topics` (the `help()` pages): every topic, sorted, blank-line joined.

    It ships with Python, so it is there offline; it changes between Python versions, and its
    digest (part of every cache key) tells them apart.
    """
    from pydoc_data.topics import topics

    content = "\n\n".join(topics[key] for key in sorted(topics))
    return Text(f"pydoc (Python {platform.python_version()})", _normalise(content))


def load_text(path: Path | None = None, dataset: str | None = None) -> Text:
    """The file at `path`, else the named dataset (default pydoc).

    Raises InvalidRequest for an unreadable or non-UTF-8 file, an empty one, or an unknown dataset.
    """
    if path is not None:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise InvalidRequest(f"cannot read {path}: {exc.strerror or exc}") from exc
        try:
            content = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRequest(
                f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})"
            ) from None
        if not content.strip():
            raise InvalidRequest(f"{path} is empty")
        return Text(path.name, _normalise(content))
    name = dataset or DEFAULT_DATASET
    if name != "pydoc":
        raise InvalidRequest(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return pydoc_text()
