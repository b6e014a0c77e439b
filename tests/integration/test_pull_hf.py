"""Pulling `hf.co/<user>/<repo>:<quant>` from a loopback stand-in for the Hugging Face hub.

HF_ENDPOINT points huggingface_hub (and so our source) at the fake hub; its `resolve` URLs
redirect to a second server, another origin, as the real hub redirects to its CDN.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.engine.factory import start_engine
from server.engine.loader import ModelFacts
from server.engine.options import LoadOptions
from server.engine.types import GenerationRequest, SamplingParams
from server.errors import ChecksumMismatch, ModelNotFound
from server.registry import Registry, read_gguf_info
from server.settings import load_settings
from tests.integration.fake_servers import (
    FakeHub,
    LoopbackServer,
    digest,
    files_under,
    split_gguf,
)

MakeGGUF = Any
DEFAULT_FILE = "SmolLM2-135M-Instruct-Q4_1.gguf"


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    cdn = LoopbackServer()
    server = FakeHub(cdn)
    try:
        yield server
    finally:
        server.close()
        cdn.close()


@pytest.fixture
def hf_registry(hub: FakeHub, tmp_home: Path, monkeypatch: pytest.MonkeyPatch) -> Registry:
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    settings = load_settings(home=tmp_home, ollama_models="")
    assert settings.hf_endpoint == hub.url and settings.hf_token == "hf_test_token"
    return Registry(settings)


@pytest.fixture(scope="module")
def model_bytes(default_model_path: Path) -> bytes:
    return default_model_path.read_bytes()


def generate(path: Path, n_layer: int) -> str:
    opts = LoadOptions(n_ctx=512, n_parallel=1, n_threads=2, n_batch=128, n_ubatch=128)
    engine = start_engine(path, opts, ModelFacts(8192, n_layer), n_ctx_cap=8192, max_queue=4)
    try:
        prompt = engine.tokenize(
            "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
        )
        request = GenerationRequest(prompt, sampling=SamplingParams(temperature=0.0), max_tokens=16)

        async def collect() -> str:
            return "".join([event.text async for event in engine.submit(request)])

        return asyncio.run(collect())
    finally:
        engine.close()


def test_pull_picks_the_file_of_the_quant_label_and_verifies_it(
    hub: FakeHub, hf_registry: Registry, model_bytes: bytes, make_gguf: MakeGGUF
) -> None:
    decoy = make_gguf("q8.gguf", seed=1).read_bytes()
    projector = make_gguf("mm.gguf", seed=2).read_bytes()
    hub.add_repo(
        "bartowski/SmolLM2-GGUF",
        {
            DEFAULT_FILE: model_bytes,
            "SmolLM2-135M-Instruct-Q8_0.gguf": decoy,
            "mmproj-SmolLM2-Q4_1.gguf": projector,
        },
    )
    record = hf_registry.pull("hf.co/bartowski/SmolLM2-GGUF:q4_1")  # any case
    assert record.name.display == "hf.co/bartowski/SmolLM2-GGUF:q4_1"
    assert record.model_digest == digest(model_bytes)
    assert record.model_path.read_bytes() == model_bytes
    facts = record.config.gguf_serve
    assert facts is not None and facts.source is not None
    assert facts.source.model_dump() == {
        "type": "huggingface",
        "repo": "bartowski/SmolLM2-GGUF",
        "revision": hub.revision,
        "files": [DEFAULT_FILE],
    }
    # The token goes to the hub, never to the CDN on another origin.
    api = hub.requests_to("/api/models/bartowski/SmolLM2-GGUF")
    assert api and api[0].headers["authorization"] == "Bearer hf_test_token"
    resolve = hub.requests_to(f"/bartowski/SmolLM2-GGUF/resolve/{hub.revision}/{DEFAULT_FILE}")
    assert resolve[0].headers["authorization"] == "Bearer hf_test_token"
    cdn = [s for s in hub.cdn.seen if s.method == "GET"]
    assert len(cdn) == 1 and "authorization" not in cdn[0].headers

    assert "Paris" in generate(hf_registry.resolve("HF.CO/bartowski/smollm2-gguf:Q4_1").path, 30)


def test_no_tag_means_q4_k_m_and_huggingface_co_works_too(
    hub: FakeHub, hf_registry: Registry, make_gguf: MakeGGUF
) -> None:
    q4 = make_gguf("a.gguf", seed=1).read_bytes()
    q8 = make_gguf("b.gguf", seed=2).read_bytes()
    hub.add_repo("org/tiny", {"tiny.Q8_0.gguf": q8, "tiny.Q4_K_M.gguf": q4})
    assert hf_registry.pull("hf.co/org/tiny").model_digest == digest(q4)
    record = hf_registry.pull("huggingface.co/org/tiny:Q8_0")
    assert record.model_digest == digest(q8)
    assert record.name.display == "huggingface.co/org/tiny:Q8_0"


def test_a_split_gguf_is_pulled_whole_and_loads_from_its_first_part(
    hub: FakeHub,
    hf_registry: Registry,
    default_model_path: Path,
    tmp_path: Path,
    tmp_home: Path,
) -> None:
    parts = split_gguf(default_model_path, tmp_path, "SmolLM2-Q4_1", 3)
    hub.add_repo("org/split", {f"Q4_1/{p.name}": p.read_bytes() for p in parts})
    record = hf_registry.pull("hf.co/org/split:Q4_1")

    assert record.is_split
    assert [layer.digest for layer in record.manifest.model_layers] == [
        digest(p.read_bytes()) for p in parts
    ]
    facts = record.config.gguf_serve
    assert facts is not None and facts.source is not None
    assert facts.source.model_dump()["files"] == [f"Q4_1/{p.name}" for p in parts]

    resolved = hf_registry.resolve("hf.co/org/split:Q4_1")
    assert resolved.path.name == "model-00001-of-00003.gguf"
    assert resolved.path.parent.parent == tmp_home / "splits"
    whole = read_gguf_info(default_model_path)
    assert resolved.info.parameter_count == whole.parameter_count
    assert resolved.info.tensor_count == whole.tensor_count
    assert "Paris" in generate(resolved.path, 30)

    hf_registry.remove("hf.co/org/split:Q4_1")
    assert files_under(tmp_home) == []  # parts and their links are gone


def test_a_wrong_hub_sha256_is_refused_and_nothing_is_left(
    hub: FakeHub, hf_registry: Registry, make_gguf: MakeGGUF, tmp_home: Path
) -> None:
    hub.add_repo(
        "org/bad", {"bad-Q8_0.gguf": make_gguf().read_bytes()}, wrong_sha={"bad-Q8_0.gguf"}
    )
    with pytest.raises(ChecksumMismatch, match="sha256 mismatch"):
        hf_registry.pull("hf.co/org/bad:Q8_0")
    assert files_under(tmp_home) == []
    assert hf_registry.list() == []


def test_missing_repo_and_missing_quant_say_what_is_there(
    hub: FakeHub, hf_registry: Registry, make_gguf: MakeGGUF
) -> None:
    with pytest.raises(ModelNotFound, match="org/nothing was not found"):
        hf_registry.pull("hf.co/org/nothing:Q4_K_M")
    hub.add_repo("org/tiny", {"tiny.Q8_0.gguf": make_gguf().read_bytes()})
    with pytest.raises(ModelNotFound, match=r"carries the quantization 'Q2_K'.*tiny\.Q8_0\.gguf"):
        hf_registry.pull("hf.co/org/tiny:Q2_K")
