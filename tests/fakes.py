"""A fake engine for fast HTTP-layer tests (never the only test of a behaviour)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from server.chat.template import ChatTemplate
from server.engine.options import LoadOptions
from server.engine.types import GenerationEvent, GenerationRequest, SlotInfo, Usage
from server.errors import ContextLengthExceeded, Overloaded
from server.registry import ResolvedModel

REPLY = "Hello from the fake engine , nice to meet you ."


class FakeStream:
    def __init__(self, engine: FakeEngine, request: GenerationRequest) -> None:
        self.request = request
        self.engine = engine
        self.closed = False
        words = REPLY.split(" ")
        limit = request.max_tokens or len(words)
        self._tokens = [w if i == 0 else " " + w for i, w in enumerate(words)][:limit]
        self._finish = "length" if limit < len(words) else "stop"
        self._i = 0
        self._text = ""

    def __aiter__(self) -> FakeStream:
        return self

    async def __anext__(self) -> GenerationEvent:
        if self.closed or self._i > len(self._tokens):
            raise StopAsyncIteration
        await asyncio.sleep(self.engine.delay)
        if self._i == len(self._tokens):
            self._i += 1
            return self._final(self._finish)
        piece = self._tokens[self._i]
        self._i += 1
        for stop in self.request.stop:
            if stop in self._text + piece:
                self._i = len(self._tokens) + 1
                cut = (self._text + piece).index(stop)
                return self._final("stop", (self._text + piece)[len(self._text) : cut])
        self._text += piece
        return GenerationEvent(text=piece)

    def _final(self, reason: str, text: str = "") -> GenerationEvent:
        usage = Usage(prompt_tokens=len(self.request.prompt_tokens), completion_tokens=self._i - 1)
        return GenerationEvent(text=text, finish_reason=reason, usage=usage)  # type: ignore[arg-type]

    async def aclose(self) -> None:
        self.closed = True


@dataclass
class FakeEngine:
    """One 'token' per character; replies with REPLY word by word."""

    n_ctx_slot: int = 512
    delay: float = 0.0
    overloaded: bool = False
    submitted: list[GenerationRequest] = field(default_factory=list)
    streams: list[FakeStream] = field(default_factory=list)
    closed: bool = False

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        return [ord(c) for c in text]

    def detokenize(self, tokens: list[int]) -> str:
        return "".join(chr(t) for t in tokens)

    def submit(self, request: GenerationRequest) -> FakeStream:
        if len(request.prompt_tokens) + (request.max_tokens or 1) > self.n_ctx_slot:
            raise ContextLengthExceeded("too long for the fake engine", param="messages")
        if self.overloaded:
            raise Overloaded("fake queue full", retry_after=2)
        self.submitted.append(request)
        stream = FakeStream(self, request)
        self.streams.append(stream)
        return stream

    def slots(self) -> list[SlotInfo]:
        return [SlotInfo(0, "idle", 0, 0, 0, 0)]

    def close(self) -> None:
        self.closed = True


def fake_factory(engine: FakeEngine) -> object:
    def make(resolved: ResolvedModel, options: LoadOptions) -> tuple[FakeEngine, ChatTemplate]:
        return engine, ChatTemplate(None)

    return make
