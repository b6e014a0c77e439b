"""Content-addressed blobs: `blobs/sha256-<hex>` paths, digests, adopting a finished file.

Bytes streamed into the store go through `blob_writer.BlobWriter`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

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
