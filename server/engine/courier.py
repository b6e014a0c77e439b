"""Hands engine results to asyncio event loops from a thread of its own.

Waking an event loop (call_soon_threadsafe writes to its self-pipe) releases the GIL, and the
woken loop then tends to hold it while it encodes and sends the token; done on the worker thread,
that wait lands between two decode steps. The worker only appends to a SimpleQueue (no GIL
release) and goes straight back to llama_decode; this thread does the waking meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any

Deliver = Callable[[list[tuple[Any, Any]]], None]


class Courier:
    """FIFO delivery of (job, item) pairs to each job's loop via `deliver`."""

    def __init__(
        self, deliver: Deliver, loop_of: Callable[[Any], asyncio.AbstractEventLoop]
    ) -> None:
        self._deliver = deliver
        self._loop_of = loop_of
        self._queue: queue.SimpleQueue[list[tuple[Any, Any]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="gguf-serve-courier", daemon=True)
        self._thread.start()

    def send(self, items: list[tuple[Any, Any]]) -> None:
        """Queue items for delivery; never blocks and never releases the GIL."""
        if items:
            self._queue.put(items)

    def close(self) -> None:
        """Deliver what is queued, then stop."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            batch = self._queue.get()
            stop = batch is None
            items = list(batch or ())
            while not stop:  # take everything already waiting: one wake-up per loop
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                else:
                    items.extend(more)
            self._dispatch(items)
            if stop:
                return

    def _dispatch(self, items: list[tuple[Any, Any]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Any, Any]]] = {}
        for pair in items:
            by_loop.setdefault(self._loop_of(pair[0]), []).append(pair)
        for loop, group in by_loop.items():
            with contextlib.suppress(RuntimeError):  # loop closed: nobody is listening
                loop.call_soon_threadsafe(self._deliver, group)
