"""Streaming one blob over HTTP into the store: resumable (Range), retried, verified.

Bytes go into the blob's partial file (see partial.py). A dropped connection is retried from
where it stopped with `Range: bytes=<offset>-`; what an interrupted pull leaves is resumed by
the next pull the same way. The blob appears only once its size and sha256 check out.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from server.errors import PullError
from server.registry.blob_writer import BlobWriter, partial_key
from server.registry.sources.base import ProgressCallback, PullProgress
from server.registry.sources.transport import check_url

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes\s+\*/(\d+)")


@dataclass(frozen=True)
class BlobFetch:
    """One blob to download: where from, what it must hash to, how to show it."""

    url: str
    status: str  # progress status, e.g. "pulling 6a0746a1ec1a"
    digest: str | None = None  # `sha256:<hex>` when known in advance
    size: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    key: str | None = None  # partial-file key when the digest is not known in advance
    if_range: str | None = None  # ETag / Last-Modified that makes resuming that download safe

    @property
    def label(self) -> str:
        return self.digest or self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class FetchedBlob:
    """A blob now in the store."""

    digest: str
    size: int
    path: Path


class _Retry(Exception):
    """A failure worth another attempt (connection dropped, 5xx, server restarted a range)."""


class Downloader:
    """Fetches blobs with `client`, retrying `retries` times with a growing pause."""

    def __init__(
        self,
        client: httpx.Client,
        *,
        insecure: bool = False,
        retries: int = 4,
        backoff: float = 0.5,
    ) -> None:
        self.client = client
        self.insecure = insecure
        self.retries = retries
        self.backoff = backoff

    def fetch(
        self,
        blobs_dir: Path,
        job: BlobFetch,
        progress: ProgressCallback,
        *,
        validate: Callable[[Path], None] | None = None,
    ) -> FetchedBlob:
        """Download `job` into `blobs_dir` (or find it there) and return the stored blob.

        `validate` inspects the verified partial file before it becomes a blob (e.g. a GGUF
        header check); what it raises propagates after the partial file is deleted.
        Raises PullError (HTTP or network failure; the partial file is kept for a resume),
        ChecksumMismatch (size or digest differ; nothing is kept).
        """
        check_url(job.url, insecure=self.insecure)
        key = partial_key(job.digest) if job.digest is not None else job.key
        if key is None:
            raise ValueError("a download without a digest needs a partial-file key")

        def waiting() -> None:
            progress(PullProgress(job.status, 0, job.size, job.digest))

        with BlobWriter(
            blobs_dir, expected=job.digest, size=job.size, resume_key=key, on_wait=waiting
        ) as part:
            if part.present and job.digest is not None and part.final_path is not None:
                progress(PullProgress(job.status, job.size, job.size, job.digest))
                return FetchedBlob(job.digest, part.final_path.stat().st_size, part.final_path)
            if part.written and job.digest is None and job.if_range is None:
                part.restart()  # nothing can tell us the remote file is still the same one
            self._transfer(part, job, progress)
            digest = part.verify()
            if validate is not None:
                try:
                    validate(part.partial_path)
                except BaseException:
                    part.discard()
                    raise
            size = part.written
            return FetchedBlob(digest, size, part.commit())

    def _transfer(self, part: BlobWriter, job: BlobFetch, progress: ProgressCallback) -> None:
        failures = 0
        while True:
            if part.size is not None and part.written == part.size:
                return
            headers = {"Accept-Encoding": "identity", **job.headers}  # the bytes as stored
            if part.written:
                headers["Range"] = f"bytes={part.written}-"
                if job.if_range is not None:
                    headers["If-Range"] = job.if_range
                log.info("resuming %s at byte %d", job.label, part.written)
            progress(PullProgress(job.status, part.written, part.size, job.digest))
            try:
                with self.client.stream("GET", job.url, headers=headers) as response:
                    if self._consume(response, part, job, progress):
                        return
                raise _Retry("the connection closed before the whole blob arrived")
            except (httpx.TransportError, _Retry) as exc:
                failures += 1
                reason = " ".join(str(exc).split()) or type(exc).__name__
                if failures > self.retries:
                    total = f" of {part.size}" if part.size is not None else ""
                    raise PullError(
                        f"download of {job.label} failed after {part.written}{total} bytes "
                        f"({reason}); pull again to resume"
                    ) from None
                log.warning(
                    "download of %s interrupted at byte %d (%s); retrying",
                    job.label,
                    part.written,
                    reason,
                )
                time.sleep(self.backoff * failures)

    def _consume(
        self,
        response: httpx.Response,
        part: BlobWriter,
        job: BlobFetch,
        progress: ProgressCallback,
    ) -> bool:
        """Write the body of `response` into `part`; True when the blob is complete."""
        check_url(response.url, insecure=self.insecure)  # a redirect may not downgrade to http
        status = response.status_code
        if status == 206:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if match is None or int(match.group(1)) != part.written:
                part.restart()
                raise _Retry("the server answered a different range; starting over")
        elif status == 200:
            if part.written:
                log.info("the server sent the whole of %s; starting over", job.label)
                part.restart()
        elif status == 416:
            whole = _UNSATISFIED_RANGE.match(response.headers.get("Content-Range", ""))
            if whole is not None and int(whole.group(1)) == part.written and part.written:
                return True  # an earlier attempt already received every byte
            part.restart()
            raise _Retry("the server refused the range; starting over")
        elif status in _RETRY_STATUS:
            raise _Retry(f"HTTP {status}")
        else:
            raise PullError(_status_message(status, job))
        length = response.headers.get("Content-Length")
        total = part.size
        if total is None and length is not None and length.isdigit():
            total = part.written + int(length)
        for chunk in response.iter_bytes(_CHUNK):
            part.write(chunk)  # raises ChecksumMismatch if more bytes come than expected
            progress(PullProgress(job.status, part.written, total, job.digest))
        return part.size is None or part.written == part.size


def _status_message(status: int, job: BlobFetch) -> str:
    if status in (401, 403):
        return (
            f"access to {job.label} was denied (HTTP {status}); "
            "the model may be private or gated and need a token"
        )
    if status == 404:
        return f"{job.label} was not found at {job.url} (HTTP 404)"
    return f"fetching {job.label} from {job.url} failed with HTTP {status}"
