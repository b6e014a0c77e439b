"""Treat POST bodies as JSON whatever Content-Type says (curl -d sends form encoding).

Ollama's and llama-server's documented curl examples omit the header; both servers accept them.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

_JSON = (b"content-type", b"application/json")


class AssumeJSONMiddleware:
    """Rewrite a missing or form Content-Type to application/json on POST/DELETE requests."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("POST", "DELETE"):
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            original = next((v for k, v in scope["headers"] if k == b"content-type"), b"")
            if not original.startswith(b"application/json") and not original.startswith(
                b"multipart/"
            ):
                scope = dict(scope)
                scope["headers"] = [*headers, _JSON]
        await self.app(scope, receive, send)
