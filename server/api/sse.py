"""A lean Server-Sent Events response: `data: <payload>\\n\\n` per item, plus what a long-lived
stream needs around it.

Per-event work is one string concatenation and a counter, because this runs once per
generated token (sse-starlette's EventSourceResponse costs more per event: see
docs/BENCHMARKS.md). Around the body, per response:
- keep-alive: after `ping_seconds` without an event, an SSE comment (`: ping`), which clients
  ignore and proxies see as traffic (a long prompt or a full queue can be quiet for minutes);
- disconnect: the connection's `http.disconnect` is awaited beside the body, so a client that
  leaves is noticed at once even when no token is due (sending alone notices it only at the
  next token); the body is then cancelled, which closes the run and frees its slot;
- shutdown: the body's own generator ends the stream (api.shutdown interrupts the run, and
  the encoder writes its final event), so the response ends like any other.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
PING = b": ping\n\n"


class _Activity:
    __slots__ = ("events", "finished", "sending")

    def __init__(self) -> None:
        self.events = 0
        self.sending = False
        self.finished = False


async def _framed(payloads: AsyncIterator[str], activity: _Activity) -> AsyncIterator[bytes]:
    async for payload in payloads:
        activity.events += 1
        yield f"data: {payload}\n\n".encode()


class EventStreamResponse(StreamingResponse):
    """text/event-stream of `data:` events, one per payload string, with keep-alive comments
    every `ping_seconds` of silence (0: none)."""

    def __init__(
        self, payloads: AsyncIterator[str], status_code: int = 200, *, ping_seconds: float = 0
    ) -> None:
        self._activity = _Activity()
        self.ping_seconds = ping_seconds
        super().__init__(
            _framed(payloads, self._activity),
            status_code=status_code,
            media_type="text/event-stream",
            headers=SSE_HEADERS,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        activity = self._activity

        async def tracked(message: Message) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body"):
                activity.finished = True
            activity.sending = True
            try:
                await send(message)
            finally:
                activity.sending = False

        async with anyio.create_task_group() as group:

            async def body() -> None:
                with contextlib.suppress(OSError):  # the client went away mid-send
                    await self.stream_response(tracked)
                group.cancel_scope.cancel()

            async def disconnect() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                group.cancel_scope.cancel()

            async def ping() -> None:
                seen = 0  # no event yet: the first ping comes after one quiet interval
                while True:
                    await anyio.sleep(self.ping_seconds)
                    quiet = activity.events == seen
                    seen = activity.events
                    if quiet and not activity.sending and not activity.finished:
                        await tracked(
                            {"type": "http.response.body", "body": PING, "more_body": True}
                        )

            group.start_soon(body)
            group.start_soon(disconnect)
            if self.ping_seconds > 0:
                group.start_soon(ping)
