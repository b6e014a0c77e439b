"""The registry facade: what the engine, the API and the CLI use to find, pull and manage models.

Two stores are searched: ours (`settings.home`, read and written) and, when there is one,
Ollama's (`settings.ollama_models`), which is only ever read: its models are listed and loaded
straight from Ollama's blob files. Ours wins when both hold a name.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from server.errors import InvalidName, InvalidRequest, ModelNotFound
from server.registry.catalog import find_in_catalog
from server.registry.gguf_info import GGUFInfo, read_gguf_info, read_split_gguf_info
from server.registry.quantized import Quantizer, quantize_model
from server.registry.sources import (
    ProgressCallback,
    RemoteHeader,
    Source,
    choose_source,
    choose_url_source,
    ignore_progress,
    is_url,
)
from server.registry.splits import SPLITS_DIR, link_split
from server.registry.store import ModelRecord, Store
from server.registry.tags import ModelName, parse_name
from server.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResolvedModel:
    """A model ready to load: its GGUF path, header facts and per-model load defaults."""

    name: str  # display form, in the case it was stored with
    model_name: ModelName
    path: Path  # what llama.cpp opens: the GGUF blob, or the first link of a split model
    info: GGUFInfo
    digest: str  # hex sha256 of the manifest (the model ID)
    size: int
    modified_at: datetime
    load_overrides: dict[str, Any] = field(default_factory=dict)
    from_ollama: bool = False


def _ollama_store(settings: Settings, ours: Store) -> Store | None:
    """Ollama's store, unless switched off or the same directory as ours."""
    if settings.ollama_models is None:
        return None
    store = Store(settings.ollama_models, ollama=True)
    if store.root.resolve() == ours.root.resolve():
        return None
    return store


def _is_gguf(record: ModelRecord) -> bool:
    """Ollama also stores models it runs from other formats; only GGUF ones are ours to load."""
    return record.config.model_format in ("", "gguf")


class Registry:
    """Names -> models in our store (then Ollama's); pulls through the sources."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = Store(settings.home)
        self.ollama_store = _ollama_store(settings, self.store)
        self._infos: dict[str, GGUFInfo] = {}
        self._infos_lock = threading.Lock()

    # --- finding --------------------------------------------------------------------------------

    def find(self, name: str | ModelName) -> ModelRecord | None:
        """The model called `name` (any case, or a catalog alias of a stored model), or None.

        Raises InvalidName.
        """
        parsed = name if isinstance(name, ModelName) else parse_name(name)
        record = self._find_exact(parsed)
        match = find_in_catalog(self.settings, parsed)
        if record is None and match is not None and match.name.key != parsed.key:
            record = self._find_exact(match.name)
        return record

    def record(self, name: str | ModelName) -> ModelRecord:
        """Like `find`, but raises ModelNotFound when absent (and InvalidName)."""
        record = self.find(name)
        if record is None:
            shown = name if isinstance(name, ModelName) else parse_name(name)
            raise ModelNotFound(f"model '{shown}' not found, try pulling it first")
        return record

    def resolve(self, name: str) -> ResolvedModel:
        """Find `name` and say how to load it.

        Cheap after the first call per model: header facts are cached by blob digest.
        Raises InvalidName, ModelNotFound, InvalidModelFile, OSError (split links).
        """
        record = self.record(name)
        entry = find_in_catalog(self.settings, record.name) or find_in_catalog(
            self.settings, parse_name(name)
        )
        return ResolvedModel(
            name=record.name.display,
            model_name=record.name,
            path=self.model_path(record),
            info=self.info(record),
            digest=record.digest,
            size=record.size,
            modified_at=record.modified_at,
            load_overrides=dict(entry.entry.load) if entry is not None else {},
            from_ollama=record.from_ollama,
        )

    def model_path(self, record: ModelRecord) -> Path:
        """The file llama.cpp should open: the blob, or for a split GGUF the first of a set of
        links named `model-0000k-of-0000N.gguf` (made in our store). Raises OSError."""
        if not record.is_split:
            return record.model_path
        return link_split(self.store.root / SPLITS_DIR, record.model_paths)

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
            if record.is_split:
                info = read_split_gguf_info(record.model_paths)
            else:
                info = read_gguf_info(record.model_path)
        with self._infos_lock:
            self._infos[key] = info
        return info

    def list(self) -> list[ModelRecord]:
        """Every complete model, newest first: ours, then Ollama's that we do not shadow."""
        records = self.store.list()
        if self.ollama_store is not None:
            ours = {record.name.key for record in records}
            records += [
                record
                for record in self.ollama_store.list()
                if record.name.key not in ours and _is_gguf(record)
            ]
            records.sort(key=lambda r: r.modified_at, reverse=True)
        return records

    def _find_exact(self, name: ModelName) -> ModelRecord | None:
        record = self.store.find(name)
        if record is None and self.ollama_store is not None:
            theirs = self.ollama_store.find(name)
            if theirs is not None and _is_gguf(theirs):
                record = theirs
        return record

    # --- changing our store ---------------------------------------------------------------------

    def pull(
        self,
        name: str,
        progress: ProgressCallback | None = None,
        *,
        as_name: str | None = None,
        insecure: bool = False,
        digest: str | None = None,
    ) -> ModelRecord:
        """Fetch `name` (a model name or an http(s) URL) and store it.

        A name is stored under its canonical catalog name, or `as_name`; a URL needs `as_name`
        and may carry the `digest` it must have. Plain http only for loopback hosts unless
        `insecure`. Raises InvalidName, ModelNotFound, PullError, ChecksumMismatch,
        InvalidModelFile.
        """
        target: ModelName
        source: Source
        if is_url(name):
            if as_name is None:
                raise InvalidName("pulling a URL needs a name to store it under (--as name:tag)")
            target = parse_name(as_name)
            source = choose_url_source(name, digest=digest, insecure=insecure)
        else:
            canonical, source = choose_source(self.settings, parse_name(name), insecure=insecure)
            target = parse_name(as_name) if as_name is not None else canonical
        log.info("pulling %s from %s", target, source.describe())
        return source.pull(self.store, target, progress or ignore_progress)

    def remote_header(self, name: str, *, insecure: bool = False) -> RemoteHeader:
        """Header facts of `name` (a model name or an http(s) URL) from where it would be pulled
        from, read with HTTP ranges: a few MB at most, never the weights.

        Raises InvalidName, ModelNotFound, PullError, InvalidModelFile, InvalidRequest (a source
        that cannot be read in part).
        """
        source: Source
        if is_url(name):
            source = choose_url_source(name, insecure=insecure)
        else:
            _, source = choose_source(self.settings, parse_name(name), insecure=insecure)
        log.info("reading the GGUF header of %s from %s", name, source.describe())
        return source.read_header()

    def remove(self, name: str) -> ModelName:
        """Delete a model and the blobs only it used.

        Raises InvalidName, ModelNotFound, InvalidRequest (the model is Ollama's).
        """
        parsed = parse_name(name)
        if self.store.find(parsed) is None and self._in_ollama(parsed):
            raise InvalidRequest(
                f"'{parsed}' is in Ollama's store; gguf-serve never changes it "
                f"(remove it with `ollama rm {parsed}`)"
            )
        return self.store.remove(parsed)

    def copy(self, src: str, dst: str) -> ModelRecord:
        """Store `src` under the extra name `dst`.

        Raises InvalidName, ModelNotFound, InvalidRequest (`src` is Ollama's).
        """
        parsed = parse_name(src)
        if self.store.find(parsed) is None and self._in_ollama(parsed):
            raise InvalidRequest(
                f"'{parsed}' is in Ollama's store, whose blobs gguf-serve does not copy; "
                "load it by its name as it is"
            )
        return self.store.copy(parsed, dst)

    def import_file(self, path: str | Path, name: str) -> ModelRecord:
        """Copy a local GGUF file into the store. Raises InvalidName, InvalidModelFile, OSError."""
        return self.store.import_file(path, name)

    def quantize(
        self,
        src: str,
        quant: str,
        quantizer: Quantizer,
        *,
        as_name: str | None = None,
        allow_requantize: bool = False,
        progress: ProgressCallback | None = None,
    ) -> ModelRecord:
        """Store `src` re-quantized to `quant` (see quantized.quantize_model for what it raises)."""
        return quantize_model(
            self,
            src,
            quant,
            quantizer,
            as_name=as_name,
            allow_requantize=allow_requantize,
            progress=progress or ignore_progress,
        )

    def _in_ollama(self, name: ModelName) -> bool:
        return self.ollama_store is not None and self.ollama_store.find(name) is not None
