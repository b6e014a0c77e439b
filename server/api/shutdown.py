"""Stopping on SIGTERM without cutting anyone off mid-sentence.

uvicorn stops accepting connections at the signal and waits for running requests; `Drain` adds
the grace period: running requests may finish for `shutdown_grace_seconds`, then every answer
still open is interrupted with ServerShuttingDown, which each API turns into a proper last
event (OpenAI: an error event in its shape, then `[DONE]`; Ollama: a final `done` line) or,
for a non-streamed answer, a 503. `GracefulServer` is the uvicorn server that tells the drain
when the signal comes and exits 0 after a clean stop (uvicorn would re-raise the signal).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from types import FrameType
from typing import Protocol

import uvicorn

from server.errors import ServerShuttingDown

logger = logging.getLogger(__name__)


class Interruptible(Protocol):
    """A running answer (api.lifecycle.Run) that can be ended with a final event."""

    def interrupt(self, exc: ServerShuttingDown) -> None: ...


class Drain:
    """Tracks the answers in flight and ends those still running when the grace period is up."""

    def __init__(self, grace_seconds: float) -> None:
        self.grace_seconds = grace_seconds
        self.draining = False
        self._open: set[Interruptible] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop the app runs on (called from the lifespan)."""
        self._loop = loop

    def track(self, run: Interruptible) -> None:
        self._open.add(run)

    def untrack(self, run: Interruptible) -> None:
        self._open.discard(run)

    @property
    def open_count(self) -> int:
        return len(self._open)

    def begin_threadsafe(self) -> None:
        """Start draining (from a signal handler or any thread)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.begin)

    def begin(self) -> None:
        if self.draining:
            return
        self.draining = True
        logger.info(
            "shutting down: %d request(s) running, %.0f s to finish",
            len(self._open),
            self.grace_seconds,
        )
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.grace_seconds, self.expire)

    def expire(self) -> None:
        """End every answer still open (each gets its API's final event)."""
        if self._open:
            logger.warning("grace period over: ending %d request(s) still running", len(self._open))
        exc = ServerShuttingDown("the server is shutting down; the answer was cut short")
        for run in list(self._open):
            run.interrupt(exc)
        self._open.clear()

    def cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


class GracefulServer(uvicorn.Server):
    """uvicorn's server, telling `drain` when SIGTERM/SIGINT arrives."""

    def __init__(self, config: uvicorn.Config, drain: Drain) -> None:
        super().__init__(config)
        self.drain = drain

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.drain.begin_threadsafe()
        super().handle_exit(sig, frame)
        if sig in (signal.SIGTERM, signal.SIGINT) and not self.force_exit:
            # A graceful stop is a success: exit 0 rather than re-raising the signal
            # (uvicorn re-raises captured signals after shutdown, making the exit code -15).
            self._captured_signals.clear()
