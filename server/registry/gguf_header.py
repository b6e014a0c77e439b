"""Parsing a GGUF header from bytes: metadata and the tensor table, nothing else.

Why not `gguf.GGUFReader`: it builds a numpy view per value, which takes seconds for the
100k-entry vocabularies of current models, and it needs a whole file. This parser walks the
header with `struct` over any buffer (an mmap of a local file, or the first bytes of a remote
one) and says how many bytes it needs when the buffer ends too early, so a remote header can
be fetched with a few ranged GETs.

Layout (GGUF v2/v3): magic, version, tensor count, key-value count; the key-value pairs; one
info per tensor (name, dims, type, offset); padding to `general.alignment`; the tensor data.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from typing import Any

import gguf

BufferLike = bytes | bytearray | memoryview | mmap.mmap
MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
SHORT_ARRAY = 256  # arrays up to this length keep their values; longer ones only their length

# GGUF value types: struct code of a scalar (None: string; array handled apart).
_SCALARS = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}
_STRING, _ARRAY = 8, 9


class HeaderTooShort(Exception):
    """The buffer ends inside the header; `needed` bytes are enough to go on."""

    def __init__(self, needed: int) -> None:
        super().__init__(f"the header needs at least {needed} bytes")
        self.needed = needed


class CorruptHeader(ValueError):
    """The header bytes do not parse as GGUF."""


@dataclass(frozen=True)
class TensorEntry:
    """One tensor's entry in the header; `offset` is relative to the start of the data."""

    name: str
    shape: tuple[int, ...]  # ggml order: ne0 first
    type_name: str  # GGMLQuantizationType name: Q4_K, F16, ...
    offset: int
    n_elements: int
    n_bytes: int


@dataclass(frozen=True)
class Header:
    """A parsed header: metadata values, every array's length, the tensors, where data starts."""

    version: int
    metadata: dict[str, Any]
    array_lengths: dict[str, int]
    tensors: list[TensorEntry]
    data_offset: int

    @property
    def data_end(self) -> int:
        """Where the last tensor ends (the smallest file size that holds every tensor)."""
        ends = [t.offset + t.n_bytes for t in self.tensors]
        return self.data_offset + max(ends, default=0)


def parse_header(buf: BufferLike, *, short_array: int = SHORT_ARRAY) -> Header:
    """Parse the GGUF header at the start of `buf`.

    Raises HeaderTooShort when `buf` ends inside the header, CorruptHeader when it is not GGUF
    or makes no sense (unknown value or tensor types, impossible counts).
    """
    error: Exception
    # The views are released before anything is raised, so an mmap under `buf` can be closed
    # while the exception is still alive.
    with memoryview(buf) as raw, raw.cast("B") as view:
        parser = _Parser(view, short_array)
        try:
            return parser.parse()
        except HeaderTooShort as exc:
            error = HeaderTooShort(exc.needed)
        except CorruptHeader as exc:
            error = CorruptHeader(str(exc))
        except (struct.error, UnicodeError) as exc:
            error = CorruptHeader(str(exc))
        finally:
            del parser
    raise error


class _Parser:
    def __init__(self, view: memoryview, short_array: int) -> None:
        self.view = view
        self.pos = 0
        self.short_array = short_array
        self.order = "<"

    def need(self, n: int) -> None:
        if self.pos + n > len(self.view):
            # ask for a generous margin: headers grow by whole vocabularies, not by bytes
            raise HeaderTooShort(max(self.pos + n, 2 * len(self.view)))

    def unpack(self, code: str) -> Any:
        fmt = self.order + code
        size = struct.calcsize(fmt)
        self.need(size)
        value = struct.unpack_from(fmt, self.view, self.pos)[0]
        self.pos += size
        return value

    def string(self, keep: bool = True) -> str:
        n = self.unpack("Q")
        if n > len(self.view) * 4 + (1 << 32):
            raise CorruptHeader(f"a string of {n} bytes")
        self.need(n)
        raw = self.view[self.pos : self.pos + n]
        self.pos += n
        return bytes(raw).decode("utf-8", errors="replace") if keep else ""

    def parse(self) -> Header:
        self.need(24)
        if bytes(self.view[:4]) != MAGIC:
            raise CorruptHeader("not a GGUF file")
        self.pos = 4
        version = self.unpack("I")
        if version & 0xFFFF == 0:
            self.order = ">"
            self.pos = 4
            version = self.unpack("I")
        n_tensors, n_kv = self.unpack("Q"), self.unpack("Q")
        if n_tensors > 1 << 24 or n_kv > 1 << 24:
            raise CorruptHeader(f"{n_tensors} tensors and {n_kv} keys")
        metadata: dict[str, Any] = {}
        lengths: dict[str, int] = {}
        for _ in range(n_kv):
            key = self.string()
            kind = self.unpack("I")
            if kind == _ARRAY:
                sub, n = self.unpack("I"), self.unpack("Q")
                lengths[key] = n
                values = self.array(sub, n, keep=n <= self.short_array and sub != _ARRAY)
                if values is not None:
                    metadata[key] = values
            else:
                metadata[key] = self.value(kind)
        alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise CorruptHeader(f"general.alignment is {alignment!r}")
        tensors = [self.tensor() for _ in range(n_tensors)]
        data = (self.pos + alignment - 1) // alignment * alignment
        return Header(version, metadata, lengths, tensors, data)

    def value(self, kind: int) -> Any:
        if kind == _STRING:
            return self.string()
        code = _SCALARS.get(kind)
        if code is None:
            raise CorruptHeader(f"unknown value type {kind}")
        return self.unpack(code)

    def array(self, sub: int, n: int, *, keep: bool) -> list[Any] | None:
        if sub == _STRING:
            out = [self.string(keep) for _ in range(n)]
            return out if keep else None
        if sub == _ARRAY:  # nested arrays: walk them, keep nothing
            for _ in range(n):
                inner, count = self.unpack("I"), self.unpack("Q")
                self.array(inner, count, keep=False)
            return None
        code = _SCALARS.get(sub)
        if code is None:
            raise CorruptHeader(f"unknown array type {sub}")
        size = struct.calcsize(code) * n
        self.need(size)
        start = self.pos
        self.pos += size
        if not keep:
            return None
        return list(struct.unpack_from(f"{self.order}{n}{code}", self.view, start))

    def tensor(self) -> TensorEntry:
        name = self.string()
        n_dims = self.unpack("I")
        if n_dims > 8:
            raise CorruptHeader(f"tensor {name} has {n_dims} dimensions")
        shape = tuple(self.unpack("Q") for _ in range(n_dims))
        type_id, offset = self.unpack("I"), self.unpack("Q")
        try:
            kind = gguf.GGMLQuantizationType(type_id)
            block, size = gguf.GGML_QUANT_SIZES[kind]
        except (ValueError, KeyError):
            raise CorruptHeader(f"tensor {name} has unknown type {type_id}") from None
        count = 1
        for dim in shape:
            count *= dim
        return TensorEntry(name, shape, kind.name, offset, count, count // block * size)
