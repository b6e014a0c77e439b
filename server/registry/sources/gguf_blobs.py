"""Downloading the GGUF blobs of one model (one file or every part of a split) and checking them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from server.errors import ChecksumMismatch, InvalidModelFile
from server.registry.gguf_info import GGUFInfo, read_gguf_info, read_split_gguf_info
from server.registry.manifest import Layer, layer_media_type
from server.registry.sources.base import ProgressCallback
from server.registry.sources.download import BlobFetch, Downloader, FetchedBlob
from server.registry.store import Store


def fetch_gguf(
    store: Store,
    downloader: Downloader,
    parts: Sequence[BlobFetch],
    progress: ProgressCallback,
    *,
    others: Sequence[tuple[BlobFetch, str]] = (),
) -> tuple[list[Layer], list[Layer], GGUFInfo]:
    """Fetch the model `parts` (in split order) and `others` ((job, media type) pairs such as a
    template), then read the GGUF header across the parts.

    Returns (model layers, other layers, header facts). A single file is checked as GGUF before
    it becomes a blob. When content is bad (digest mismatch, not GGUF) every blob this call
    stored that no model uses is deleted again; after a network failure verified blobs and the
    partial file stay, so pulling again resumes. Raises PullError, ChecksumMismatch,
    InvalidModelFile.
    """
    infos: list[GGUFInfo] = []

    def check_single(path: Path) -> None:  # header read once, before the file becomes a blob
        infos.append(read_gguf_info(path))

    validate = check_single if len(parts) == 1 else None
    fetched: list[FetchedBlob] = []
    try:
        models = []
        for job in parts:
            blob = downloader.fetch(store.blobs_dir, job, progress, validate=validate)
            fetched.append(blob)
            models.append(blob)
        extra = []
        for job, media_type in others:
            blob = downloader.fetch(store.blobs_dir, job, progress)
            fetched.append(blob)
            extra.append((blob, media_type))
        if not infos:  # a split, or a single blob that was already in the store
            infos.append(read_split_gguf_info([blob.path for blob in models]))
        info = infos[0]
    except (ChecksumMismatch, InvalidModelFile):
        store.prune_blobs([blob.digest for blob in fetched])
        raise
    model_type = layer_media_type("model")
    return (
        [_layer(model_type, blob) for blob in models],
        [_layer(media_type, blob) for blob, media_type in extra],
        info,
    )


def _layer(media_type: str, blob: FetchedBlob) -> Layer:
    return Layer.model_validate({"mediaType": media_type, "digest": blob.digest, "size": blob.size})
