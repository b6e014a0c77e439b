"""The edge's decisions as pure functions: which Host, Origin and API key a request may use.

Kept apart from the ASGI plumbing (edge.py) so each rule is tested on its own. The defaults
follow Ollama's (server/routes.go `allowedHostsMiddleware`, envconfig `AllowedOrigins`): on a
loopback address only local Host names are served (DNS rebinding), and a browser page may call
only from a local origin unless the operator lists more.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Iterable

# Origins a browser page may call from without configuration: pages served from this machine
# (any port, as Ollama allows), and local app shells whose schemes no web site can use.
_LOCAL_ORIGIN = re.compile(r"https?://(localhost|127\.0\.0\.1|\[::1\])(:\d{1,5})?")
APP_ORIGINS = ("app://*", "tauri://*", "vscode-webview://*", "vscode-file://*")
_DEFAULT_PORTS = {"http": "80", "https": "443"}


def host_name(host: str) -> str:
    """The name part of a Host header value: lower-case, without port, brackets or final dot."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else host
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def is_loopback(name: str) -> bool:
    """`localhost` or a loopback IP literal (127.0.0.0/8, ::1)."""
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _wildcard(pattern: str) -> re.Pattern[str]:
    """`*` matches any run of characters within one origin or host name; the rest is literal."""
    parts = (re.escape(p) for p in pattern.lower().rstrip("/").split("*"))
    return re.compile("[^/]*".join(parts))


class HostRule:
    """Which Host header values are served (the defence against DNS rebinding)."""

    def __init__(self, bind_host: str, allowed: list[str] | None) -> None:
        names = list(allowed or [])
        if allowed is None:
            # Unset: bound to loopback only local names reach us legitimately; bound to another
            # address (0.0.0.0, a LAN address, a container) any name may, as with Ollama.
            self.open = not is_loopback(host_name(bind_host))
        else:
            self.open = "*" in names
        self._patterns = [_wildcard(host_name(n)) for n in names if n != "*"]

    def allows(self, host_header: str) -> bool:
        if self.open or not host_header:  # no Host: not a browser, so no rebinding either
            return True
        name = host_name(host_header)
        return is_loopback(name) or any(p.fullmatch(name) for p in self._patterns)


def normalize_origin(origin: str) -> str:
    """Lower-case, without a trailing slash or the scheme's default port."""
    origin = origin.strip().lower().rstrip("/")
    scheme, sep, rest = origin.partition("://")
    port = _DEFAULT_PORTS.get(scheme)
    if sep and port and rest.endswith(":" + port):
        rest = rest[: -len(port) - 1]
    return f"{scheme}{sep}{rest}"


class OriginRule:
    """Which browser origins may call the API (every route; preflights answered for them)."""

    def __init__(self, extra: Iterable[str]) -> None:
        listed = list(extra)
        self.any = "*" in listed
        self._patterns = [_wildcard(p) for p in [*listed, *APP_ORIGINS] if p != "*"]

    def allows(self, origin: str) -> bool:
        """A listed origin, a local one, or any when `*` is listed (the server's own origin is
        checked by `same_origin`, which needs the request)."""
        origin = normalize_origin(origin)
        if self.any or _LOCAL_ORIGIN.fullmatch(origin):
            return True
        return any(p.fullmatch(origin) for p in self._patterns)


def same_origin(origin: str, scheme: str, host_header: str) -> bool:
    """Does `origin` name this server, as the request reached it?"""
    if not host_header:
        return False
    return normalize_origin(origin) == normalize_origin(f"{scheme}://{host_header}")


class KeyRing:
    """The configured API keys, compared in constant time.

    Keys are hashed first so every comparison is between equal-length digests, and every key
    is compared (no early exit) so the time does not tell which key, or how much of it, matched.
    """

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = [hashlib.sha256(k.encode("utf-8")).digest() for k in keys]

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def matches(self, presented: bytes) -> bool:
        digest = hashlib.sha256(presented).digest()
        found = False
        for key in self._digests:
            found |= hmac.compare_digest(digest, key)
        return found


def presented_key(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The key a client sent: `Authorization: Bearer <key>` (OpenAI SDK, Ollama clients with
    OLLAMA_API_KEY or headers=...) or `X-Api-Key: <key>` (as llama-server also accepts)."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return token.strip()
        elif name == b"x-api-key" and value.strip():
            return value.strip()
    return None
