"""Helpers for driving engine streams from the API layers: submit, merge, collect."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from server.engine.types import (
    Engine,
    GenerationEvent,
    GenerationRequest,
    GenerationStream,
    TokenLogprob,
    Usage,
)
from server.errors import InvalidRequest

_End = None


async def submit_all(
    engine: Engine, requests: Sequence[GenerationRequest], *, grammar_param: str = "grammar"
) -> list[GenerationStream]:
    """Queue every request or none: on an error the ones already queued are cancelled.

    A grammar the engine cannot parse is reported against `grammar_param`, the request field
    it was built from.
    """
    streams: list[GenerationStream] = []
    try:
        for request in requests:
            streams.append(engine.submit(request))
    except InvalidRequest as exc:
        for stream in streams:
            await stream.aclose()
        if exc.param == "grammar" and grammar_param != "grammar":
            raise InvalidRequest(
                f"{grammar_param}: {exc.message}", param=grammar_param, code=exc.code
            ) from None
        raise
    except BaseException:
        for stream in streams:
            await stream.aclose()
        raise
    return streams


async def merge_streams(
    streams: Sequence[GenerationStream],
) -> AsyncIterator[tuple[int, GenerationEvent]]:
    """Events of several streams as they arrive, tagged with the stream's index.

    One stream is passed straight through (the common case costs nothing extra). Events of one
    stream keep their order; streams interleave as the engine produces them. Closing the merged
    iterator closes every stream.
    """
    if len(streams) == 1:
        try:
            async for event in streams[0]:
                yield 0, event
        finally:
            await streams[0].aclose()
        return
    queue: asyncio.Queue[tuple[int, GenerationEvent | BaseException | None]] = asyncio.Queue()

    async def pump(index: int, stream: GenerationStream) -> None:
        try:
            async for event in stream:
                queue.put_nowait((index, event))
        except Exception as exc:
            queue.put_nowait((index, exc))
        finally:
            queue.put_nowait((index, _End))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(streams)
        while remaining:
            index, item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        for stream in streams:
            await stream.aclose()


@dataclass
class Collected:
    """A whole stream's output: text, finish reason, usage and per-event logprobs."""

    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    logprobs: list[tuple[TokenLogprob, ...]] = field(default_factory=list)
    completion_ids: tuple[int, ...] = ()


async def collect(stream: GenerationStream) -> Collected:
    """Run `stream` to its end."""
    parts: list[str] = []
    out = Collected()
    async for event in stream:
        parts.append(event.text)
        if event.logprobs:
            out.logprobs.append(event.logprobs)
        if event.finish_reason is not None:
            out.finish_reason, out.usage = event.finish_reason, event.usage
            out.completion_ids = event.completion_ids
    out.text = "".join(parts)
    return out
