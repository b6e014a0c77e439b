"""Helpers for consuming engine streams from the API layers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from server.engine.types import GenerationEvent, GenerationStream

_End = None


async def merge_streams(
    streams: Sequence[GenerationStream],
) -> AsyncIterator[tuple[int, GenerationEvent]]:
    """Events of several streams as they arrive, tagged with the stream's index.

    One stream is passed straight through (the common case costs nothing extra). Closing the
    merged iterator closes every stream.
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
