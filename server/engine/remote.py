"""The parent's side of a request running in an engine child process (engine/supervised.py)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

from server.engine.queue_stream import QueueStream
from server.engine.types import GenerationEvent


class _Canceller(Protocol):
    def cancel_remote(self, rid: int) -> None: ...


class RemoteStream(QueueStream):
    """Events of one request running in the child; aclose() cancels it there."""

    def __init__(self, engine: _Canceller, rid: int) -> None:
        super().__init__(asyncio.Queue())
        self._engine = engine
        self.rid = rid
        self.loop = asyncio.get_running_loop()

    def _cancel(self) -> None:
        self._engine.cancel_remote(self.rid)

    def __del__(self) -> None:  # a response body that was never iterated still frees its slot
        if not self._done:
            self._engine.cancel_remote(self.rid)

    def put(self, item: GenerationEvent | BaseException) -> None:
        """From any thread."""
        with contextlib.suppress(RuntimeError):  # loop closed: nobody is listening
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


def settle(future: asyncio.Future[Any], setter: Any, value: Any) -> None:
    """Resolve `future` on its loop unless it is already done (a cancelled caller)."""
    if not future.done():
        setter(value)
