"""A fake engine for fast HTTP-layer tests (never the only test of a behaviour)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from server.chat.template import ChatTemplate
from server.engine.options import LoadOptions
from server.engine.types import (
    GenerationEvent,
    GenerationRequest,
    SlotInfo,
    TokenLogprob,
    Usage,
)
from server.errors import ContextLengthExceeded, InvalidRequest, Overloaded
from server.registry import ResolvedModel

REPLY = "Hello from the fake engine , nice to meet you ."


class FakeStream:
    def __init__(self, engine: FakeEngine, request: GenerationRequest) -> None:
        self.request = request
        self.engine = engine
        self.closed = False
        words = engine.reply.split(" ")
        limit = request.max_tokens or len(words)
        self._tokens = [w if i == 0 else " " + w for i, w in enumerate(words)][:limit]
        self._finish = "length" if limit < len(words) else "stop"
        self._i = 0
        self._text = ""
        self._watch = request.watch() if request.watch is not None else None
        self._interrupted: BaseException | None = None

    def __aiter__(self) -> FakeStream:
        return self

    async def __anext__(self) -> GenerationEvent:
        if self._interrupted is not None:
            exc, self._interrupted, self.closed = self._interrupted, None, True
            raise exc
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
        if self._watch is not None and self._watch.complete(piece):  # as the real engine does
            produced, self._i = self._i, len(self._tokens) + 1
            return self._final("stop", piece, produced)
        return GenerationEvent(text=piece, logprobs=self._logprobs(piece))

    def _logprobs(self, piece: str) -> tuple[TokenLogprob, ...]:
        if self.request.logprobs is None:
            return ()
        raw = tuple(piece.encode())
        top = tuple((piece + str(k), -1.0 - k, raw) for k in range(self.request.logprobs))
        return (TokenLogprob(token=piece, logprob=-0.5, bytes=raw, top=top),)

    def _final(self, reason: str, text: str = "", produced: int | None = None) -> GenerationEvent:
        generated = self._i - 1 if produced is None else produced
        usage = Usage(prompt_tokens=len(self.request.prompt_tokens), completion_tokens=generated)
        return GenerationEvent(text=text, finish_reason=reason, usage=usage)  # type: ignore[arg-type]

    async def aclose(self) -> None:
        self.closed = True

    def interrupt(self, exc: BaseException) -> None:
        self._interrupted = exc


@dataclass
class FakeEngine:
    """One 'token' per character; replies with `reply` (REPLY) word by word."""

    n_ctx_slot: int = 512
    reply: str = REPLY
    n_vocab: int = 0x110000  # token ids are code points
    n_embd: int = 8
    fim_tokens: tuple[int, int, int] | None = None
    embedded: list[list[int]] = field(default_factory=list)
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

    async def embed(
        self, inputs: list[list[int]], *, normalize: bool = True, truncate: bool = False
    ) -> list[list[float]]:
        """A deterministic vector per input (a histogram of code points modulo n_embd)."""
        out = []
        for tokens in inputs:
            tokens = tokens[: self.n_ctx_slot] if truncate else tokens
            if not tokens:
                raise InvalidRequest("empty input", param="input")
            if len(tokens) > self.n_ctx_slot:
                raise ContextLengthExceeded("too long for the fake engine", param="input")
            self.embedded.append(tokens)
            vector = [0.0] * self.n_embd
            for t in tokens:
                vector[t % self.n_embd] += 1.0
            norm = sum(v * v for v in vector) ** 0.5 if normalize else 1.0
            out.append([v / norm for v in vector])
        return out

    def slots(self) -> list[SlotInfo]:
        return [SlotInfo(0, "idle", 0, 0, 0, 0)]

    def queued(self) -> int:
        return 0

    def close(self) -> None:
        self.closed = True


def fake_factory(engine: FakeEngine) -> object:
    def make(resolved: ResolvedModel, options: LoadOptions) -> tuple[FakeEngine, ChatTemplate]:
        return engine, ChatTemplate(None)

    return make
