"""A lean Server-Sent Events response: `data: <payload>\\n\\n` per item, nothing else.

Starlette's StreamingResponse already cancels the body when the client disconnects (its
disconnect listener), which is all the streaming path needs; per-event work here is one string
concatenation, because this runs once per generated token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.responses import StreamingResponse

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def _framed(payloads: AsyncIterator[str]) -> AsyncIterator[bytes]:
    async for payload in payloads:
        yield f"data: {payload}\n\n".encode()


class EventStreamResponse(StreamingResponse):
    """text/event-stream of `data:` events, one per payload string."""

    def __init__(self, payloads: AsyncIterator[str], status_code: int = 200) -> None:
        super().__init__(
            _framed(payloads),
            status_code=status_code,
            media_type="text/event-stream",
            headers=SSE_HEADERS,
        )
