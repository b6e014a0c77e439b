"""Measurements kept on disk under `<cache_dir>/insight/`, so repeating a command is instant.

Keys are digests of everything a figure depends on (model file digest, text digest, window,
KV types, reference, ...), never of names: renaming a model keeps its figures, and a changed
file or text gets new ones. Files are written to a temporary name and renamed into place, so an
interrupted run leaves nothing half-written. Deleting the directory only costs time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from pydantic import BaseModel, ValidationError

from server.engine.logit_math import TopK
from server.insight.results import PerplexityResult

logger = logging.getLogger(__name__)

# Bump when what a key's figures mean changes, so old files are not read as new ones.
CACHE_VERSION = 1

M = TypeVar("M", bound=BaseModel)


def cache_key(**parts: object) -> str:
    """A stable digest of `parts` (JSON with sorted keys)."""
    blob = json.dumps({"v": CACHE_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class ReferenceLogits:
    """A reference model's top-k log-probabilities and NLL for the scored positions of a text."""

    model_digest: str
    tokens: np.ndarray[Any, np.dtype[np.int32]]  # the windows' tokens: another vocabulary shows
    chunks: int
    total_chunks: int  # windows in the whole text
    per_chunk: int  # scored positions per window
    top: TopK
    nll: np.ndarray[Any, np.dtype[np.float64]]

    def chunk(self, index: int) -> TopK:
        """The reference for window `index`."""
        rows = slice(index * self.per_chunk, (index + 1) * self.per_chunk)
        return TopK(self.top.ids[rows], self.top.logprobs[rows])


class InsightCache:
    """Results (JSON), reference logits (npz) and speed figures (JSON) under one directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, kind: str, key: str, suffix: str) -> Path:
        return self.root / kind / f"{key}{suffix}"

    def _write(self, path: Path, write: Any) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                write(handle)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load_model(self, kind: str, key: str, cls: type[M]) -> M | None:
        """A cached pydantic model, or None (absent or unreadable: measured again)."""
        path = self._path(kind, key, ".json")
        try:
            return cls.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValidationError) as exc:
            logger.warning("ignoring unreadable cache file %s: %s", path, exc)
            return None

    def save_model(self, kind: str, key: str, value: BaseModel) -> None:
        data = value.model_dump_json(indent=1).encode()
        self._write(self._path(kind, key, ".json"), lambda handle: handle.write(data))

    def results(self) -> Iterator[PerplexityResult]:
        """Every cached perplexity result (for recommendations from measured figures)."""
        folder = self.root / "results"
        if not folder.is_dir():
            return
        for path in sorted(folder.glob("*.json")):
            result = self.load_model("results", path.stem, PerplexityResult)
            if result is not None:
                yield result

    def load_reference(self, key: str) -> ReferenceLogits | None:
        path = self._path("reference", key, ".npz")
        try:
            with np.load(path) as data:
                meta = json.loads(str(data["meta"]))
                return ReferenceLogits(
                    model_digest=meta["model_digest"],
                    tokens=data["tokens"],
                    chunks=int(meta["chunks"]),
                    total_chunks=int(meta["total_chunks"]),
                    per_chunk=int(meta["per_chunk"]),
                    top=TopK(data["ids"], data["logprobs"]),
                    nll=data["nll"],
                )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError) as exc:
            logger.warning("ignoring unreadable reference file %s: %s", path, exc)
            return None

    def save_reference(self, key: str, ref: ReferenceLogits) -> None:
        meta = json.dumps(
            {
                "model_digest": ref.model_digest,
                "chunks": ref.chunks,
                "total_chunks": ref.total_chunks,
                "per_chunk": ref.per_chunk,
            }
        )

        def write(handle: Any) -> None:
            np.savez(
                handle,
                meta=np.array(meta),
                tokens=ref.tokens,
                ids=ref.top.ids,
                logprobs=ref.top.logprobs,
                nll=ref.nll,
            )

        self._write(self._path("reference", key, ".npz"), write)
