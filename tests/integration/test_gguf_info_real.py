"""GGUF header facts of the real default model (its file comes from the model store)."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.errors import InvalidModelFile
from server.registry.gguf_info import GGUFInfo, read_gguf_info


@pytest.fixture(scope="module")
def real_info(default_model_path: Path) -> GGUFInfo:
    return read_gguf_info(default_model_path)


def test_default_model_facts(real_info: GGUFInfo, default_model_path: Path) -> None:
    info = real_info
    assert info.gguf_version == 3
    assert info.architecture == "llama"
    assert info.block_count == 30
    assert info.context_length == 8192
    assert info.embedding_length == 576
    assert info.head_count == 9
    assert info.head_count_kv == 3
    assert info.file_type == 3
    assert info.quant == "Q4_1"
    assert info.parameter_count == 134_515_008
    assert info.parameter_size == "135M"
    assert info.tensor_count == 272
    assert info.tensor_types == {"Q4_1": 210, "F32": 61, "Q8_0": 1}
    assert info.tensor_bytes == 96_576_768
    assert info.bits_per_weight == pytest.approx(96_576_768 * 8 / 134_515_008, abs=1e-3)
    assert info.size_bytes == default_model_path.stat().st_size == 98_362_432
    assert info.chat_template is not None and "<|im_start|>" in info.chat_template
    assert info.name == "Smollm2 135M 8k Lc100K Mix1 Ep2"


def test_default_model_metadata_skips_huge_arrays(real_info: GGUFInfo) -> None:
    meta = real_info.metadata
    assert meta["general.architecture"] == "llama"
    assert meta["llama.rope.freq_base"] == pytest.approx(100000.0)
    assert meta["tokenizer.ggml.add_bos_token"] is False
    assert meta["tokenizer.ggml.eos_token_id"] == 2
    assert meta["general.languages"] == ["en"]
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type"):
        assert key not in meta
    assert real_info.array_lengths["tokenizer.ggml.tokens"] == 49152
    assert real_info.array_lengths["tokenizer.ggml.merges"] == 48900
    # The whole summary survives a JSON round trip (it is cached in the config blob).
    assert GGUFInfo.model_validate_json(real_info.model_dump_json()) == real_info


def test_first_megabyte_of_the_real_model_is_refused(
    default_model_path: Path, tmp_path: Path
) -> None:
    cut = tmp_path / "cut.gguf"
    with default_model_path.open("rb") as src:
        cut.write_bytes(src.read(1_000_000))
    with pytest.raises(InvalidModelFile, match="truncated or corrupt"):
        read_gguf_info(cut)
