"""Making a new tag by quantizing a stored model (`gguf-serve quantize SRC QUANT [--as TAG]`).

The registry does the bookkeeping (which file, which name, what the config records); the
quantizing itself is llama.cpp's and arrives as a `Quantizer` (server/engine/quantize.py), so the
registry never imports llama_cpp.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from server.errors import InvalidRequest
from server.registry.manifest import SourceInfo
from server.registry.sources.base import ProgressCallback, PullProgress
from server.registry.store import ModelRecord
from server.registry.tags import (
    DEFAULT_TAG,
    ModelName,
    name_from_parts,
    normalize_quant,
    parse_name,
)

if TYPE_CHECKING:
    from server.registry.gguf_info import GGUFInfo
    from server.registry.registry import Registry

log = logging.getLogger(__name__)

UNQUANTIZED = frozenset({"F32", "F16", "BF16"})


class Quantizer(Protocol):
    """Writes `src` quantized to `quant` (a canonical label such as `Q4_K_M`) at `dst`."""

    @property
    def supported(self) -> frozenset[str]:
        """Canonical labels this quantizer can produce."""
        ...

    def quantize(
        self,
        src: Path,
        dst: Path,
        quant: str,
        *,
        allow_requantize: bool,
        progress: Callable[[int, int], None],
    ) -> None:
        """Raises a GGUFServeError when quantizing fails."""
        ...


def tag_label(label: str) -> str:
    """A canonical label as Ollama writes it in tags: `Q4_K_M` -> `q4_K_M`, `F16` -> `f16`."""
    head, _, rest = label.partition("_")
    return head.lower() + (f"_{rest}" if rest else "")


def derived_name(src: ModelName, label: str) -> ModelName:
    """`<model>:<tag>` with its quant part replaced by `label`, or `-<label>` appended.

    `smollm2:135m` -> `smollm2:135m-q8_0`; `x:8b-instruct-q4_K_M` -> `x:8b-instruct-q8_0`;
    `x:latest` -> `x:q8_0`.
    """
    new = tag_label(label)
    if src.tag.lower() == DEFAULT_TAG:
        tag = new
    else:
        parts = src.tag.split("-")
        index = next((i for i, p in enumerate(parts) if normalize_quant(p) is not None), None)
        if index is None:
            parts.append(new)
        else:
            parts[index] = new
        tag = "-".join(parts)
    return name_from_parts(src.host, src.namespace, src.model, tag)


def is_quantized(info: GGUFInfo) -> bool:
    """Whether any tensor is stored in a quantized type (not F32/F16/BF16)."""
    return any(kind.upper() not in UNQUANTIZED for kind in info.tensor_types)


def quantize_model(
    registry: Registry,
    src: str,
    quant: str,
    quantizer: Quantizer,
    *,
    as_name: str | None,
    allow_requantize: bool,
    progress: ProgressCallback,
) -> ModelRecord:
    """Quantize the model `src` to `quant` and store it as `as_name` (default: see derived_name).

    The new config records the source model, its ID and the quantization. Raises InvalidName,
    ModelNotFound, InvalidRequest (unknown quantization, an already quantized source without
    `allow_requantize`, a target equal to the source), InvalidModelFile, OSError and whatever
    the quantizer raises; nothing is stored on failure.
    """
    label = normalize_quant(quant)
    if label is None or label not in quantizer.supported:
        choices = ", ".join(tag_label(q) for q in sorted(quantizer.supported))
        raise InvalidRequest(f"cannot quantize to {quant!r}; choose one of: {choices}")
    record = registry.record(src)
    resolved = registry.resolve(src)
    if is_quantized(resolved.info) and not allow_requantize:
        raise InvalidRequest(
            f"'{record.name}' is already quantized ({resolved.info.quant}); quantizing it again "
            "loses more quality than quantizing from F16/F32. Pass --allow-requantize to do it "
            "anyway"
        )
    target = derived_name(record.name, label) if as_name is None else parse_name(as_name)
    if target.key == record.name.key:
        raise InvalidRequest(
            f"the new model would replace its source '{record.name}'; choose a name with --as"
        )
    status = f"quantizing {record.name} to {tag_label(label)}"
    progress(PullProgress(status))

    def tensors_done(done: int, total: int) -> None:
        progress(PullProgress(status, done, total))

    store = registry.store
    # Template/params/... layers travel with the model when their blobs are in our store.
    extras = tuple(
        layer
        for layer in record.manifest.layers
        if layer.kind != "model" and store.blob_path(layer.digest).is_file()
    )
    source = SourceInfo.model_validate(
        {
            "type": "quantize",
            "from": record.name.full,
            "from_id": record.digest,
            "from_digest": record.model_digest,
            "quant": label,
            "requantized": is_quantized(resolved.info),
        }
    )
    with store.temp_dir() as scratch:
        out = scratch / "model.gguf"
        quantizer.quantize(
            resolved.path,
            out,
            label,
            allow_requantize=allow_requantize,
            progress=tensors_done,
        )
        progress(PullProgress("writing manifest"))
        stored = store.adopt_file(out, target, source, extras)
    log.info("quantized %s to %s as %s", record.name, label, stored.name)
    progress(PullProgress("success"))
    return stored
