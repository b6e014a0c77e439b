"""Resumable partial blobs: `blobs/<key>-partial`, locked so one writer at a time works on it.

A download streams into a partial file with a predictable name, so a later pull finds what an
interrupted one left and resumes from its end. An exclusive `flock` on the partial file keeps two
pulls of the same blob (two processes or two threads) from writing into it at once: the second
waits, then finds the finished blob. The partial becomes a blob only after its size and sha256
are checked; a mismatch deletes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from server.errors import ChecksumMismatch
from server.registry.blobs import PARTIAL_SUFFIX, blob_path, digest_hex
from server.registry.files import FILE_MODE, ensure_within, fsync_dir

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


def partial_key(digest: str) -> str:
    """The partial-file key of a blob with a known digest: `sha256-<hex>`. Raises ValueError."""
    return f"sha256-{digest_hex(digest)}"


class PartialBlob:
    """An exclusively locked partial file for one blob; use as a context manager.

    On entry the lock is taken (waiting for another writer if need be), `present` says whether
    the finished blob already exists, and `offset` is how many bytes an earlier attempt left.
    On exit the lock is released; the partial file stays for a later resume unless it was
    committed or discarded.
    """

    def __init__(
        self,
        blobs_dir: Path,
        key: str,
        *,
        expected: str | None = None,
        size: int | None = None,
        on_wait: Callable[[], None] | None = None,
    ) -> None:
        self._dir = blobs_dir
        self.path = ensure_within(blobs_dir, blobs_dir / f"{key}{PARTIAL_SUFFIX}")
        self.expected = f"sha256:{digest_hex(expected)}" if expected is not None else None
        self.size = size
        self._on_wait = on_wait
        self._file: BinaryIO | None = None
        self._hash = hashlib.sha256()
        self.offset = 0
        self.present = False

    @property
    def final_path(self) -> Path | None:
        """Where the blob lives when its digest is known in advance."""
        return blob_path(self._dir, self.expected) if self.expected is not None else None

    def __enter__(self) -> PartialBlob:
        self._dir.mkdir(parents=True, exist_ok=True)
        self._file = self._open_locked()
        final = self.final_path
        if final is not None and final.is_file():
            self.present = True
            self.discard()
            return self
        self.offset = os.fstat(self._file.fileno()).st_size
        if self.size is not None and self.offset > self.size:
            self.restart()
        else:
            self._hash_prefix()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._file is not None:
            self._file.close()  # closing the descriptor releases the lock
            self._file = None

    def restart(self) -> None:
        """Throw away what is there and start from byte 0."""
        handle = self._handle()
        handle.seek(0)
        handle.truncate(0)
        self._hash = hashlib.sha256()
        self.offset = 0

    def write(self, data: bytes) -> None:
        """Append `data`. Raises OSError, or ChecksumMismatch when more bytes than the expected
        size arrive (the partial is deleted: it cannot be the blob we asked for)."""
        if self.size is not None and self.offset + len(data) > self.size:
            self.discard()
            raise ChecksumMismatch(
                f"the server sent more than the expected {self.size} bytes for "
                f"{self.expected or self.path.name}; the partial download was deleted"
            )
        self._handle().write(data)
        self._hash.update(data)
        self.offset += len(data)

    def verify(self) -> str:
        """Flush to disk and check the size and digest; return `sha256:<hex>`.

        Raises ChecksumMismatch (after deleting the partial file) on any difference.
        """
        handle = self._handle()
        handle.flush()
        os.fsync(handle.fileno())
        actual = f"sha256:{self._hash.hexdigest()}"
        if self.size is not None and self.offset != self.size:
            self.discard()
            raise ChecksumMismatch(
                f"expected {self.size} bytes for {self.expected or self.path.name} "
                f"but received {self.offset}; the partial download was deleted"
            )
        if self.expected is not None and actual != self.expected:
            self.discard()
            raise ChecksumMismatch(
                f"sha256 mismatch for blob {self.expected}: the download hashes to {actual}; "
                "the partial download was deleted and nothing was stored"
            )
        return actual

    def commit(self, digest: str) -> Path:
        """Move the verified partial into place as the blob `digest`; return its path."""
        final = blob_path(self._dir, digest)
        if final.exists():  # same content stored meanwhile (content addressing)
            self.discard()
            return final
        os.chmod(self.path, FILE_MODE)
        os.replace(self.path, final)
        fsync_dir(self._dir)
        return final

    def discard(self) -> None:
        """Delete the partial file (safe: the lock is ours, so no one else writes it)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.offset = 0
        self._hash = hashlib.sha256()

    def _handle(self) -> BinaryIO:
        if self._file is None:
            raise RuntimeError("PartialBlob is not open")
        return self._file

    def _open_locked(self) -> BinaryIO:
        """Open (creating) and lock the partial file.

        The lock is on the open file, so after waiting we check that the path still names the
        file we locked: the previous holder may have renamed it into a blob or deleted it.
        """
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if self._on_wait is not None:
                    self._on_wait()
                log.info("waiting for another pull writing %s", self.path.name)
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                handle = os.fdopen(fd, "r+b")
                handle.seek(0, os.SEEK_END)
                return handle
            os.close(fd)

    def _hash_prefix(self) -> None:
        """Hash the bytes an earlier attempt left, so the digest covers the whole file."""
        handle = self._handle()
        handle.seek(0)
        remaining = self.offset
        while remaining > 0:
            chunk = handle.read(min(_CHUNK, remaining))
            if not chunk:
                break
            self._hash.update(chunk)
            remaining -= len(chunk)
        handle.seek(0, os.SEEK_END)
