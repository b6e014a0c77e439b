"""GGUF header facts from tiny synthetic files (made with the `gguf` package), and bad files.

The same facts of the real default model are checked in tests/integration/test_gguf_info_real.py.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import pytest

from server.errors import InvalidModelFile
from server.registry.gguf_info import GGUFInfo, check_header, read_gguf_info
from server.registry.tags import FILE_TYPE_LABELS


def test_metadata_keeps_scalars_and_short_arrays_and_counts_long_ones(tmp_path: Path) -> None:
    path = tmp_path / "meta.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_rope_freq_base(100000.0)
    writer.add_add_bos_token(False)
    writer.add_eos_token_id(2)
    writer.add_array("general.languages", ["en"])
    writer.add_token_list([f"t{i}" for i in range(1000)])
    writer.add_token_merges([f"a{i} b{i}" for i in range(900)])
    writer.add_token_types([1] * 1000)
    writer.add_tensor("output_norm.weight", np.ones(8, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    info = read_gguf_info(path)
    meta = info.metadata
    assert meta["general.architecture"] == "llama"
    assert meta["llama.rope.freq_base"] == pytest.approx(100000.0)
    assert meta["tokenizer.ggml.add_bos_token"] is False
    assert meta["tokenizer.ggml.eos_token_id"] == 2
    assert meta["general.languages"] == ["en"]
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type"):
        assert key not in meta
    assert info.array_lengths == {
        "general.languages": 1,
        "tokenizer.ggml.tokens": 1000,
        "tokenizer.ggml.merges": 900,
        "tokenizer.ggml.token_type": 1000,
    }
    # The whole summary survives a JSON round trip (it is cached in the config blob).
    assert GGUFInfo.model_validate_json(info.model_dump_json()) == info


def test_tiny_file_facts(make_gguf: Callable[..., Path]) -> None:
    path = make_gguf(vocab=300)
    info = read_gguf_info(path)
    params = 300 * 64 + 64 * 64 + 64
    q8_bytes = 300 * 64 // 32 * 34  # Q8_0: 32 weights in 34 bytes
    tensor_bytes = q8_bytes + 64 * 64 * 2 + 64 * 4
    assert info.architecture == "llama"
    assert info.name == "tiny-0"
    assert info.parameter_count == params
    assert info.parameter_size == "23.4K"
    assert info.file_type == 7
    assert info.quant == "Q8_0"
    assert info.tensor_types == {"Q8_0": 1, "F16": 1, "F32": 1}
    assert info.tensor_bytes == tensor_bytes
    assert info.bits_per_weight == pytest.approx(tensor_bytes * 8 / params, abs=1e-3)
    assert (info.context_length, info.block_count, info.head_count, info.head_count_kv) == (
        256,
        1,
        4,
        2,
    )
    assert info.embedding_length == 64
    assert info.size_bytes == path.stat().st_size
    assert info.array_lengths == {"tokenizer.ggml.tokens": 300}
    assert "tokenizer.ggml.tokens" not in info.metadata  # longer than the short-array limit


def test_short_arrays_are_kept(make_gguf: Callable[..., Path]) -> None:
    info = read_gguf_info(make_gguf(vocab=3))
    assert info.metadata["tokenizer.ggml.tokens"] == ["tok0", "tok1", "tok2"]


@pytest.mark.parametrize("file_type", [None, 1024, 99])
def test_quant_falls_back_to_the_dominant_weight_type(
    make_gguf: Callable[..., Path], file_type: int | None
) -> None:
    # Q8_0 holds 19,200 weights, F16 4,096; the 1-D F32 norm does not count.
    info = read_gguf_info(make_gguf(file_type=file_type))
    assert info.file_type == file_type
    assert info.quant == "Q8_0"


def test_no_chat_template(make_gguf: Callable[..., Path]) -> None:
    assert read_gguf_info(make_gguf(chat_template=None)).chat_template is None


def _expect_invalid(path: Path, fragment: str) -> InvalidModelFile:
    with pytest.raises(InvalidModelFile) as caught:
        read_gguf_info(path)
    assert fragment in caught.value.message
    assert "\n" not in caught.value.message
    return caught.value


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.gguf"
    path.write_bytes(b"")
    _expect_invalid(path, "is empty")


def test_not_gguf(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    _expect_invalid(path, "is not a GGUF file")


def test_missing_file_and_directory(tmp_path: Path) -> None:
    _expect_invalid(tmp_path / "absent.gguf", "cannot read")
    _expect_invalid(tmp_path, "cannot read")


def test_unsupported_version(tmp_path: Path) -> None:
    path = tmp_path / "v99.gguf"
    path.write_bytes(struct.pack("<4sIQQ", b"GGUF", 99, 0, 0) + b"\0" * 64)
    _expect_invalid(path, "GGUF version 99")


def test_absurd_counts(tmp_path: Path) -> None:
    path = tmp_path / "counts.gguf"
    path.write_bytes(struct.pack("<4sIQQ", b"GGUF", 3, 2**60, 1) + b"\0" * 64)
    _expect_invalid(path, "claims")


def test_header_only(tmp_path: Path) -> None:
    path = tmp_path / "short.gguf"
    path.write_bytes(b"GGUF\x03\0\0")
    _expect_invalid(path, "too small for a GGUF header")


@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.6, 0.95])
def test_truncated_tiny_file(
    make_gguf: Callable[..., Path], tmp_path: Path, fraction: float
) -> None:
    data = make_gguf().read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: int(len(data) * fraction)])
    error = _expect_invalid(cut, "truncated")
    assert str(cut) in error.message


def test_file_without_tensors(tmp_path: Path) -> None:
    path = tmp_path / "vocab.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_token_list(["a", "b"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    _expect_invalid(path, "holds no tensors")


def test_check_header_returns_the_size(make_gguf: Callable[..., Path]) -> None:
    path = make_gguf()
    assert check_header(path) == path.stat().st_size


def test_file_type_labels_match_llama_cpp() -> None:
    """Our table is llama.cpp's `llama_ftype` as the gguf package ships it."""
    shipped = {
        int(ft): ft.name.removeprefix("MOSTLY_").removeprefix("ALL_")
        for ft in gguf.LlamaFileType
        if ft.name != "GUESSED"
    }
    for value, label in FILE_TYPE_LABELS.items():
        assert shipped[value] == label
