"""Counts every HTTP request by API, route template and status; the outermost middleware.

It sits outside the edge's Host / Origin / API-key / body checks so their refusals are counted
too. The route label is the matched route's template (`/v1/models/{model_id:path}`), never the
raw path, and `unmatched` for a path no route knows, so a scanner cannot grow the label set.
Middlewares inside this one may copy the scope, so what is learnt inside (the route, from
`RouteRecorder` next to the router; a refusal's reason, from the exception handlers) travels
in `scope["state"]`, a dict every copy shares.
"""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api.metrics import Metrics
from server.errors import ContextLengthExceeded, GGUFServeError, Overloaded

_STATE_KEY = "gguf_serve_rejection"  # in scope["state"], where Request.state keeps it
_ROUTE_KEY = "gguf_serve_route"
# Refusals decided outside our exception handlers (the edge middleware answers them itself).
_BY_STATUS = {401: "unauthorized", 403: "forbidden", 413: "too_large"}


def api_of(path: str) -> str:
    if path.startswith("/v1/"):
        return "openai"
    if path.startswith("/api/") or path == "/":
        return "ollama"
    if path == "/ui" or path.startswith("/ui/"):
        return "ui"
    return "system"


def mark_rejection(request: Request, exc: GGUFServeError) -> None:
    """Note why an exception handler refused a request, for the `rejections` counter."""
    reason = None
    if isinstance(exc, Overloaded):
        reason = "queue_full"
    elif isinstance(exc, ContextLengthExceeded):
        reason = "context_too_long"
    if reason is not None:
        request.state.gguf_serve_rejection = reason


class RouteRecorder:
    """The innermost middleware: after the router ran, note which route served the request in
    the state the outer `HTTPMetrics` shares (the scope here is the one the router fills in)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            if scope["type"] == "http":
                path = getattr(scope.get("route"), "path", None)
                state = scope.get("state")
                if isinstance(path, str) and isinstance(state, dict):
                    state[_ROUTE_KEY] = path


class HTTPMetrics:
    """ASGI middleware feeding `Metrics.http_request`."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = scope.setdefault("state", {})
        status = 500  # an exception that escapes every handler becomes a 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            rejection = state.get(_STATE_KEY) or _BY_STATUS.get(status)
            api = api_of(scope["path"])
            # The router hands a mount (the page's files) a copy of the scope: name it here.
            fallback = "/ui" if api == "ui" else "unmatched"
            self.metrics.http_request(
                api,
                state.get(_ROUTE_KEY, fallback),
                status,
                time.perf_counter() - started,
                rejection,
            )
