"""Content-addressed blobs: `blobs/sha256-<hex>`, written through a verifying BlobWriter."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from server.errors import ChecksumMismatch
from server.registry.files import FILE_MODE, ensure_within, fsync_dir
from server.registry.manifest import is_digest

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = "-partial"


def digest_hex(digest: str) -> str:
    """The 64 hex characters of `sha256:<hex>` or `sha256-<hex>`.

    Raises ValueError for anything else, before the digest can become part of a path.
    """
    if not is_digest(digest):
        raise ValueError(f"invalid digest {digest!r}; expected sha256:<64 lower-case hex>")
    return digest[7:]


def blob_path(blobs_dir: Path, digest: str) -> Path:
    """`<blobs_dir>/sha256-<hex>` for a validated digest. Raises ValueError, InvalidName."""
    return ensure_within(blobs_dir, blobs_dir / f"sha256-{digest_hex(digest)}")


class BlobWriter:
    """Stream bytes into a partial file beside the blobs, hashing them; commit on a clean exit.

    `verify()` (called by `__exit__` if not before) checks the size and digest and raises
    ChecksumMismatch on a difference; any exception inside the block, or a failed check,
    deletes the partial file, so a blob either appears whole and verified or not at all.
    Verifying inside the block lets a caller inspect `partial_path` before it becomes a blob.
    """

    def __init__(
        self, blobs_dir: Path, *, expected: str | None = None, size: int | None = None
    ) -> None:
        self._dir = blobs_dir
        self._expected = digest_hex(expected) if expected is not None else None
        self._size = size
        self._hash = hashlib.sha256()
        self._file: BinaryIO | None = None
        self._partial: Path | None = None
        self._digest: str | None = None
        self.written = 0

    def __enter__(self) -> BlobWriter:
        self._dir.mkdir(parents=True, exist_ok=True)
        prefix = f"sha256-{self._expected}-" if self._expected else "incoming-"
        fd, name = tempfile.mkstemp(dir=self._dir, prefix=prefix, suffix=PARTIAL_SUFFIX)
        self._partial = Path(name)
        self._file = os.fdopen(fd, "wb")
        return self

    @property
    def partial_path(self) -> Path:
        """The file being written (valid inside the `with` block)."""
        if self._partial is None:
            raise RuntimeError("BlobWriter is not open")
        return self._partial

    @property
    def digest(self) -> str:
        """`sha256:<hex>` of what was written (after `verify()`)."""
        if self._digest is None:
            raise RuntimeError("BlobWriter.verify() has not run")
        return self._digest

    @property
    def path(self) -> Path:
        """Where the blob lives once committed."""
        return blob_path(self._dir, self.digest)

    def write(self, data: bytes) -> None:
        """Append `data`. Raises OSError."""
        if self._file is None:
            raise RuntimeError("BlobWriter is not open for writing")
        self._file.write(data)
        self._hash.update(data)
        self.written += len(data)

    def verify(self) -> str:
        """Flush to disk and check size and digest; return the digest.

        Raises ChecksumMismatch when the bytes differ from what was expected.
        """
        if self._digest is not None:
            return self._digest
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
        actual = self._hash.hexdigest()
        if self._size is not None and self.written != self._size:
            raise ChecksumMismatch(f"expected {self._size} bytes but received {self.written}")
        if self._expected is not None and actual != self._expected:
            raise ChecksumMismatch(
                f"sha256 mismatch: expected {self._expected}, got {actual}; nothing was stored"
            )
        self._digest = f"sha256:{actual}"
        return self._digest

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                self.verify()
                self._commit()
        finally:
            self._discard()

    def _commit(self) -> None:
        final = self.path
        if final.exists():  # same content already stored (content addressing)
            log.debug("blob %s already present", final.name)
            return
        os.chmod(self.partial_path, FILE_MODE)  # mkstemp makes 0600; blobs are world-readable
        os.replace(self.partial_path, final)
        fsync_dir(self._dir)

    def _discard(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._partial is not None:
            with contextlib.suppress(FileNotFoundError):
                self._partial.unlink()


def adopt_blob(blobs_dir: Path, path: Path) -> tuple[str, int]:
    """Hash a file on the store's filesystem and rename it into place as a blob.

    Returns (`sha256:<hex>`, size). The file is gone afterwards either way: renamed, or
    deleted when the same content was already stored. Raises OSError.
    """
    with path.open("rb") as handle:
        digest = f"sha256:{hashlib.file_digest(handle, 'sha256').hexdigest()}"
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
    final = blob_path(blobs_dir, digest)
    blobs_dir.mkdir(parents=True, exist_ok=True)
    if final.exists():
        path.unlink()
    else:
        os.chmod(path, FILE_MODE)
        os.replace(path, final)
        fsync_dir(blobs_dir)
    return digest, size
