"""A GGUF file at a plain URL: `gguf-serve pull https://host/path/model.gguf --as name:tag`.

Without a digest from the user there is nothing to check the bytes against but the GGUF header
and the length the server announced. A resume is safe only when the server names the version
of the file it sends (a strong ETag or Last-Modified, sent back as If-Range), so the partial
file is keyed by URL and that validator.
"""

from __future__ import annotations

import hashlib
import logging

import httpx

from server.errors import PullError
from server.registry.blobs import PARTIAL_SUFFIX
from server.registry.manifest import SourceInfo
from server.registry.sources.base import ProgressCallback, PullProgress
from server.registry.sources.download import BlobFetch, Downloader
from server.registry.sources.gguf_blobs import fetch_gguf
from server.registry.sources.header import RangeReader, RemoteFile, RemoteHeader
from server.registry.sources.transport import check_url, new_client
from server.registry.store import ModelRecord, Store
from server.registry.tags import ModelName

log = logging.getLogger(__name__)


def is_url(text: str) -> bool:
    """Whether `text` is an http(s) URL rather than a model name."""
    lowered = text.lower()
    return lowered.startswith(("http://", "https://"))


class UrlSource:
    """One GGUF file behind an http(s) URL, optionally with the sha256 it must have."""

    def __init__(
        self,
        url: str,
        *,
        digest: str | None = None,
        insecure: bool = False,
        retries: int = 4,
        backoff: float = 0.5,
    ) -> None:
        self.url = str(check_url(url, insecure=insecure))
        self.digest = digest
        self.insecure = insecure
        self.retries = retries
        self.backoff = backoff

    def describe(self) -> str:
        return f"{self.url} (URL)"

    def pull(self, store: Store, name: ModelName, progress: ProgressCallback) -> ModelRecord:
        """Download the file, check it is GGUF (and its digest, if given), store it as `name`.

        Raises PullError, ChecksumMismatch, InvalidModelFile.
        """
        filename = self.url.rsplit("/", 1)[-1].split("?", 1)[0] or "model.gguf"
        status = f"pulling {filename}"
        progress(PullProgress(status))
        with new_client() as client:
            size, validator = self._probe(client)
            url_key = f"url-{_short_hash(self.url)}"
            key = f"{url_key}-{_short_hash(validator or '')}"
            _drop_stale_partials(store, url_key, keep=key)
            job = BlobFetch(
                url=self.url,
                status=status,
                digest=self.digest,
                size=size,
                key=key,
                if_range=validator,
            )
            downloader = Downloader(
                client, insecure=self.insecure, retries=self.retries, backoff=self.backoff
            )
            models, _, info = fetch_gguf(store, downloader, [job], progress)
        progress(PullProgress("verifying sha256 digest"))
        source = SourceInfo.model_validate({"type": "url", "url": self.url})
        progress(PullProgress("writing manifest"))
        record = store.add_model(name, models[0], info, source)
        progress(PullProgress("success"))
        return record

    def read_header(self) -> RemoteHeader:
        """The GGUF header of the file, read with HTTP ranges. Raises PullError,
        InvalidModelFile."""
        with new_client() as client:
            reader = RangeReader(client, insecure=self.insecure)
            info = reader.info([RemoteFile(self.url)], self.url.rsplit("/", 1)[-1])
        return RemoteHeader(info, self.describe(), [self.url], reader.bytes_read)

    def _probe(self, client: httpx.Client) -> tuple[int | None, str | None]:
        """Size and version validator from a HEAD request; (None, None) when HEAD fails."""
        try:
            response = client.head(self.url, headers={"Accept-Encoding": "identity"})
        except httpx.TransportError as exc:
            raise PullError(f"cannot reach {self.url}: {exc}") from None
        check_url(response.url, insecure=self.insecure)
        if response.status_code == 404:
            raise PullError(f"{self.url} was not found (HTTP 404)")
        if response.status_code != 200:
            log.info(
                "HEAD %s answered %d; downloading without resume", self.url, response.status_code
            )
            return None, None
        length = response.headers.get("Content-Length", "")
        size = int(length) if length.isdigit() else None
        etag = response.headers.get("ETag")
        validator = etag if etag and not etag.startswith("W/") else None
        return size, validator or response.headers.get("Last-Modified")


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _drop_stale_partials(store: Store, url_key: str, *, keep: str) -> None:
    """Partial files of other versions of this URL can never be resumed: delete them."""
    if not store.blobs_dir.is_dir():
        return
    for path in store.blobs_dir.glob(f"{url_key}-*{PARTIAL_SUFFIX}"):
        if path.name != f"{keep}{PARTIAL_SUFFIX}":
            log.info("removing %s: the file at that URL has changed", path.name)
            path.unlink(missing_ok=True)
