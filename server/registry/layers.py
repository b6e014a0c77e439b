"""A model's Modelfile layers (template, system, params, license): reading them and writing models
that carry them (`/api/create`)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.errors import InvalidModelFile, InvalidRequest
from server.registry.manifest import Layer, LayerKind, SourceInfo, layer_media_type
from server.registry.store import ModelRecord, Store

if TYPE_CHECKING:
    from server.registry.registry import Registry, ResolvedModel

log = logging.getLogger(__name__)

_MAX_TEXT_LAYER = 1 << 20  # template / system / params / license blobs are small text


@dataclass(frozen=True)
class ModelExtras:
    """What a Modelfile added to the GGUF: a Go prompt template, a system prompt, parameters."""

    template: str | None = None
    system: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    license: str | None = None


def _read_text(store: Store, layer: Layer) -> str:
    path = store.blob_path(layer.digest)
    if layer.size > _MAX_TEXT_LAYER:
        raise InvalidModelFile(f"the {layer.kind} layer of this model is implausibly large")
    return path.read_text(encoding="utf-8", errors="replace")


def extras_of(store: Store, record: ModelRecord) -> ModelExtras:
    """Read the text layers of `record` (missing blobs count as absent)."""
    values: dict[str, Any] = {}
    kinds: tuple[LayerKind, ...] = ("template", "system", "params", "license")
    for kind in kinds:
        layer = record.manifest.layer(kind)
        if layer is None:
            continue
        try:
            text = _read_text(store, layer)
        except OSError:
            log.warning("%s: its %s layer is missing", record.name, kind)
            continue
        if kind == "params":
            try:
                parsed = json.loads(text)
            except ValueError:
                log.warning("%s: its params layer is not JSON", record.name)
                continue
            values["params"] = parsed if isinstance(parsed, dict) else {}
        else:
            values[kind] = text
    return ModelExtras(**values)


def read_extras(registry: Registry, resolved: ResolvedModel) -> ModelExtras:
    """The Modelfile layers of a resolved model, from whichever store holds it."""
    for store in _stores(registry):
        record = store.find(resolved.model_name)
        if record is not None and record.model_path == resolved.path:
            return extras_of(store, record)
    return ModelExtras()


def _stores(registry: Registry) -> list[Store]:
    stores = [registry.store]
    extra = getattr(registry, "ollama_store", None)
    if isinstance(extra, Store):
        stores.append(extra)
    return stores


def create_model(
    registry: Registry,
    name: str,
    *,
    base: ModelRecord | None = None,
    base_store: Store | None = None,
    gguf_digest: str | None = None,
    template: str | None = None,
    system: str | None = None,
    parameters: dict[str, Any] | None = None,
    license: str | None = None,
) -> ModelRecord:
    """Store `name` as `base` (or the uploaded GGUF blob `gguf_digest`) plus new text layers.

    New layers replace the base model's layers of the same kind; the GGUF blob is shared, not
    copied. Raises InvalidRequest, InvalidModelFile, InvalidName, OSError.
    """
    store = registry.store
    extras: dict[LayerKind, Layer] = {}
    if base is not None:
        source_store = base_store or store
        model_layer = base.manifest.layer("model")
        assert model_layer is not None
        if source_store is not store:
            raise InvalidRequest(
                "create from a model in Ollama's store: copy it with `gguf-serve pull` first"
            )
        for layer in base.manifest.layers:
            if layer.kind in ("template", "system", "params", "license"):
                extras[layer.kind] = layer  # type: ignore[index]
        info = registry.info(base)
        source = SourceInfo(type="derived", detail={"from": base.name.display})
    elif gguf_digest is not None:
        path: Path = store.blob_path(gguf_digest)
        if not path.is_file():
            raise InvalidRequest(f"blob {gguf_digest} has not been uploaded", param="files")
        from server.registry.gguf_info import read_gguf_info

        info = read_gguf_info(path)
        model_layer = Layer.model_validate(
            {
                "mediaType": layer_media_type("model"),
                "digest": gguf_digest.replace("-", ":", 1),
                "size": path.stat().st_size,
            }
        )
        source = SourceInfo(type="upload", detail={"digest": gguf_digest})
    else:
        raise InvalidRequest("create needs `from` (a model) or `files` (an uploaded GGUF)")
    if template is not None:
        extras["template"] = store.write_blob(template.encode(), layer_media_type("template"))
    if system is not None:
        extras["system"] = store.write_blob(system.encode(), layer_media_type("system"))
    if parameters:
        merged = dict(json.loads(_read_text(store, extras["params"]))) if "params" in extras else {}
        merged.update(parameters)
        extras["params"] = store.write_blob(json.dumps(merged).encode(), layer_media_type("params"))
    if license is not None:
        extras["license"] = store.write_blob(license.encode(), layer_media_type("license"))
    return store.add_model(name, model_layer, info, source, extra_layers=tuple(extras.values()))
