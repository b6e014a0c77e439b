"""Newline-delimited JSON streaming, Ollama's framing: one JSON object per line."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from pydantic import BaseModel
from starlette.responses import StreamingResponse

NDJSON = "application/x-ndjson"
_MARK = "\x00"
_MARK_JSON = json.dumps(_MARK)


def timestamp() -> str:
    """RFC 3339 in UTC with a Z, as Ollama writes `created_at`."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


async def _lines(objects: AsyncIterator[str]) -> AsyncIterator[bytes]:
    async for text in objects:
        yield (text + "\n").encode()


class NDJSONResponse(StreamingResponse):
    """application/x-ndjson, one object (already serialised) per line."""

    def __init__(self, objects: AsyncIterator[str], status_code: int = 200) -> None:
        super().__init__(_lines(objects), status_code=status_code, media_type=NDJSON)


class SpliceTemplate:
    """A JSON line rendered once through its pydantic model with a marker string, then reused.

    Streaming sends one object per token that differs from the last only in its text; splicing
    the text into the rendered template gives exactly what the model would serialise.
    """

    def __init__(self, model: BaseModel) -> None:
        rendered = model.model_dump_json(exclude_none=True)
        self._prefix, self._suffix = rendered.split(_MARK_JSON)

    @staticmethod
    def marker() -> str:
        return _MARK

    def render(self, text: str) -> str:
        return self._prefix + json.dumps(text, ensure_ascii=False) + self._suffix
