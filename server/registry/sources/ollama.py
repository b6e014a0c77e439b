"""The Ollama registry protocol: a manifest by tag, then every blob by digest.

    GET <scheme>://<host>/v2/<namespace>/<model>/manifests/<tag>   -> OCI-style manifest
    GET <scheme>://<host>/v2/<namespace>/<model>/blobs/<digest>    -> the blob (often a redirect)

The manifest is untrusted input: pydantic checks every digest against `^sha256[:-][0-9a-f]{64}$`
before any of them becomes part of a path (Ollama's CVE-2024-37032 was a `../` digest).
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import httpx
from pydantic import ValidationError

from server.errors import ChecksumMismatch, ModelNotFound, PullError
from server.registry.manifest import (
    LAYER_KINDS,
    MANIFEST_MEDIA_TYPE,
    Layer,
    Manifest,
    SourceInfo,
)
from server.registry.sources.base import ProgressCallback, PullProgress, pulling_status
from server.registry.sources.download import BlobFetch, Downloader
from server.registry.sources.gguf_blobs import fetch_gguf
from server.registry.sources.header import RangeReader, RemoteFile, RemoteHeader
from server.registry.sources.transport import check_url, new_client, scheme_for
from server.registry.store import ModelRecord, Store
from server.registry.tags import ModelName
from server.validation import describe

log = logging.getLogger(__name__)

_MAX_MANIFEST = 4 << 20  # real manifests are a few hundred bytes
_MAX_CONFIG = 4 << 20
_ACCEPT = f"{MANIFEST_MEDIA_TYPE}, application/vnd.oci.image.manifest.v1+json"
# Fields of the registry's config blob that we write ourselves.
_OURS = frozenset({"model_format", "model_family", "model_families", "model_type", "file_type"})


class OllamaRegistrySource:
    """A model in an Ollama-compatible registry, named `[host/][namespace/]model[:tag]`."""

    def __init__(
        self, name: ModelName, *, insecure: bool = False, retries: int = 4, backoff: float = 0.5
    ) -> None:
        self.name = name
        self.insecure = insecure
        self.retries = retries
        self.backoff = backoff
        self.base = f"{scheme_for(name.host, insecure=insecure)}://{name.host}"

    def describe(self) -> str:
        return f"{self.base} (Ollama registry)"

    def _url(self, kind: str, ref: str) -> str:
        # Every part was validated by the name grammar, so none can add path segments.
        return f"{self.base}/v2/{self.name.namespace}/{self.name.model}/{kind}/{ref}"

    def pull(self, store: Store, name: ModelName, progress: ProgressCallback) -> ModelRecord:
        """Fetch the manifest, its config and its model/template/params/system/license blobs.

        Raises ModelNotFound (the registry has no such tag), PullError, ChecksumMismatch,
        InvalidModelFile, InvalidName.
        """
        progress(PullProgress("pulling manifest"))
        with new_client() as client:
            raw = self._get(client, self._url("manifests", self.name.tag), _MAX_MANIFEST, _ACCEPT)
            manifest = self._parse_manifest(raw)
            if not manifest.model_layers:
                raise PullError(f"the manifest of '{self.name}' has no model layer")
            config = self._config(client, manifest.config, progress)
            downloader = Downloader(
                client, insecure=self.insecure, retries=self.retries, backoff=self.backoff
            )
            parts = [self._job(layer) for layer in manifest.model_layers]
            others = []
            for layer in manifest.layers:
                if layer.kind in LAYER_KINDS and layer.kind != "model":
                    others.append((self._job(layer), layer.media_type))
                elif layer.kind != "model":
                    log.warning("skipping layer %s of type %s", layer.digest, layer.media_type)
            models, extras, info = fetch_gguf(store, downloader, parts, progress, others=others)
        progress(PullProgress("verifying sha256 digest"))
        source = SourceInfo.model_validate(
            {
                "type": "ollama",
                "registry": self.base,
                "name": self.name.full,
                "manifest": hashlib.sha256(raw).hexdigest(),
            }
        )
        progress(PullProgress("writing manifest"))
        record = store.add_model(
            name, models[0], info, source, (*models[1:], *extras), config_extra=config
        )
        progress(PullProgress("success"))
        return record

    def read_header(self) -> RemoteHeader:
        """The GGUF header of the model layer(s), read with HTTP ranges: the manifest, then
        the first bytes of each model blob. Raises ModelNotFound, PullError, InvalidModelFile.
        """
        with new_client() as client:
            manifest = self._manifest(client)
            reader = RangeReader(client, insecure=self.insecure)
            files = [
                RemoteFile(self._url("blobs", layer.digest), size=layer.size)
                for layer in manifest.model_layers
            ]
            info = reader.info(files, str(self.name))
        digests = [layer.digest for layer in manifest.model_layers]
        return RemoteHeader(info, self.describe(), digests, reader.bytes_read)

    def _manifest(self, client: httpx.Client) -> Manifest:
        """The tag's manifest, validated; raises ModelNotFound, PullError."""
        raw = self._get(client, self._url("manifests", self.name.tag), _MAX_MANIFEST, _ACCEPT)
        manifest = self._parse_manifest(raw)
        if not manifest.model_layers:
            raise PullError(f"the manifest of '{self.name}' has no model layer")
        return manifest

    def _parse_manifest(self, raw: bytes) -> Manifest:
        try:
            return Manifest.model_validate_json(raw)
        except ValidationError as exc:
            raise PullError(
                f"the registry sent an invalid manifest for '{self.name}' "
                f"({describe(exc.errors(), first=True)})"
            ) from None

    def _job(self, layer: Layer) -> BlobFetch:
        return BlobFetch(
            url=self._url("blobs", layer.digest),
            status=pulling_status(layer.digest),
            digest=layer.digest,
            size=layer.size,
        )

    def _config(
        self, client: httpx.Client, layer: Layer, progress: ProgressCallback
    ) -> dict[str, Any]:
        """The registry's config blob (small, checked in memory), minus the fields we write."""
        status = pulling_status(layer.digest)
        progress(PullProgress(status, 0, layer.size, layer.digest))
        data = self._get(client, self._url("blobs", layer.digest), _MAX_CONFIG)
        actual = f"sha256:{hashlib.sha256(data).hexdigest()}"
        if actual != layer.digest.replace("-", ":", 1):
            raise ChecksumMismatch(
                f"sha256 mismatch for config blob {layer.digest}: got {actual}; nothing was stored"
            )
        progress(PullProgress(status, len(data), layer.size, layer.digest))
        try:
            parsed = json.loads(data)
        except ValueError:
            raise PullError(f"the config blob of '{self.name}' is not JSON") from None
        if not isinstance(parsed, dict):
            raise PullError(f"the config blob of '{self.name}' is not a JSON object")
        return {k: v for k, v in parsed.items() if k not in _OURS and k != "gguf_serve"}

    def _get(self, client: httpx.Client, url: str, limit: int, accept: str | None = None) -> bytes:
        """A small response body, at most `limit` bytes. Raises ModelNotFound, PullError."""
        check_url(url, insecure=self.insecure)
        headers = {"Accept": accept} if accept else {}
        try:
            with client.stream("GET", url, headers=headers) as response:
                check_url(response.url, insecure=self.insecure)
                if response.status_code == 404:
                    raise ModelNotFound(
                        f"model '{self.name}' was not found in the registry at {self.base}"
                    )
                if response.status_code in (401, 403):
                    raise PullError(
                        f"the registry at {self.base} denied access to '{self.name}' "
                        f"(HTTP {response.status_code})"
                    )
                if response.status_code != 200:
                    raise PullError(
                        f"the registry at {self.base} answered HTTP {response.status_code} "
                        f"for {url}"
                    )
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > limit:
                        raise PullError(f"{url} sent more than {limit} bytes; refusing it")
                return bytes(body)
        except httpx.TransportError as exc:
            raise PullError(f"cannot reach the registry at {self.base}: {exc}") from None
