"""Reading the GGUF header of a remote file with HTTP range requests, never the weights.

A header is the metadata (the vocabulary is most of it: a few MB for 150k-token models) and the
tensor table. The first request asks for 1 MiB; when the parser says the header goes on, the
next request asks for the rest of what it needs (doubling), up to a limit. A server that ignores
`Range` and answers 200 is read only as far as needed and then hung up on.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

import httpx

from server.errors import InvalidModelFile, PullError
from server.registry.gguf_header import CorruptHeader, Header, HeaderTooShort, parse_header
from server.registry.gguf_info import GGUFInfo, check_data_end, info_from_headers
from server.registry.sources.transport import check_url

log = logging.getLogger(__name__)

FIRST_REQUEST = 1 << 20
MAX_HEADER = 64 << 20  # far above any real header (a 256k vocabulary is ~10 MB)
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


@dataclass(frozen=True)
class RemoteFile:
    """One GGUF file (or split part) to read the header of."""

    url: str
    headers: Mapping[str, str] | None = None
    size: int | None = None  # when the listing already says


@dataclass(frozen=True)
class RemoteHeader:
    """Header facts of a model not in the store, and what reading them cost."""

    info: GGUFInfo
    source: str  # a short description of where the header came from
    files: list[str]
    bytes_read: int  # body bytes received over HTTP, all parts together


class RangeReader:
    """Reads headers with `client`; plain http only where `insecure` or loopback allows."""

    def __init__(self, client: httpx.Client, *, insecure: bool = False) -> None:
        self.client = client
        self.insecure = insecure
        self.bytes_read = 0

    def info(self, files: Sequence[RemoteFile], name: str) -> GGUFInfo:
        """Header facts of the model made of `files` (one file or the parts of a split).

        Raises PullError (HTTP, network, a server without the file), InvalidModelFile (not
        GGUF, or a header larger than MAX_HEADER).
        """
        parts = [self.header(file) for file in files]
        label = PurePosixPath(name)
        for (header, size), file in zip(parts, files, strict=True):
            check_data_end(PurePosixPath(file.url.split("?", 1)[0]), header, size)
        return info_from_headers(label, parts)

    def header(self, file: RemoteFile) -> tuple[Header, int]:
        """The parsed header of one remote file and the file's size."""
        buf = bytearray()
        size = file.size
        want = FIRST_REQUEST
        while True:
            more, total = self._get(file, len(buf), want)
            buf += more
            size = size or total
            try:
                header = parse_header(buf)
            except HeaderTooShort as short:
                if (size is not None and len(buf) >= size) or not more:
                    raise InvalidModelFile(
                        f"{file.url} ends inside its GGUF header ({len(buf)} bytes)"
                    ) from None
                want = max(short.needed, 2 * len(buf))
                if want > MAX_HEADER:
                    raise InvalidModelFile(
                        f"the GGUF header of {file.url} is larger than {MAX_HEADER >> 20} MiB"
                    ) from None
                continue
            except CorruptHeader as exc:
                raise InvalidModelFile(f"{file.url} is not a GGUF model: {exc}") from None
            if size is None:
                raise PullError(f"{file.url}: the server does not say how large the file is")
            log.debug("read %d header bytes of %s (%d bytes)", len(buf), file.url, size)
            return header, size

    def _get(self, file: RemoteFile, start: int, end: int) -> tuple[bytes, int | None]:
        """Bytes [start, end) of the file (fewer at its end) and the file's size if known."""
        check_url(file.url, insecure=self.insecure)
        headers = {
            **(file.headers or {}),
            "Range": f"bytes={start}-{end - 1}",
            "Accept-Encoding": "identity",
        }
        try:
            with self.client.stream("GET", file.url, headers=headers) as response:
                check_url(response.url, insecure=self.insecure)
                status = response.status_code
                if status == 416:
                    return b"", None
                if status == 404:
                    raise PullError(f"{file.url} was not found (HTTP 404)")
                if status in (401, 403):
                    raise PullError(
                        f"access to {file.url} was denied (HTTP {status}); the model may be "
                        "private or gated and need a token"
                    )
                if status not in (200, 206):
                    raise PullError(f"{file.url} answered HTTP {status}")
                skip, total = 0, None
                if status == 206:
                    match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
                    if match is None or int(match.group(1)) != start:
                        raise PullError(f"{file.url} answered another range than asked")
                    total = int(match.group(3)) if match.group(3).isdigit() else None
                else:  # the whole file: skip what we have, stop where we want to
                    skip = start
                    length = response.headers.get("Content-Length", "")
                    total = int(length) if length.isdigit() else None
                return self._read(response, skip, end - start), total
        except httpx.TransportError as exc:
            raise PullError(f"cannot reach {file.url}: {exc}") from None

    def _read(self, response: httpx.Response, skip: int, count: int) -> bytes:
        out = bytearray()
        for chunk in response.iter_raw(1 << 16):
            self.bytes_read += len(chunk)
            if skip:
                dropped = min(skip, len(chunk))
                chunk, skip = chunk[dropped:], skip - dropped
            out += chunk
            if len(out) >= count:
                break
        return bytes(out[:count])
