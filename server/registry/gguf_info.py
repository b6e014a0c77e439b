"""Facts about a GGUF file read from its header alone, and the refusal of files that are not GGUF.

The weights are memory-mapped by `gguf.GGUFReader`, never read. Our own checks run first so a
wrong, empty or truncated file fails with `InvalidModelFile` and a sentence a user can act on,
instead of an IndexError from deep inside the reader or a crash inside llama.cpp.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gguf
from pydantic import BaseModel, ConfigDict

from server.errors import InvalidModelFile
from server.registry.humanize import human_number
from server.registry.tags import FILE_TYPE_LABELS

# Bump when the meaning of a field changes, so summaries cached in config blobs get re-read.
INFO_VERSION = 1

_MAGIC = b"GGUF"
_SUPPORTED_VERSIONS = (2, 3)
_HEADER = struct.Struct("<4sIQQ")  # magic, version, tensor count, metadata count
_SHORT_ARRAY = 256  # arrays up to this length are kept in `metadata`; longer ones only by length


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
    reader, size = _open_reader(file, shown)
    if not reader.tensors:
        raise InvalidModelFile(f"{shown} holds no tensors (a vocabulary-only file?)")
    return _summarise(shown, reader, list(reader.tensors), size)


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
    opened = [_open_reader(file) for file in files]
    first = opened[0][0]
    count = first.fields.get("split.count")
    declared = int(count.parts[count.data[0]][0]) if count is not None else None
    if declared != len(files):
        raise InvalidModelFile(
            f"{files[0].name} declares {declared or 1} split parts but {len(files)} were given"
        )
    tensors = [tensor for reader, _ in opened for tensor in reader.tensors]
    if not tensors:
        raise InvalidModelFile(f"the {len(files)} parts starting at {files[0]} hold no tensors")
    return _summarise(files[0], first, tensors, sum(size for _, size in opened))


def _open_reader(file: Path, shown: str | Path | None = None) -> tuple[gguf.GGUFReader, int]:
    """A reader over `file` after our own header checks, and the file size; errors name the
    file `shown` (default: `file`).

    Raises InvalidModelFile.
    """
    size = check_header(file, label=shown)
    file_shown = shown or file
    try:
        reader = gguf.GGUFReader(file)
    except Exception as exc:  # the reader fails in many ways on bad input; all mean the same
        raise InvalidModelFile(
            f"{file_shown} is truncated or corrupt ({size} bytes); "
            f"reading its header failed: {_one_line(exc)}"
        ) from exc
    if reader.tensors:
        data_end = max(int(t.data_offset) + int(t.n_bytes) for t in reader.tensors)
        if data_end > size:
            raise InvalidModelFile(
                f"{file_shown} is truncated: its tensors end at byte {data_end} "
                f"but the file has {size} bytes"
            )
    return reader, size


def _summarise(
    file: str | Path, reader: gguf.GGUFReader, tensors: list[Any], size: int
) -> GGUFInfo:
    """GGUFInfo from the metadata of `reader` and the given tensors. Raises InvalidModelFile."""
    metadata, array_lengths = _metadata(reader)
    arch = metadata.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise InvalidModelFile(f"{file} has no general.architecture; it is not a model file")

    params = sum(int(t.n_elements) for t in tensors)
    tensor_bytes = sum(int(t.n_bytes) for t in tensors)
    file_type = _int(metadata.get("general.file_type"))
    return GGUFInfo(
        gguf_version=int(reader.fields["GGUF.version"].parts[-1][0]),
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
        tensor_types=dict(Counter(t.tensor_type.name for t in tensors).most_common()),
        tensor_bytes=tensor_bytes,
        size_bytes=size,
        metadata=metadata,
        array_lengths=array_lengths,
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


def _metadata(reader: gguf.GGUFReader) -> tuple[dict[str, Any], dict[str, int]]:
    """Scalar and short-array metadata, plus the length of every array."""
    metadata: dict[str, Any] = {}
    lengths: dict[str, int] = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or not field.types:
            continue
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            lengths[key] = len(field.data)
            nested = len(field.types) > 2 and field.types[1] == gguf.GGUFValueType.ARRAY
            if len(field.data) <= _SHORT_ARRAY and not nested:
                metadata[key] = [_value(field.types[-1], field.parts[i]) for i in field.data]
        else:
            metadata[key] = _value(field.types[0], field.parts[field.data[0]])
    return metadata, lengths


def _value(kind: gguf.GGUFValueType, part: Any) -> Any:
    if kind == gguf.GGUFValueType.STRING:
        return bytes(part).decode("utf-8", errors="replace")
    return part[0].item()


def _quant_label(file_type: int | None, tensors: list[Any]) -> str:
    """llama.cpp's name for `general.file_type`; else the type holding most weight elements."""
    if file_type is not None and file_type in FILE_TYPE_LABELS:
        return FILE_TYPE_LABELS[file_type]
    weights: Counter[str] = Counter()
    for tensor in tensors:
        if len(tensor.shape) >= 2:  # 1-D tensors (norms, biases) stay F32 whatever the quant
            weights[tensor.tensor_type.name] += int(tensor.n_elements)
    if not weights:
        for tensor in tensors:
            weights[tensor.tensor_type.name] += int(tensor.n_elements)
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
