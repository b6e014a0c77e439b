"""Non-streamed answers end when their client does, as streamed ones do.

Starlette cancels a streaming body when the client goes (its disconnect listener); a handler
that awaits a whole answer is not told, so a client that gave up would keep a slot generating to
the end. `until_disconnect` races the answer against the connection's `http.disconnect` message
(the receive channel is idle once the body has been read, so waiting on it costs nothing) and
cancels the answer when the client leaves first; cancelling it closes its run, and the engine
frees the slot at its next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from starlette.requests import Request

from server.errors import ClientDisconnected

logger = logging.getLogger(__name__)

T = TypeVar("T")


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def until_disconnect(request: Request, answer: Coroutine[Any, Any, T]) -> T:
    """`answer`'s result, unless the client disconnects first.

    Raises ClientDisconnected (answered 499, which nobody reads) after cancelling `answer`.
    """
    work = asyncio.ensure_future(answer)
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((work, watch), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # this request itself was cancelled: so is its answer
        work.cancel()
        raise
    finally:
        watch.cancel()
    if work.done():
        return work.result()
    work.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await work
    logger.info("%s %s: the client went away; generation stopped", request.method, request.url.path)
    raise ClientDisconnected("the client closed the connection before the answer was ready")
