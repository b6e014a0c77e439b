"""Streaming chunk serialisation, on the hot path (one call per generated token).

The wire schema is the pydantic ChatCompletionChunk; a content delta is rendered once through it
with a marker as its text, and every later delta is spliced into that template. The result parses
to exactly what the pydantic model would produce, at a fraction of the cost.
"""

from __future__ import annotations

import json

from server.api.openai.chat_protocol import ChatCompletionChunk, ChunkChoice, Delta
from server.api.openai.protocol import CompletionUsage

_MARK = "\x00"
_MARK_JSON = json.dumps(_MARK)  # '"\\u0000"', as pydantic writes it too


class ChunkEncoder:
    """Serialises the chunks of one streamed completion (fixed id, created, model)."""

    def __init__(self, id: str, created: int, model: str, fingerprint: str | None) -> None:
        self._fields = {
            "id": id,
            "created": created,
            "model": model,
            "system_fingerprint": fingerprint,
        }
        self._content: dict[int, tuple[str, str]] = {}

    def chunk(self, choices: list[ChunkChoice], usage: CompletionUsage | None = None) -> str:
        """Any chunk, through the pydantic model (role, finish, usage, logprobs chunks)."""
        return ChatCompletionChunk(**self._fields, choices=choices, usage=usage).model_dump_json()

    def content(self, index: int, text: str) -> str:
        """A chunk whose only news is `text` for choice `index`."""
        template = self._content.get(index)
        if template is None:
            rendered = self.chunk([ChunkChoice(index=index, delta=Delta(content=_MARK))])
            prefix, suffix = rendered.split(_MARK_JSON)
            template = self._content[index] = (prefix, suffix)
        return template[0] + json.dumps(text, ensure_ascii=False) + template[1]
