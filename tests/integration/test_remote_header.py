"""Reading a model's GGUF header over HTTP ranges, before any download, from the loopback hub,
registry and file servers the pull tests use. Each test counts the bytes the server sent.

The real default model (94 MiB, a 1.7 MiB header) is served; a plan needs only its header.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from server.errors import InvalidModelFile, InvalidRequest, ModelNotFound, PullError
from server.registry import Registry, read_gguf_info
from server.registry.gguf_info import GGUFInfo, read_split_gguf_info
from server.registry.sources.header import FIRST_REQUEST
from server.settings import load_settings
from tests.integration.fake_servers import (
    FakeHub,
    FakeOllamaRegistry,
    LoopbackServer,
    Route,
    files_under,
    running,
    split_gguf,
)

MiB = 1 << 20
HEADER_BUDGET = 4 * MiB  # the 1.7 MiB header, in two requests (1 MiB, then up to 2 MiB)


@pytest.fixture(scope="module")
def model_bytes(default_model_path: Path) -> bytes:
    return default_model_path.read_bytes()


@pytest.fixture(scope="module")
def local_info(default_model_path: Path) -> GGUFInfo:
    return read_gguf_info(default_model_path)


@pytest.fixture
def cdn() -> Iterator[LoopbackServer]:
    yield from running(LoopbackServer())  # type: ignore[misc]


@pytest.fixture
def hub(cdn: LoopbackServer) -> Iterator[FakeHub]:
    yield from running(FakeHub(cdn))  # type: ignore[misc]


@pytest.fixture
def registry(tmp_home: Path, hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> Registry:
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    return Registry(load_settings(home=tmp_home, ollama_models=""))


def test_hugging_face_header_without_the_weights(
    hub: FakeHub,
    cdn: LoopbackServer,
    registry: Registry,
    model_bytes: bytes,
    local_info: GGUFInfo,
    tmp_home: Path,
) -> None:
    hub.add_repo("someone/SmolLM2-GGUF", {"SmolLM2-135M-Instruct-Q4_1.gguf": model_bytes})
    remote = registry.remote_header("hf.co/someone/SmolLM2-GGUF:Q4_1")
    assert remote.info == local_info  # the same facts as reading the whole file here
    assert remote.files == ["SmolLM2-135M-Instruct-Q4_1.gguf"]
    assert FIRST_REQUEST < remote.bytes_read <= HEADER_BUDGET
    assert cdn.bytes_sent == remote.bytes_read  # exactly the ranges asked for
    assert cdn.bytes_sent < len(model_bytes) // 20
    ranges = [s.headers.get("range") for s in cdn.seen]
    assert ranges == [f"bytes=0-{FIRST_REQUEST - 1}", f"bytes={FIRST_REQUEST}-{2 * MiB - 1}"]
    assert files_under(tmp_home) == []  # nothing was stored


def test_split_gguf_header_reads_every_part(
    hub: FakeHub,
    cdn: LoopbackServer,
    registry: Registry,
    default_model_path: Path,
    tmp_path: Path,
) -> None:
    parts = split_gguf(default_model_path, tmp_path, "SmolLM2-Q4_1", 3)
    hub.add_repo("someone/split", {p.name: p.read_bytes() for p in parts})
    remote = registry.remote_header("hf.co/someone/split:Q4_1")
    assert remote.info == read_split_gguf_info(parts)
    assert len(remote.files) == 3
    assert remote.info.tensor_bytes == read_gguf_info(default_model_path).tensor_bytes
    assert cdn.bytes_sent <= HEADER_BUDGET + 2 * FIRST_REQUEST
    assert cdn.bytes_sent < sum(p.stat().st_size for p in parts) // 10


def test_ollama_registry_header(model_bytes: bytes, local_info: GGUFInfo, tmp_home: Path) -> None:
    with FakeOllamaRegistry() as server:
        server.add_model("library/smol", "1", model_bytes)
        registry = Registry(load_settings(home=tmp_home, ollama_models=""))
        remote = registry.remote_header(f"{server.host}/library/smol:1")
        assert remote.info == local_info
        assert remote.bytes_read <= HEADER_BUDGET
        # the manifest (a few hundred bytes), then the model blob's first bytes only
        assert server.bytes_sent < HEADER_BUDGET + 4096
        assert files_under(tmp_home) == []


def test_url_header_and_a_server_that_ignores_ranges(
    model_bytes: bytes, local_info: GGUFInfo, tmp_home: Path
) -> None:
    registry = Registry(load_settings(home=tmp_home, ollama_models=""))
    with LoopbackServer() as server:
        server.routes["/m.gguf"] = Route(body=model_bytes)
        server.routes["/whole.gguf"] = Route(body=model_bytes, ranges=False)
        remote = registry.remote_header(f"{server.url}/m.gguf")
        assert remote.info == local_info and remote.bytes_read <= HEADER_BUDGET
        whole = registry.remote_header(f"{server.url}/whole.gguf")
        assert whole.info == local_info
        # each 200 answer is read as far as needed, then the connection is dropped
        assert whole.bytes_read <= HEADER_BUDGET + 2 * FIRST_REQUEST
        assert server.bytes_sent < len(model_bytes) // 2


def test_what_is_not_a_gguf_model_is_refused(tmp_home: Path) -> None:
    registry = Registry(load_settings(home=tmp_home, ollama_models=""))
    with LoopbackServer() as server:
        server.routes["/page.gguf"] = Route(body=b"<html>" + b"x" * 5000)
        with pytest.raises(InvalidModelFile, match="not a GGUF"):
            registry.remote_header(f"{server.url}/page.gguf")
        with pytest.raises(PullError, match="404"):
            registry.remote_header(f"{server.url}/missing.gguf")


def test_missing_hub_repo_and_a_catalog_wheel(registry: Registry) -> None:
    with pytest.raises(ModelNotFound, match="not found"):
        registry.remote_header("hf.co/nobody/nothing:Q4_K_M")
    with pytest.raises(InvalidRequest, match="pull it first"):
        registry.remote_header("smollm2:135m")  # a catalog model comes inside a wheel
