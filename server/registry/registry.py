"""The registry facade: what the engine, the API and the CLI use to find, pull and manage models."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from server.errors import ModelNotFound
from server.registry.catalog import find_in_catalog
from server.registry.gguf_info import GGUFInfo, read_gguf_info
from server.registry.sources import ProgressCallback, choose_source
from server.registry.store import ModelRecord, Store
from server.registry.tags import ModelName, parse_name
from server.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResolvedModel:
    """A model ready to load: its GGUF path, header facts and per-model load defaults."""

    name: str  # display form, in the case it was stored with
    model_name: ModelName
    path: Path
    info: GGUFInfo
    digest: str  # hex sha256 of the manifest (the model ID)
    size: int
    modified_at: datetime
    load_overrides: dict[str, Any] = field(default_factory=dict)


def _ignore(_: object) -> None:
    return None


class Registry:
    """Names -> models in the store at `settings.home`; pulls through the catalog's sources."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = Store(settings.home)
        self._infos: dict[str, GGUFInfo] = {}
        self._infos_lock = threading.Lock()

    def resolve(self, name: str) -> ResolvedModel:
        """Find `name` (any case, or a catalog alias of a stored model).

        Cheap after the first call per model: header facts are cached by blob digest.
        Raises InvalidName, ModelNotFound.
        """
        parsed = parse_name(name)
        record = self.store.find(parsed)
        match = find_in_catalog(self.settings, parsed)
        if record is None and match is not None and match.name.key != parsed.key:
            record = self.store.find(match.name)
        if record is None:
            raise ModelNotFound(f"model '{parsed}' not found, try pulling it first")
        entry = find_in_catalog(self.settings, record.name) or match
        return ResolvedModel(
            name=record.name.display,
            model_name=record.name,
            path=record.model_path,
            info=self.info(record),
            digest=record.digest,
            size=record.size,
            modified_at=record.modified_at,
            load_overrides=dict(entry.entry.load) if entry is not None else {},
        )

    def info(self, record: ModelRecord) -> GGUFInfo:
        """Header facts of a stored model: from memory, the config blob, or the file itself.

        Raises InvalidModelFile if the header has to be read and is bad.
        """
        key = record.model_digest
        with self._infos_lock:
            cached = self._infos.get(key)
        if cached is not None:
            return cached
        facts = record.config.gguf_serve
        info = facts.cached_info() if facts is not None else None
        if info is None:  # e.g. a model Ollama stored: read the header once
            log.debug("reading GGUF header of %s", record.name)
            info = read_gguf_info(record.model_path)
        with self._infos_lock:
            self._infos[key] = info
        return info

    def list(self) -> list[ModelRecord]:
        """Every complete model in the store, newest first."""
        return self.store.list()

    def pull(self, name: str, progress: ProgressCallback | None = None) -> ModelRecord:
        """Fetch `name` from its source and store it under its canonical catalog name.

        Raises InvalidName, ModelNotFound (no source knows it), PullError, ChecksumMismatch,
        InvalidModelFile.
        """
        canonical, source = choose_source(self.settings, parse_name(name))
        log.info("pulling %s from %s", canonical, source.describe())
        return source.pull(self.store, canonical, progress or _ignore)

    def remove(self, name: str) -> ModelName:
        """Delete a model and the blobs only it used. Raises InvalidName, ModelNotFound."""
        return self.store.remove(name)

    def copy(self, src: str, dst: str) -> ModelRecord:
        """Store `src` under the extra name `dst`. Raises InvalidName, ModelNotFound."""
        return self.store.copy(src, dst)

    def import_file(self, path: str | Path, name: str) -> ModelRecord:
        """Copy a local GGUF file into the store. Raises InvalidName, InvalidModelFile, OSError."""
        return self.store.import_file(path, name)
