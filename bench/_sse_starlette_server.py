"""gguf-serve with its /v1 streams sent by sse-starlette's EventSourceResponse instead of our own
EventStreamResponse (keep-alive pings, disconnect detection and its shutdown drain all on), for
bench/sse_vs_lean.py. Same arguments as `python -m server`."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

from sse_starlette import EventSourceResponse

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import server.api.openai.routes as routes
from server.cli import main


class _SSEStarlette(EventSourceResponse):
    """EventSourceResponse with our EventStreamResponse's signature (a class: FastAPI reads the
    route's return annotation, which names it)."""

    def __init__(
        self, payloads: AsyncIterator[str], status_code: int = 200, *, ping_seconds: float = 0
    ) -> None:
        super().__init__(payloads, status_code=status_code, ping=ping_seconds or None, sep="\n")


routes.EventStreamResponse = _SSEStarlette  # type: ignore[misc]
main()
