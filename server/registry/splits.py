"""Split GGUFs on disk: llama.cpp finds the parts by name, blobs are named by digest.

llama.cpp loads a split model from its first file and opens the others next to it under the
names `<prefix>-0000k-of-0000N.gguf`. The store keeps each part as an ordinary content-addressed
blob, so for loading we keep a directory of symbolic links with those names,
`<home>/splits/<key>/model-0000k-of-0000N.gguf`, made on demand and removed with the blobs.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

SPLITS_DIR = "splits"
SPLIT_NAME = re.compile(r"^(?P<prefix>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$", re.I)


def part_name(index: int, count: int) -> str:
    """`model-0000<index>-of-0000<count>.gguf` (1-based), as llama.cpp expects."""
    return f"model-{index:05d}-of-{count:05d}.gguf"


def link_split(splits_root: Path, parts: Sequence[Path]) -> Path:
    """The first file of a directory of links named as llama.cpp expects, made if missing.

    The directory name is derived from the part paths, so the same parts always share one.
    Raises OSError (e.g. the store is not writable).
    """
    if len(parts) < 2:
        raise ValueError("a split model has at least two parts")
    targets = [str(Path(p).absolute()) for p in parts]
    key = hashlib.sha256("\n".join(targets).encode()).hexdigest()[:32]
    directory = splits_root / key
    names = [part_name(i, len(parts)) for i in range(1, len(parts) + 1)]
    if _links_ok(directory, names, targets):
        return directory / names[0]
    splits_root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=splits_root, prefix=".tmp-"))
    try:
        for name, target in zip(names, targets, strict=True):
            os.symlink(target, scratch / name)
        shutil.rmtree(directory, ignore_errors=True)  # stale links from a moved store
        try:
            os.replace(scratch, directory)
        except OSError:  # another process made it meanwhile
            if not _links_ok(directory, names, targets):
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log.debug("linked %d split parts under %s", len(parts), directory)
    return directory / names[0]


def prune_split_links(splits_root: Path) -> None:
    """Remove link directories whose blobs are gone."""
    if not splits_root.is_dir():
        return
    for directory in splits_root.iterdir():
        if directory.name.startswith(".") or not directory.is_dir() or directory.is_symlink():
            continue  # another process's scratch directory, or not ours
        links = list(directory.iterdir())
        if not links or any(not link.exists() for link in links):
            with contextlib.suppress(OSError):
                shutil.rmtree(directory)


def _links_ok(directory: Path, names: list[str], targets: list[str]) -> bool:
    for name, target in zip(names, targets, strict=True):
        try:
            if os.readlink(directory / name) != target:
                return False
        except OSError:
            return False
    return True
