"""Copies of a real GGUF file with one metadata key or one tensor left out (broken models)."""

from __future__ import annotations

from pathlib import Path

import gguf


def copy_without(
    src: Path, dest: Path, *, key: str | None = None, tensor: str | None = None
) -> Path:
    """`src` rewritten to `dest` without metadata `key` and/or tensor `tensor`."""
    reader = gguf.GGUFReader(src)
    arch = str(reader.fields["general.architecture"].contents())
    writer = gguf.GGUFWriter(dest, arch)
    for name, field in reader.fields.items():
        if name == key or name.startswith("GGUF.") or name == "general.architecture":
            continue
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), value_type, sub_type=sub_type)
    for t in reader.tensors:
        if t.name == tensor:
            continue
        writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in reader.tensors:
        if t.name != tensor:
            writer.write_tensor_data(t.data)
    writer.close()
    return dest
