"""The asyncio side of one request's events: a queue the engine fills, read as an async
iterator. Shared by the in-process engine (jobs.py) and a child-process engine (remote.py),
which differ only in how a request is cancelled."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod

from server.engine.types import GenerationEvent

Item = GenerationEvent | BaseException


class QueueStream(ABC):
    """Async iterator over `queue`; aclose() (or an end of the stream not read to its end)
    cancels the request through `_cancel`."""

    def __init__(self, queue: asyncio.Queue[Item]) -> None:
        self.queue = queue
        self._done = False

    @abstractmethod
    def _cancel(self) -> None:
        """Stop the request in its engine (from the event loop's thread)."""

    def __aiter__(self) -> QueueStream:
        return self

    async def __anext__(self) -> GenerationEvent:
        if self._done:
            raise StopAsyncIteration
        queue = self.queue
        item = await queue.get()
        # Merge whatever else is already waiting: fewer, larger chunks when the client lags.
        while (
            not queue.empty() and isinstance(item, GenerationEvent) and item.finish_reason is None
        ):
            nxt = queue.get_nowait()
            if isinstance(nxt, BaseException):
                queue.put_nowait(nxt)  # raise it on the next call, after this text
                break
            item = GenerationEvent(
                text=item.text + nxt.text,
                finish_reason=nxt.finish_reason,
                usage=nxt.usage,
                logprobs=item.logprobs + nxt.logprobs,
                completion_ids=nxt.completion_ids,
            )
        if isinstance(item, BaseException):
            self._done = True
            raise item
        if item.finish_reason is not None:
            self._done = True
        return item

    async def aclose(self) -> None:
        if not self._done:
            self._done = True
            self._cancel()

    def interrupt(self, exc: BaseException) -> None:
        """End the stream with `exc` (shutdown): the request is cancelled, the reader gets it."""
        if not self._done:
            self._cancel()
            self.queue.put_nowait(exc)
