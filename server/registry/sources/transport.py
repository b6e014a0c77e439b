"""HTTP for pulls: one client configuration, and the rule that plain http needs a reason.

Weights fetched over plain http can be swapped by anyone on the path, so http is used only
for loopback hosts (a registry or file server on this machine) or when the user says
`--insecure`; everything else is https, redirects included.
"""

from __future__ import annotations

import ipaddress

import httpx

from server import __version__
from server.errors import PullError

USER_AGENT = f"gguf-serve/{__version__}"
_TIMEOUT = httpx.Timeout(30.0, read=120.0)


def new_client() -> httpx.Client:
    """The client every source uses: follows redirects, generous read timeout, our user agent."""
    return httpx.Client(timeout=_TIMEOUT, follow_redirects=True, headers={"User-Agent": USER_AGENT})


def host_only(host: str) -> str:
    """`localhost:5000` -> `localhost`; `[::1]:80` -> `::1`."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host[1:]
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def is_loopback(host: str) -> bool:
    """Whether `host` (optionally with a port) names this machine."""
    name = host_only(host).lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def scheme_for(host: str, *, insecure: bool) -> str:
    """`http` for loopback hosts or with `insecure`, else `https`."""
    return "http" if insecure or is_loopback(host) else "https"


def check_url(url: str | httpx.URL, *, insecure: bool) -> httpx.URL:
    """The parsed URL if we may fetch it. Raises PullError for other schemes and for plain
    http to a host that is not loopback without `insecure`."""
    try:
        parsed = httpx.URL(str(url))
    except httpx.InvalidURL as exc:
        raise PullError(f"invalid URL {url!s}: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise PullError(f"cannot pull from {url!s}: only http(s) URLs with a host are supported")
    if parsed.scheme == "http" and not insecure and not is_loopback(parsed.host):
        raise PullError(
            f"refusing plain http to {parsed.host}: use https, or pass --insecure "
            "if you trust the network between you and that host"
        )
    return parsed
