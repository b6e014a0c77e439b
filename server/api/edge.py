"""The HTTP edge: one ASGI middleware that decides whether a request may reach a route at all.

In order: the Host header (DNS rebinding), the Origin header (cross-site pages), CORS
preflights for allowed origins, the API key, then the body: a JSON route's body must be JSON
(curl's form-encoded default is taken as JSON only when no foreign page sent it), it is read at
most `max_body_bytes` far, and an upload to /api/blobs is counted against `max_blob_bytes` and
the free disk. Every refusal is an error body in the shape of the API the path belongs to.
See docs/SECURITY.md for the threat model behind each rule.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable
from pathlib import Path

from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api.edge_body import BodyTooLarge, count_body, read_body, replay_body
from server.api.edge_rules import HostRule, KeyRing, OriginRule, presented_key, same_origin
from server.api.errors import error_payload
from server.errors import PayloadTooLarge
from server.settings import Settings

logger = logging.getLogger(__name__)

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_BLOB_PREFIX = "/api/blobs/"
# Content types a browser page may send cross-site without a preflight ("simple requests").
_JSON_TYPES = (b"application/json",)
_ALLOW_METHODS = "GET, HEAD, POST, PUT, DELETE, OPTIONS"
_MAX_AGE = "600"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _is_json(content_type: str | None) -> bool:
    if content_type is None:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _content_length(scope: Scope) -> int | None:
    value = _header(scope, b"content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def free_disk(path: Path) -> int:
    """Bytes free on the file system that holds `path` (or its nearest existing parent)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return shutil.disk_usage(candidate).free
    return 0


class Edge:
    """The one middleware between the server and the network (wired by app.py)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: Settings,
        public_paths: Iterable[str] = ("/health",),
    ) -> None:
        self.app = app
        self.hosts = HostRule(settings.host, settings.allowed_hosts)
        self.origins = OriginRule(settings.cors_origins)
        self.keys = KeyRing(settings.api_keys)
        self.max_body = settings.max_body_bytes
        self.max_blob = settings.max_blob_bytes
        self.home = settings.home
        # A public path is served without an API key, and so is everything below it.
        self.public = tuple(public_paths)

    def is_public(self, path: str) -> bool:
        return any(path == p or path.startswith(p.rstrip("/") + "/") for p in self.public)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        method: str = scope["method"]
        host = _header(scope, b"host") or ""
        if not self.hosts.allows(host):
            logger.info("refused %s %s: Host %r is not allowed", method, path, host)
            await _refuse(
                scope,
                send,
                403,
                f"host {host!r} is not allowed; the operator can add it to allowed_hosts",
                "invalid_request_error",
                "host_not_allowed",
            )
            return
        origin = _header(scope, b"origin")
        cross_origin = origin is not None and not same_origin(origin, scope["scheme"], host)
        if origin is not None and cross_origin and not self.origins.allows(origin):
            logger.info("refused %s %s: Origin %r is not allowed", method, path, origin)
            await _refuse(
                scope,
                send,
                403,
                f"origin {origin!r} is not allowed; the operator can add it to cors_origins",
                "invalid_request_error",
                "origin_not_allowed",
            )
            return
        if cross_origin and origin is not None:
            if method == "OPTIONS" and _header(scope, b"access-control-request-method"):
                await _preflight(scope, send, origin)
                return
            send = _with_cors(send, origin)
        if self.keys.enabled and not self.is_public(path):
            key = presented_key(scope["headers"])
            if key is None or not self.keys.matches(key):
                await _refuse(
                    scope,
                    send,
                    401,
                    "missing API key: send Authorization: Bearer <key>"
                    if key is None
                    else "invalid API key",
                    "authentication_error",
                    "invalid_api_key",
                    {"WWW-Authenticate": "Bearer"},
                )
                return
        if method not in _BODY_METHODS:
            await self.app(scope, receive, send)
        elif method == "POST" and path.startswith(_BLOB_PREFIX):
            await self._upload(scope, receive, send)
        else:
            await self._json(scope, receive, send, cross_origin)

    async def _json(self, scope: Scope, receive: Receive, send: Send, cross_origin: bool) -> None:
        """A JSON route: a JSON body, at most max_body_bytes of it, valid UTF-8."""
        content_type = _header(scope, b"content-type")
        if not _is_json(content_type):
            if cross_origin:
                # A page elsewhere (even an allowed one) must say it sends JSON, which makes
                # the browser ask first (a preflight) instead of sending a "simple" request.
                await _refuse(
                    scope,
                    send,
                    415,
                    "send the body with Content-Type: application/json",
                    "invalid_request_error",
                    "unsupported_media_type",
                )
                return
            # curl -d sends form encoding; Ollama's and llama-server's examples rely on it.
            scope = dict(scope)
            scope["headers"] = [
                *((k, v) for k, v in scope["headers"] if k != b"content-type"),
                (b"content-type", _JSON_TYPES[0]),
            ]
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body:
            await _too_large(scope, send, self._body_message(declared))
            return
        try:
            body = await read_body(receive, self.max_body)
        except BodyTooLarge:
            await _too_large(scope, send, self._body_message(None))
            return
        if body is None:  # the client went away
            return
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            await _refuse(
                scope,
                send,
                400,
                f"the request body is not valid UTF-8 (byte {exc.start})",
                "invalid_request_error",
                "invalid_value",
            )
            return
        await self.app(scope, replay_body(body, receive), send)

    def _body_message(self, size: int | None) -> str:
        said = f" ({size} bytes)" if size is not None else ""
        return f"the request body{said} is larger than max_body_bytes ({self.max_body} bytes)"

    async def _upload(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A blob upload streams to disk: counted as it comes, never buffered here."""
        free = free_disk(self.home)
        limit = min(self.max_blob, free)
        reason = (
            f"max_blob_bytes ({self.max_blob} bytes)"
            if limit == self.max_blob
            else f"the free disk space ({free} bytes)"
        )
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _too_large(scope, send, f"the upload ({declared} bytes) is larger than {reason}")
            return

        def too_large() -> Exception:
            return PayloadTooLarge(f"the upload is larger than {reason}", param="body")

        await self.app(scope, count_body(receive, limit, too_large), send)


async def _refuse(
    scope: Scope,
    send: Send,
    status: int,
    message: str,
    type_: str,
    code: str,
    headers: dict[str, str] | None = None,
) -> None:
    body = error_payload(scope["path"], message, type_, None, code)
    response = JSONResponse(body, status_code=status, headers=headers)
    await response(scope, _no_receive, send)


async def _too_large(scope: Scope, send: Send, message: str) -> None:
    """413, and the connection closes: the rest of the body is never read."""
    await _refuse(
        scope,
        send,
        413,
        message,
        "invalid_request_error",
        "payload_too_large",
        {"Connection": "close"},
    )


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


async def _preflight(scope: Scope, send: Send, origin: str) -> None:
    """Answer a CORS preflight from an allowed origin (no API key: browsers send none here)."""
    headers = {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": _ALLOW_METHODS,
        "Access-Control-Max-Age": _MAX_AGE,
        "Vary": "Origin",
    }
    requested = _header(scope, b"access-control-request-headers")
    if requested:
        headers["Access-Control-Allow-Headers"] = requested[:2048]
    if _header(scope, b"access-control-request-private-network") == "true":
        headers["Access-Control-Allow-Private-Network"] = "true"  # Chrome's local-network check
    await Response(status_code=204, headers=headers)(scope, _no_receive, send)


def _with_cors(send: Send, origin: str) -> Send:
    """Let the calling page read the response (its origin is allowed)."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [
                *message.get("headers", []),
                (b"access-control-allow-origin", origin.encode("latin-1")),
                (b"access-control-expose-headers", b"Retry-After, WWW-Authenticate"),
                (b"vary", b"Origin"),
            ]
            message = {**message, "headers": headers}
        await send(message)

    return wrapped
