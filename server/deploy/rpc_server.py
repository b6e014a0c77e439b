"""Starting llama.cpp's `rpc-server` safely: find the binary, refuse a public bind.

rpc-server has no authentication and a history of memory-safety bugs: whoever reaches its port
can read and write that host's memory through it. So our command binds to loopback or a
private interface only, unless the operator says `--allow-public-bind` in so many words.
"""

from __future__ import annotations

import ipaddress
import shutil
import socket
from pathlib import Path

from server.errors import InvalidRequest

BINARY_NAMES = ("rpc-server", "ggml-rpc-server")
# Where `make rpc-server` puts it in a clone (an editable install runs from the clone).
_REPO_BUILD = Path(__file__).resolve().parents[2] / ".cache" / "rpc-server" / "rpc-server"


class PublicBindRefused(InvalidRequest):
    """The address would expose rpc-server beyond loopback and private networks."""

    code = "public_bind_refused"


def find_binary(explicit: Path | None = None) -> Path:
    """The rpc-server to run: `explicit`, else one on PATH, else the clone's `make rpc-server`.

    Raises InvalidRequest saying how to build one.
    """
    if explicit is not None:
        if not explicit.is_file():
            raise InvalidRequest(f"no rpc-server binary at {explicit}")
        return explicit
    for name in BINARY_NAMES:
        found = shutil.which(name)
        if found:
            return Path(found)
    if _REPO_BUILD.is_file():
        return _REPO_BUILD
    raise InvalidRequest(
        "no rpc-server binary found: build it with `make rpc-server` (it links the installed "
        "llama-cpp-python) or pass --binary"
    )


def bind_addresses(host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Every address `host` resolves to; raises InvalidRequest if it resolves to none."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise InvalidRequest(f"cannot resolve {host!r}: {exc.strerror}") from None
    return sorted({ipaddress.ip_address(info[4][0]) for info in infos}, key=str)


def is_safe_bind(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Loopback, private (RFC 1918, ULA) or link-local; never the any-address or a global one."""
    if address.is_unspecified:
        return False
    return address.is_loopback or address.is_private or address.is_link_local


def check_bind(host: str, *, allow_public: bool) -> None:
    """Raise PublicBindRefused unless every address of `host` is safe or `allow_public`."""
    if allow_public:
        return
    unsafe = [a for a in bind_addresses(host) if not is_safe_bind(a)]
    if unsafe:
        what = ", ".join(str(a) for a in unsafe)
        raise PublicBindRefused(
            f"refusing to bind rpc-server to {host} ({what}): it has no authentication and "
            "lets anyone who reaches it run code on this host. Bind to 127.0.0.1 or a private "
            "interface, or pass --allow-public-bind if a firewall really limits who reaches it"
        )


def command(
    binary: Path, host: str, port: int, *, threads: int | None, devices: str | None, cache: bool
) -> list[str]:
    """The rpc-server command line."""
    argv = [str(binary), "--host", host, "--port", str(port)]
    if threads:
        argv += ["--threads", str(threads)]
    if devices:
        argv += ["--device", devices]
    if cache:
        argv.append("--cache")
    return argv
