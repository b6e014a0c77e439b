"""The on-disk model store, in Ollama's layout.

    <root>/manifests/<host>/<namespace>/<model>/<tag>   JSON manifest (see manifest.py)
    <root>/blobs/sha256-<hex>                           content-addressed config and layers

Every write is atomic (temp file, fsync, rename), so a crash leaves the old state or the new one;
a model is listed only when its manifest and all its blobs are present. Names are matched
case-insensitively and keep the case they were stored with.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from server.errors import GGUFServeError, InvalidRequest, ModelNotFound, PullError
from server.registry.blob_writer import BlobWriter
from server.registry.blobs import adopt_blob, blob_path, digest_hex
from server.registry.files import atomic_write, ensure_within, fsync_dir
from server.registry.gguf_info import GGUFInfo, check_header, read_gguf_info
from server.registry.manifest import (
    CONFIG_MEDIA_TYPE,
    Layer,
    Manifest,
    ModelConfig,
    SourceInfo,
    layer_media_type,
)
from server.registry.splits import SPLITS_DIR, prune_split_links
from server.registry.tags import ModelName, name_from_parts, parse_name

log = logging.getLogger(__name__)

_COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class ModelRecord:
    """One complete model in the store."""

    name: ModelName
    digest: str  # hex sha256 of the manifest bytes: the model's ID, as in Ollama's /api/tags
    size: int
    modified_at: datetime
    manifest: Manifest
    config: ModelConfig
    manifest_path: Path
    model_path: Path  # the GGUF blob (the first part of a split GGUF)
    model_digest: str  # `sha256:<hex>` of the GGUF blob
    model_paths: tuple[Path, ...] = ()  # every model blob in order: the parts of a split GGUF
    from_ollama: bool = False  # listed from Ollama's own store (read-only to us)

    @property
    def is_split(self) -> bool:
        """Whether the GGUF comes in several parts (`-00001-of-0000N`)."""
        return len(self.model_paths) > 1

    @property
    def short_id(self) -> str:
        """The first 12 hex digits of the ID, as `ollama list` prints them."""
        return self.digest[:12]


class _Incomplete(Exception):
    """A manifest that cannot be served: unreadable, no model layer, or a blob is missing."""


NameLike = str | ModelName


def _as_name(name: NameLike) -> ModelName:
    return name if isinstance(name, ModelName) else parse_name(name)


class Store:
    """Manifests and blobs under one root directory (the `home` setting).

    `ollama=True` opens Ollama's own store: it is only read (every write raises InvalidRequest)
    and its records are flagged `from_ollama`.
    """

    def __init__(self, root: str | Path, *, ollama: bool = False) -> None:
        # Absolute, so the paths handed to the engine do not depend on the working directory.
        self.root = Path(root).expanduser().absolute()
        self.manifests_dir = self.root / "manifests"
        self.blobs_dir = self.root / "blobs"
        self.read_only = ollama

    def _writable(self) -> None:
        if self.read_only:
            raise InvalidRequest(
                f"{self.root} is Ollama's model store; gguf-serve never changes it "
                "(use the ollama command for that)"
            )

    # --- blobs ----------------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        """Path of the blob `digest`. Raises ValueError for a malformed digest."""
        return blob_path(self.blobs_dir, digest)

    def blob_writer(self, *, expected: str | None = None, size: int | None = None) -> BlobWriter:
        """A BlobWriter into this store (see BlobWriter for what it raises)."""
        self._writable()
        return BlobWriter(self.blobs_dir, expected=expected, size=size)

    def write_blob(self, data: bytes, media_type: str) -> Layer:
        """Store `data` as a blob and return the layer describing it. Raises OSError."""
        with self.blob_writer() as writer:
            writer.write(data)
        return Layer.model_validate(
            {"mediaType": media_type, "digest": writer.digest, "size": writer.written}
        )

    @contextlib.contextmanager
    def temp_dir(self) -> Iterator[Path]:
        """A scratch directory inside the store (same filesystem), removed afterwards."""
        self._writable()
        self.root.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(dir=self.root, prefix=".scratch-"))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    # --- reading --------------------------------------------------------------------------------

    def list(self) -> list[ModelRecord]:
        """Every complete model, newest first. Incomplete or unreadable manifests are skipped."""
        records = []
        for path in self._manifest_files():
            try:
                records.append(self._load(path))
            except (_Incomplete, GGUFServeError) as exc:  # e.g. a blob symlinked out of the store
                log.warning("skipping %s: %s", path.relative_to(self.manifests_dir), exc)
        records.sort(key=lambda r: r.modified_at, reverse=True)
        return records

    def find(self, name: NameLike) -> ModelRecord | None:
        """The model called `name` (any case), or None. Raises InvalidName."""
        path = self._find_manifest(_as_name(name))
        if path is None:
            return None
        try:
            return self._load(path)
        except _Incomplete as exc:
            log.warning("model %s is unusable: %s", _as_name(name), exc)
            return None

    def get(self, name: NameLike) -> ModelRecord:
        """The model called `name` (any case).

        Raises InvalidName, or ModelNotFound when it is absent or incomplete.
        """
        parsed = _as_name(name)
        path = self._find_manifest(parsed)
        if path is None:
            raise ModelNotFound(f"model '{parsed}' not found, try pulling it first")
        try:
            return self._load(path)
        except _Incomplete as exc:
            raise ModelNotFound(f"model '{parsed}' is incomplete ({exc}); pull it again") from None

    def config(self, manifest: Manifest) -> ModelConfig:
        """The parsed config blob of `manifest`. Raises OSError, ValidationError."""
        return ModelConfig.model_validate_json(self.blob_path(manifest.config.digest).read_bytes())

    # --- writing --------------------------------------------------------------------------------

    def add_model(
        self,
        name: NameLike,
        model_layer: Layer,
        info: GGUFInfo,
        source: SourceInfo,
        extra_layers: tuple[Layer, ...] = (),
        *,
        config_extra: dict[str, Any] | None = None,
    ) -> ModelRecord:
        """Write the config blob and the manifest for blobs already in the store.

        `extra_layers` follow the model layer (further parts of a split GGUF first, then
        template, params, ...); `config_extra` are fields kept in the config blob besides ours.
        An existing manifest with the same name (any case) is replaced, keeping its stored case.
        Raises InvalidName, InvalidRequest (read-only store), PullError if a blob vanished
        meanwhile, OSError.
        """
        self._writable()
        parsed = _as_name(name)
        config = ModelConfig.from_info(info, source, config_extra)
        config_layer = self.write_blob(config.to_bytes(), CONFIG_MEDIA_TYPE)
        manifest = Manifest(config=config_layer, layers=[model_layer, *extra_layers])
        with self._lock():
            for layer in manifest.blobs:
                if not self.blob_path(layer.digest).is_file():
                    raise PullError(
                        f"blob {layer.digest} disappeared while storing '{parsed}'; retry"
                    )
            target = self._find_manifest(parsed) or self._manifest_path(parsed)
            data = manifest.to_bytes()
            atomic_write(target, data)
        log.info("stored %s (%s)", parsed, hashlib.sha256(data).hexdigest()[:12])
        return self.get(parsed)

    def import_file(
        self, path: str | Path, name: NameLike, source: SourceInfo | None = None
    ) -> ModelRecord:
        """Copy a local GGUF file into the store under `name`.

        The copy is validated before it becomes a blob. Raises InvalidName, InvalidModelFile,
        InvalidRequest (read-only store), OSError.
        """
        self._writable()
        parsed = _as_name(name)
        file = Path(path)
        check_header(file)  # cheap refusal before copying a large non-GGUF file
        with self.blob_writer() as writer, file.open("rb") as handle:
            while chunk := handle.read(_COPY_CHUNK):
                writer.write(chunk)
            writer.verify()
            info = read_gguf_info(writer.partial_path, label=file)  # errors name the user's file
        layer = Layer.model_validate(
            {
                "mediaType": layer_media_type("model"),
                "digest": writer.digest,
                "size": writer.written,
            }
        )
        origin = source or SourceInfo(type="file", path=str(file.resolve()))
        return self.add_model(parsed, layer, info, origin)

    def adopt_file(
        self,
        path: Path,
        name: NameLike,
        source: SourceInfo,
        extra_layers: tuple[Layer, ...] = (),
    ) -> ModelRecord:
        """Move a GGUF file written inside this store (e.g. in `temp_dir()`) in as a model.

        A rename, not a copy. Raises InvalidName, InvalidModelFile, InvalidRequest, OSError.
        """
        self._writable()
        parsed = _as_name(name)
        info = read_gguf_info(path)
        digest, size = adopt_blob(self.blobs_dir, path)
        layer = Layer.model_validate(
            {"mediaType": layer_media_type("model"), "digest": digest, "size": size}
        )
        return self.add_model(parsed, layer, info, source, extra_layers)

    def copy(self, src: NameLike, dst: NameLike) -> ModelRecord:
        """Give the model `src` a second name `dst` (same manifest bytes, so the same ID).

        Raises InvalidName, ModelNotFound, InvalidRequest (read-only store), OSError.
        """
        self._writable()
        record = self.get(src)
        target_name = _as_name(dst)
        data = record.manifest_path.read_bytes()
        with self._lock():
            target = self._find_manifest(target_name) or self._manifest_path(target_name)
            atomic_write(target, data)
        return self.get(target_name)

    def remove(self, name: NameLike) -> ModelName:
        """Delete the manifest of `name`, then its blobs that no remaining manifest uses.

        Returns the name as it was stored. Raises InvalidName, ModelNotFound,
        InvalidRequest (read-only store), OSError.
        """
        self._writable()
        parsed = _as_name(name)
        with self._lock():
            path = self._find_manifest(parsed)
            if path is None:
                raise ModelNotFound(f"model '{parsed}' not found")
            stored = self._name_of(path)
            try:
                blobs = [
                    layer.digest for layer in Manifest.model_validate_json(path.read_bytes()).blobs
                ]
            except ValidationError:
                blobs = []  # a corrupt manifest: remove it, keep blobs we cannot attribute
            path.unlink()
            fsync_dir(path.parent)
            self._prune_dirs(path.parent)
            self._delete_unreferenced(blobs)
        return stored

    def prune_blobs(self, digests: Iterable[str]) -> None:
        """Delete those of `digests` that no manifest uses (what a failed pull left behind)."""
        self._writable()
        with self._lock():
            self._delete_unreferenced(digests)

    # --- internals ------------------------------------------------------------------------------

    def _manifest_path(self, name: ModelName) -> Path:
        return ensure_within(self.manifests_dir, self.manifests_dir.joinpath(*name.parts))

    def _find_manifest(self, name: ModelName) -> Path | None:
        """The manifest file whose path parts equal `name`'s ignoring case."""
        directory = self.manifests_dir
        for part in name.parts:
            match = _match_entry(directory, part)
            if match is None:
                return None
            directory = match
        if not directory.is_file():
            return None
        return ensure_within(self.manifests_dir, directory)

    def _manifest_files(self) -> Iterator[Path]:
        """Manifest files exactly four valid parts deep; temp files and strays are ignored."""
        if not self.manifests_dir.is_dir():
            return
        for path in sorted(self.manifests_dir.glob("*/*/*/*")):
            if not path.is_file():
                continue
            try:
                self._name_of(path)
                ensure_within(self.manifests_dir, path)  # a symlinked directory may point away
            except GGUFServeError:
                continue
            yield path

    def _name_of(self, path: Path) -> ModelName:
        host, namespace, model, tag = path.relative_to(self.manifests_dir).parts
        return name_from_parts(host, namespace, model, tag)

    def _load(self, path: Path) -> ModelRecord:
        try:
            data = path.read_bytes()
            manifest = Manifest.model_validate_json(data)
        except (OSError, ValidationError) as exc:
            raise _Incomplete(f"unreadable manifest: {type(exc).__name__}") from None
        model_layer = manifest.layer("model")
        if model_layer is None:
            raise _Incomplete("the manifest has no model layer")
        for layer in manifest.blobs:
            blob = self.blob_path(layer.digest)
            if not blob.is_file():
                raise _Incomplete(f"blob {layer.digest} is missing")
        try:
            config = self.config(manifest)
        except (OSError, ValidationError) as exc:
            raise _Incomplete(f"unreadable config blob: {type(exc).__name__}") from None
        return ModelRecord(
            name=self._name_of(path),
            digest=hashlib.sha256(data).hexdigest(),
            size=manifest.size,
            modified_at=datetime.fromtimestamp(path.stat().st_mtime, tz=UTC),
            manifest=manifest,
            config=config,
            manifest_path=path,
            model_path=self.blob_path(model_layer.digest),
            model_digest=model_layer.digest,
            model_paths=tuple(self.blob_path(layer.digest) for layer in manifest.model_layers),
            from_ollama=self.read_only,
        )

    def _delete_unreferenced(self, digests: Iterable[str]) -> None:
        """Delete blobs among `digests` no manifest uses, and split links left dangling."""
        in_use = self._referenced_blobs()
        for digest in digests:
            if digest_hex(digest) not in in_use:
                with contextlib.suppress(FileNotFoundError):
                    self.blob_path(digest).unlink()
        prune_split_links(self.root / SPLITS_DIR)

    def _referenced_blobs(self) -> set[str]:
        """Hex digests of every blob some manifest in the store refers to."""
        in_use: set[str] = set()
        for path in self._manifest_files():
            try:
                manifest = Manifest.model_validate_json(path.read_bytes())
            except (OSError, ValidationError):
                continue
            in_use.update(digest_hex(layer.digest) for layer in manifest.blobs)
        return in_use

    def _prune_dirs(self, directory: Path) -> None:
        """Remove empty directories from `directory` up to (not including) manifests/."""
        while directory != self.manifests_dir and self.manifests_dir in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """An exclusive lock across processes for manifest changes and blob garbage collection."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _match_entry(directory: Path, part: str) -> Path | None:
    """The entry of `directory` equal to `part` ignoring case (an exact match wins)."""
    try:
        entries = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if part in entries:
        return directory / part
    lowered = part.lower()
    for entry in sorted(entries):
        if entry.lower() == lowered:
            return directory / entry
    return None
