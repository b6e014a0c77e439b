"""The JSON formats of the store, as Ollama writes them: OCI-style manifests and the config blob.

Field names on the wire are Ollama's (camelCase in manifests); unknown fields written by Ollama
are kept, so a store Ollama wrote reads the same way.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from server.registry.gguf_info import INFO_VERSION, GGUFInfo

MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_MEDIA_TYPE = "application/vnd.docker.container.image.v1+json"
LAYER_MEDIA_PREFIX = "application/vnd.ollama.image."
LayerKind = Literal["model", "template", "system", "params", "license"]
LAYER_KINDS: tuple[LayerKind, ...] = ("model", "template", "system", "params", "license")

DIGEST_PATTERN = r"^sha256[:-][0-9a-f]{64}$"
_DIGEST = re.compile(DIGEST_PATTERN)


def layer_media_type(kind: LayerKind) -> str:
    """`application/vnd.ollama.image.<kind>`."""
    return LAYER_MEDIA_PREFIX + kind


def is_digest(text: str) -> bool:
    """Whether `text` is `sha256:<64 hex>` or `sha256-<64 hex>` (lower-case hex)."""
    return _DIGEST.fullmatch(text) is not None


class Layer(BaseModel):
    """One blob a manifest refers to: its media type, digest and size."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)

    media_type: str = Field(alias="mediaType")
    digest: str = Field(pattern=DIGEST_PATTERN)
    size: int = Field(ge=0)

    @property
    def kind(self) -> str | None:
        """`model`, `template`, ... for Ollama layer types; None for anything else."""
        if self.media_type.startswith(LAYER_MEDIA_PREFIX):
            return self.media_type[len(LAYER_MEDIA_PREFIX) :]
        return None


class Manifest(BaseModel):
    """The manifest of one model tag; its sha256 is the model's ID."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)

    schema_version: int = Field(2, alias="schemaVersion")
    media_type: str = Field(MANIFEST_MEDIA_TYPE, alias="mediaType")
    config: Layer
    layers: list[Layer]

    def layer(self, kind: LayerKind) -> Layer | None:
        """The first layer of `kind`, if any."""
        return next((layer for layer in self.layers if layer.kind == kind), None)

    @property
    def model_layers(self) -> list[Layer]:
        """Every model layer in order: one GGUF file, or the parts of a split GGUF."""
        return [layer for layer in self.layers if layer.kind == "model"]

    @property
    def blobs(self) -> list[Layer]:
        """The config and every layer: all the blobs this manifest keeps alive."""
        return [self.config, *self.layers]

    @property
    def size(self) -> int:
        """Total bytes of the config and layers (what `ollama list` shows)."""
        return sum(layer.size for layer in self.blobs)

    def to_bytes(self) -> bytes:
        """Compact JSON with Ollama's field names; the model ID is the sha256 of these bytes."""
        return self.model_dump_json(by_alias=True, exclude_none=True).encode()


class SourceInfo(BaseModel):
    """Where a model came from: `{"type": "pip", "package": ..., ...}`, `{"type": "file", ...}`."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str


class ServeFacts(BaseModel):
    """Our own facts in the config blob (the `gguf_serve` object); Ollama ignores them."""

    model_config = ConfigDict(extra="allow")

    source: SourceInfo | None = None
    info_version: int = 0
    gguf: dict[str, Any] | None = None

    def cached_info(self) -> GGUFInfo | None:
        """The cached header summary, or None when absent or written by an older version."""
        if self.gguf is None or self.info_version != INFO_VERSION:
            return None
        try:
            return GGUFInfo.model_validate(self.gguf)
        except ValidationError:
            return None


class ModelConfig(BaseModel):
    """The config blob: Ollama's fields plus `gguf_serve`."""

    model_config = ConfigDict(extra="allow")

    model_format: str = ""
    model_family: str = ""
    model_families: list[str] | None = None
    model_type: str = ""
    file_type: str = ""
    gguf_serve: ServeFacts | None = None

    @classmethod
    def from_info(
        cls, info: GGUFInfo, source: SourceInfo, extra: dict[str, Any] | None = None
    ) -> ModelConfig:
        """The config for a GGUF model with header `info`, fetched from `source`.

        `extra` holds further fields to keep, e.g. those of a registry's own config blob.
        """
        ours = cls(
            model_format="gguf",
            model_family=info.architecture,
            model_families=[info.architecture],
            model_type=info.parameter_size,
            file_type=info.quant,
            gguf_serve=ServeFacts(
                source=source, info_version=INFO_VERSION, gguf=info.model_dump(mode="json")
            ),
        )
        if not extra:
            return ours
        return cls.model_validate({**extra, **ours.model_dump(exclude_none=True)})

    def to_bytes(self) -> bytes:
        """Compact JSON, as stored in the config blob."""
        return self.model_dump_json(exclude_none=True).encode()
