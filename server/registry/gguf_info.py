"""Facts about a GGUF file read from its header alone, and the refusal of files that are not GGUF.

The file is memory-mapped and only its header is parsed (gguf_header); the weights are never
read. Our own checks run first so a wrong, empty or truncated file fails with `InvalidModelFile`
and a sentence a user can act on, instead of a crash inside llama.cpp.
"""

from __future__ import annotations

import mmap
import re
import struct
from collections import Counter
from collections.abc import Sequence
from pathlib import Path, PurePath
from typing import Any

from pydantic import BaseModel, ConfigDict

from server.errors import InvalidModelFile
from server.registry.gguf_header import (
    CorruptHeader,
    Header,
    HeaderTooShort,
    TensorEntry,
    parse_header,
)
from server.registry.humanize import human_number
from server.registry.tags import FILE_TYPE_LABELS

# Bump when the meaning of a field changes, so summaries cached in config blobs get re-read.
INFO_VERSION = 3

_MAGIC = b"GGUF"
_SUPPORTED_VERSIONS = (2, 3)
_HEADER = struct.Struct("<4sIQQ")  # magic, version, tensor count, metadata count
_BLOCK_TENSOR = re.compile(r"^blk\.(\d+)\.")
_EXPERTS = re.compile(r"_(ch)?exps\.")  # stacked MoE expert tensors (ffn_up_exps, ffn_down_chexps)


class TensorSizes(BaseModel):
    """Bytes of the tensor table grouped as a memory plan needs them."""

    model_config = ConfigDict(frozen=True)

    layers: list[int] = []  # bytes of `blk.<i>.*` per layer i
    experts: list[int] = []  # of which stacked MoE experts, per layer
    matrices: list[dict[str, int]] = []  # of which weight matrices (2-D and up), by type, per layer
    other: dict[str, int] = {}  # tensors outside the blocks (token_embd, output, norms), by name
    other_types: dict[str, str] = {}  # their types


class GGUFInfo(BaseModel):
    """What the header of one GGUF file says about the model inside it."""

    model_config = ConfigDict(frozen=True)

    gguf_version: int
    architecture: str
    name: str | None = None
    parameter_count: int
    parameter_size: str
    file_type: int | None = None
    quant: str
    bits_per_weight: float
    context_length: int | None = None
    block_count: int | None = None
    head_count: int | None = None
    head_count_kv: int | None = None
    embedding_length: int | None = None
    chat_template: str | None = None
    tensor_count: int
    tensor_types: dict[str, int]
    tensor_bytes: int
    tensor_sizes: TensorSizes = TensorSizes()
    size_bytes: int
    metadata: dict[str, Any]
    array_lengths: dict[str, int]


def read_gguf_info(path: str | Path, *, label: str | Path | None = None) -> GGUFInfo:
    """Read the header of `path` without loading weights; errors name the file `label` (the
    user's own path when `path` is the store's copy of it), else `path`.

    Raises InvalidModelFile when the file is missing, unreadable, not GGUF, of an unsupported
    GGUF version, truncated, or holds no model.
    """
    file = Path(path)
    shown = label or file
    header, size = _open_header(file, shown)
    if not header.tensors:
        raise InvalidModelFile(f"{shown} holds no tensors (a vocabulary-only file?)")
    return _summarise(PurePath(shown), header, header.tensors, size)


def read_split_gguf_info(paths: Sequence[str | Path]) -> GGUFInfo:
    """Header facts of a split GGUF (`-00001-of-0000N.gguf`): metadata from the first part,
    tensors and sizes from all of them. One path is read as an ordinary GGUF file.

    Raises InvalidModelFile when a part is bad or the parts do not make up one model.
    """
    files = [Path(p) for p in paths]
    if not files:
        raise InvalidModelFile("no GGUF files given")
    if len(files) == 1:
        return read_gguf_info(files[0])
    return info_from_headers(files[0], [_open_header(file) for file in files])


def info_from_headers(first: PurePath, parts: Sequence[tuple[Header, int]]) -> GGUFInfo:
    """Header facts from already parsed headers and their file sizes (one part or a split).

    `first` names the model in messages. Raises InvalidModelFile.
    """
    header = parts[0][0]
    if len(parts) > 1:
        declared = header.metadata.get("split.count")
        if declared != len(parts):
            raise InvalidModelFile(
                f"{first.name} declares {declared or 1} split parts but {len(parts)} were given"
            )
    tensors = [tensor for part, _ in parts for tensor in part.tensors]
    if not tensors:
        raise InvalidModelFile(f"{first} holds no tensors (a vocabulary-only file?)")
    return _summarise(first, header, tensors, sum(size for _, size in parts))


def _open_header(file: Path, shown: str | Path | None = None) -> tuple[Header, int]:
    """The parsed header of `file` after our own checks, and the file size; errors name the
    file `shown` (default: `file`).

    Raises InvalidModelFile.
    """
    size = check_header(file, label=shown)
    file_shown = shown or file
    try:
        with file.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as m:
            header = parse_header(m)
    except (HeaderTooShort, CorruptHeader) as exc:
        raise InvalidModelFile(
            f"{file_shown} is truncated or corrupt ({size} bytes); "
            f"reading its header failed: {_one_line(exc)}"
        ) from exc
    except OSError as exc:
        raise InvalidModelFile(f"cannot read {file_shown}: {exc.strerror or exc}") from exc
    check_data_end(PurePath(file_shown), header, size)
    return header, size


def check_data_end(file: PurePath, header: Header, size: int) -> None:
    """Raises InvalidModelFile when the tensors end past the end of the file."""
    if header.tensors and header.data_end > size:
        raise InvalidModelFile(
            f"{file} is truncated: its tensors end at byte {header.data_end} "
            f"but the file has {size} bytes"
        )


def _summarise(
    file: PurePath, header: Header, tensors: Sequence[TensorEntry], size: int
) -> GGUFInfo:
    """GGUFInfo from the metadata of `header` and the given tensors. Raises InvalidModelFile."""
    metadata, array_lengths = header.metadata, header.array_lengths
    arch = metadata.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise InvalidModelFile(f"{file} has no general.architecture; it is not a model file")

    params = sum(t.n_elements for t in tensors)
    tensor_bytes = sum(t.n_bytes for t in tensors)
    file_type = _int(metadata.get("general.file_type"))
    return GGUFInfo(
        gguf_version=header.version,
        architecture=arch,
        name=_str(metadata.get("general.name")),
        parameter_count=params,
        parameter_size=human_number(params),
        file_type=file_type,
        quant=_quant_label(file_type, tensors),
        bits_per_weight=round(tensor_bytes * 8 / params, 4) if params else 0.0,
        context_length=_int(metadata.get(f"{arch}.context_length")),
        block_count=_int(metadata.get(f"{arch}.block_count")),
        head_count=_int(metadata.get(f"{arch}.attention.head_count")),
        head_count_kv=_int(metadata.get(f"{arch}.attention.head_count_kv")),
        embedding_length=_int(metadata.get(f"{arch}.embedding_length")),
        chat_template=_str(metadata.get("tokenizer.chat_template")),
        tensor_count=len(tensors),
        tensor_types=dict(Counter(t.type_name for t in tensors).most_common()),
        tensor_bytes=tensor_bytes,
        tensor_sizes=_tensor_sizes(tensors),
        size_bytes=size,
        metadata=metadata,
        array_lengths=array_lengths,
    )


def _tensor_sizes(tensors: Sequence[TensorEntry]) -> TensorSizes:
    """Bytes per block and outside the blocks, from each tensor's stored size."""
    layers: dict[int, int] = {}
    experts: dict[int, int] = {}
    matrices: dict[int, dict[str, int]] = {}
    other: dict[str, int] = {}
    other_types: dict[str, str] = {}
    for tensor in tensors:
        match = _BLOCK_TENSOR.match(tensor.name)
        n = tensor.n_bytes
        if match is None:
            other[tensor.name] = other.get(tensor.name, 0) + n
            other_types[tensor.name] = tensor.type_name
            continue
        i = int(match.group(1))
        layers[i] = layers.get(i, 0) + n
        if _EXPERTS.search(tensor.name):
            experts[i] = experts.get(i, 0) + n
        if len(tensor.shape) >= 2:
            by_type = matrices.setdefault(i, {})
            by_type[tensor.type_name] = by_type.get(tensor.type_name, 0) + n
    count = max(layers) + 1 if layers else 0
    return TensorSizes(
        layers=[layers.get(i, 0) for i in range(count)],
        experts=[experts.get(i, 0) for i in range(count)],
        matrices=[matrices.get(i, {}) for i in range(count)],
        other=other,
        other_types=other_types,
    )


def check_header(path: str | Path, *, label: str | Path | None = None) -> int:
    """Check the magic bytes, version and counts of a GGUF file by hand; return its size.
    Errors name the file `label` (default: `path`).

    Cheap (reads 24 bytes). Raises InvalidModelFile.
    """
    try:
        size = Path(path).stat().st_size
        with Path(path).open("rb") as handle:
            head = handle.read(_HEADER.size)
    except OSError as exc:
        raise InvalidModelFile(f"cannot read {label or path}: {exc.strerror or exc}") from exc
    file = label or path
    if size == 0:
        raise InvalidModelFile(f"{file} is empty")
    if head[:4] != _MAGIC:
        raise InvalidModelFile(
            f"{file} is not a GGUF file (it starts with {head[:4]!r}, not b'GGUF')"
        )
    if len(head) < _HEADER.size:
        raise InvalidModelFile(f"{file} is truncated: {size} bytes is too small for a GGUF header")
    _, version, tensors, kvs = _HEADER.unpack(head)
    if version & 0xFFFF == 0:  # written on a machine of the other byte order
        _, version, tensors, kvs = struct.unpack(">4sIQQ", head)
    if version not in _SUPPORTED_VERSIONS:
        raise InvalidModelFile(f"{file} is GGUF version {version}; supported versions are 2 and 3")
    # Every tensor info and metadata pair takes at least 8 bytes, so larger counts are corrupt.
    if tensors > size // 8 or kvs > size // 8:
        raise InvalidModelFile(
            f"{file} is corrupt: its header claims {tensors} tensors and {kvs} keys"
        )
    return size


def _quant_label(file_type: int | None, tensors: Sequence[TensorEntry]) -> str:
    """llama.cpp's name for `general.file_type`; else the type holding most weight elements."""
    if file_type is not None and file_type in FILE_TYPE_LABELS:
        return FILE_TYPE_LABELS[file_type]
    weights: Counter[str] = Counter()
    for tensor in tensors:
        if len(tensor.shape) >= 2:  # 1-D tensors (norms, biases) stay F32 whatever the quant
            weights[tensor.type_name] += tensor.n_elements
    if not weights:
        for tensor in tensors:
            weights[tensor.type_name] += tensor.n_elements
    return weights.most_common(1)[0][0]


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return int(max(value))  # per-layer values (e.g. head counts): the largest bounds memory
    return None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]
