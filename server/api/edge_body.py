"""Request bodies at the edge: read up to a limit and replayed, or counted as they stream."""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import Message, Receive


class BodyTooLarge(Exception):
    """The body passed the limit before it ended."""


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None if the client disconnected first.

    Raises BodyTooLarge as soon as more than `limit` bytes have arrived (the rest is not read).
    """
    chunks: list[bytes] = []
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay_body(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the app `body` once, then the real channel (so the app still learns
    of a disconnect while it streams its answer)."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def count_body(receive: Receive, limit: int, error: Callable[[], Exception]) -> Receive:
    """A receive that raises `error()` once more than `limit` body bytes have passed."""
    total = 0

    async def counted() -> Message:
        nonlocal total
        message = await receive()
        if message["type"] == "http.request":
            total += len(message.get("body", b""))
            if total > limit:
                raise error()
        return message

    return counted
