"""HTTP/1.1 over a bare socket, for what client libraries hide: a 50 MB body the server should
refuse before it is sent, a chunked body that never ends, a Host header of our choosing.

The response is read on a second thread while the body is still being written, as a browser or
curl would see it, so a server that answers early (and then closes) is seen answering early.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass
class RawResponse:
    status_code: int
    headers: dict[str, str]
    body: bytes
    seconds: float  # from the first byte sent to the end of the response head

    def json(self) -> Any:
        return json.loads(self.body)


def _read_response(sock: socket.socket, started: float, out: dict[str, Any]) -> None:
    data = b""
    head_at = None
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if head_at is None and b"\r\n\r\n" in data:
                head_at = time.perf_counter() - started
            head, _, rest = data.partition(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                None,
            )
            if length is not None and len(rest) >= length:
                break
    except OSError:
        pass
    out["data"], out["head_at"] = data, head_at


def request(
    url: str,
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | Iterator[bytes] = b"",
    content_length: int | None = None,
    timeout: float = 10.0,
) -> RawResponse:
    """Send one request; `body` may be an iterator (sent chunked unless content_length is
    given). Stops sending once the server has answered."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout)
    sent_headers = {"Host": parts.netloc, "Connection": "close", **(headers or {})}
    chunked = not isinstance(body, bytes) and content_length is None
    if chunked:
        sent_headers["Transfer-Encoding"] = "chunked"
    else:
        size = len(body) if isinstance(body, bytes) else content_length
        sent_headers["Content-Length"] = str(size)
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in sent_headers.items()
    )
    result: dict[str, Any] = {}
    started = time.perf_counter()
    reader = threading.Thread(target=_read_response, args=(sock, started, result))
    reader.start()
    try:
        sock.sendall(head.encode("latin-1") + b"\r\n")
        pieces = [body] if isinstance(body, bytes) else body
        for piece in pieces:
            if not reader.is_alive():
                break  # answered (and maybe closed): the rest is never sent
            sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if chunked else piece)
        if chunked and reader.is_alive():
            sock.sendall(b"0\r\n\r\n")
    except OSError:
        pass  # the server closed while we were still sending: its answer is what counts
    reader.join(timeout)
    sock.close()
    data: bytes = result.get("data", b"")
    head_bytes, _, rest = data.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    if not lines or not lines[0].startswith("HTTP/1.1 "):
        raise AssertionError(f"no HTTP response: {data[:200]!r}")
    status = int(lines[0].split()[1])
    parsed = {
        k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)
    }
    return RawResponse(status, parsed, rest, float(result.get("head_at") or 0.0))


def repeated(chunk: bytes, total: int) -> Iterator[bytes]:
    """`total` bytes as repeats of `chunk` (a body that is never held in memory whole)."""
    sent = 0
    while sent < total:
        piece = chunk[: total - sent]
        sent += len(piece)
        yield piece
