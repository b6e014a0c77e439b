"""The one way bytes become a blob: streamed into a partial file, hashed, verified, renamed.

A `BlobWriter` writes `blobs/<name>-partial` while hashing; the partial becomes
`blobs/sha256-<hex>` only after its size and digest are checked, so a blob is always whole and
verified. Two kinds of partial file:

- private (the default): a fresh temporary name; anything but a commit deletes it.
- resumable (`resume_key`): a predictable name, so a later pull finds what an interrupted one
  left and resumes at its end. An exclusive `flock` keeps two writers of the same blob (two
  processes or threads) from writing into it at once: the second waits, then finds the blob.
  On an error the partial stays for the next attempt, unless its bytes are proven wrong.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import tempfile
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
    """The resume key of a blob with a known digest: `sha256-<hex>`. Raises ValueError."""
    return f"sha256-{digest_hex(digest)}"


class BlobWriter:
    """Stream bytes into a partial file and commit them as a verified blob; a context manager.

    On entry the partial is opened (for a resumable one: locked, waiting for another writer if
    need be); `present` says the finished blob already exists, `written` how many bytes an
    earlier attempt left (already hashed). A clean exit verifies and commits what was not
    committed yet; an exception deletes a private partial and keeps a resumable one.
    Raises ChecksumMismatch (from `write`, `verify` or the exit) when the bytes are not the
    blob that was expected; the partial is deleted then.
    """

    def __init__(
        self,
        blobs_dir: Path,
        *,
        expected: str | None = None,
        size: int | None = None,
        resume_key: str | None = None,
        on_wait: Callable[[], None] | None = None,
    ) -> None:
        self._dir = blobs_dir
        self.expected = f"sha256:{digest_hex(expected)}" if expected is not None else None
        self.size = size
        self._resume_key = resume_key
        self._on_wait = on_wait
        self._file: BinaryIO | None = None
        self._partial: Path | None = None
        self._hash = hashlib.sha256()
        self._digest: str | None = None
        self._finished = False  # committed, discarded, or the blob was already there
        self.written = 0
        self.present = False

    # ---- opening and closing --------------------------------------------------------------

    def __enter__(self) -> BlobWriter:
        self._dir.mkdir(parents=True, exist_ok=True)
        if self._resume_key is None:
            prefix = f"{partial_key(self.expected)}-" if self.expected else "incoming-"
            fd, name = tempfile.mkstemp(dir=self._dir, prefix=prefix, suffix=PARTIAL_SUFFIX)
            self._partial = Path(name)
            self._file = os.fdopen(fd, "r+b")
            return self
        self._partial = ensure_within(self._dir, self._dir / f"{self._resume_key}{PARTIAL_SUFFIX}")
        self._file = self._open_locked(self._partial)
        final = self.final_path
        if final is not None and final.is_file():
            self.present = True
            self.discard()
            return self
        self.written = os.fstat(self._file.fileno()).st_size
        if self.size is not None and self.written > self.size:
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
        try:
            if exc_type is None and not self._finished:
                self.commit()
        finally:
            if self._resume_key is None and not self._finished:
                self.discard()  # a private partial never outlives its writer
            self._close()  # closing the descriptor releases the lock

    # ---- what is being written --------------------------------------------------------------

    @property
    def partial_path(self) -> Path:
        """The file being written (valid inside the `with` block)."""
        if self._partial is None:
            raise RuntimeError("BlobWriter is not open")
        return self._partial

    @property
    def final_path(self) -> Path | None:
        """Where the blob lives when its digest is known in advance."""
        return blob_path(self._dir, self.expected) if self.expected is not None else None

    @property
    def digest(self) -> str:
        """`sha256:<hex>` of what was written (after `verify()`)."""
        if self._digest is None:
            raise RuntimeError("BlobWriter.verify() has not run")
        return self._digest

    @property
    def path(self) -> Path:
        """Where the blob lives once committed (after `verify()`)."""
        return blob_path(self._dir, self.digest)

    # ---- writing ----------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Append `data`. Raises OSError, or ChecksumMismatch when more bytes than the expected
        size arrive (the partial is deleted: it cannot be the blob we asked for)."""
        if self.size is not None and self.written + len(data) > self.size:
            message = (
                f"more than the expected {self.size} bytes arrived for {self._label}; "
                "the partial file was deleted"
            )
            self.discard()
            raise ChecksumMismatch(message)
        self._handle().write(data)
        self._hash.update(data)
        self.written += len(data)

    def restart(self) -> None:
        """Throw away what is there and start again from byte 0."""
        handle = self._handle()
        handle.seek(0)
        handle.truncate(0)
        self._hash = hashlib.sha256()
        self._digest = None
        self.written = 0

    def verify(self) -> str:
        """Flush to disk and check the size and digest; return `sha256:<hex>`.

        Raises ChecksumMismatch (after deleting the partial file) on any difference.
        """
        if self._digest is not None:
            return self._digest
        handle = self._handle()
        handle.flush()
        os.fsync(handle.fileno())
        actual = f"sha256:{self._hash.hexdigest()}"
        if self.size is not None and self.written != self.size:
            message = (
                f"expected {self.size} bytes for {self._label} but received {self.written}; "
                "the partial file was deleted"
            )
            self.discard()
            raise ChecksumMismatch(message)
        if self.expected is not None and actual != self.expected:
            self.discard()
            raise ChecksumMismatch(
                f"sha256 mismatch for blob {self.expected}: the bytes hash to {actual}; "
                "the partial file was deleted and nothing was stored"
            )
        self._digest = actual
        return actual

    def commit(self) -> Path:
        """Verify, then move the partial into place as its blob; return the blob's path."""
        final = blob_path(self._dir, self.verify())
        if final.exists():  # the same content is already stored (content addressing)
            log.debug("blob %s already present", final.name)
            self._unlink_partial()
        else:
            os.chmod(self.partial_path, FILE_MODE)  # mkstemp makes 0600; blobs are world-readable
            os.replace(self.partial_path, final)
            fsync_dir(self._dir)
        self._finished = True
        return final

    def discard(self) -> None:
        """Delete the partial file (safe: it is private, or the lock on it is ours)."""
        self._unlink_partial()
        self._finished = True
        self._hash = hashlib.sha256()
        self.written = 0

    # ---- internals --------------------------------------------------------------------------

    @property
    def _label(self) -> str:
        return self.expected or (self._partial.name if self._partial else "the blob")

    def _unlink_partial(self) -> None:
        if self._partial is not None:
            with contextlib.suppress(FileNotFoundError):
                self._partial.unlink()

    def _handle(self) -> BinaryIO:
        if self._file is None:
            raise RuntimeError("BlobWriter is not open for writing")
        return self._file

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _open_locked(self, path: Path) -> BinaryIO:
        """Open (creating) and lock the partial file.

        The lock is on the open file, so after waiting we check that the path still names the
        file we locked: the previous holder may have renamed it into a blob or deleted it.
        """
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if self._on_wait is not None:
                    self._on_wait()
                log.info("waiting for another pull writing %s", path.name)
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
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
        remaining = self.written
        while remaining > 0:
            chunk = handle.read(min(_CHUNK, remaining))
            if not chunk:
                break
            self._hash.update(chunk)
            remaining -= len(chunk)
        handle.seek(0, os.SEEK_END)
