"""Pulling through the Ollama registry protocol from a real registry on loopback.

The registry serves the real default model (its manifest, config, GGUF, template and params
blobs); tests break the connection mid-blob, corrupt bytes and send hostile manifests.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.engine.factory import start_engine
from server.engine.loader import ModelFacts
from server.engine.options import LoadOptions
from server.engine.types import GenerationRequest, SamplingParams
from server.errors import ChecksumMismatch, InvalidName, ModelNotFound, PullError
from server.registry import PullProgress, Registry, Store, parse_name
from server.registry.sources import OllamaRegistrySource
from server.settings import load_settings
from tests.integration.fake_servers import (
    FakeOllamaRegistry,
    digest,
    files_under,
    running,
    sha256,
)

REPO = "library/smol"
TEMPLATE = "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}{{ .Prompt }}"
PARAMS = {"stop": ["<|im_end|>"], "temperature": 0.2}


@pytest.fixture(scope="module")
def model_bytes(default_model_path: Path) -> bytes:
    return default_model_path.read_bytes()


@pytest.fixture
def registry_server() -> Iterator[FakeOllamaRegistry]:
    yield from running(FakeOllamaRegistry())  # type: ignore[misc]


@pytest.fixture
def registry(tmp_home: Path) -> Registry:
    return Registry(load_settings(home=tmp_home, ollama_models=""))


def name_at(server: FakeOllamaRegistry, tag: str = "1", repo: str = REPO) -> str:
    return f"{server.host}/{repo}:{tag}"


def test_pull_stores_model_template_and_params_and_the_model_generates(
    registry_server: FakeOllamaRegistry, registry: Registry, model_bytes: bytes, tmp_home: Path
) -> None:
    manifest = registry_server.add_model(REPO, "1", model_bytes, template=TEMPLATE, params=PARAMS)
    events: list[PullProgress] = []
    record = registry.pull(name_at(registry_server), events.append)

    assert record.name.display == f"{registry_server.host}/library/smol:1"
    assert record.model_path.read_bytes() == model_bytes
    assert record.model_digest == digest(model_bytes)
    template = record.manifest.layer("template")
    params = record.manifest.layer("params")
    assert template is not None and params is not None
    assert registry.store.blob_path(template.digest).read_text() == TEMPLATE
    assert json.loads(registry.store.blob_path(params.digest).read_bytes()) == PARAMS
    config = record.config.model_dump()
    assert config["rootfs"]["type"] == "layers"  # the registry's own config fields are kept
    assert config["file_type"] == "Q4_1" and config["model_type"] == "135M"
    assert config["gguf_serve"]["source"] == {
        "type": "ollama",
        "registry": registry_server.url,
        "name": f"{registry_server.host}/library/smol:1",
        "manifest": sha256(json.dumps(manifest).encode()),
    }

    statuses = [e.status for e in events]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    model_status = f"pulling {sha256(model_bytes)[:12]}"
    transfers = [e for e in events if e.status == model_status]
    assert transfers[-1].completed == transfers[-1].total == len(model_bytes)
    assert all(e.digest == digest(model_bytes) for e in transfers)
    assert not [p for p in (tmp_home / "blobs").iterdir() if p.name.endswith("-partial")]

    # The same pull again fetches the manifest and config, no layer.
    cdn_before = [s for s in registry_server.seen if s.path.startswith("/cdn/")]
    again = registry.pull(name_at(registry_server))
    cdn_after = [s for s in registry_server.seen if s.path.startswith("/cdn/")]
    assert again.digest == record.digest
    assert len(cdn_after) == len(cdn_before) + 1  # the config blob only

    resolved = registry.resolve(name_at(registry_server).replace("library/smol", "LIBRARY/Smol"))
    assert resolved.path == record.model_path
    opts = LoadOptions(n_ctx=512, n_parallel=1, n_threads=2, n_batch=128, n_ubatch=128)
    facts = ModelFacts(n_ctx_train=resolved.info.context_length or 0, n_layer=30)
    engine = start_engine(resolved.path, opts, facts, n_ctx_cap=8192, max_queue=4)
    try:
        prompt = engine.tokenize(
            "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
        )
        request = GenerationRequest(prompt, sampling=SamplingParams(temperature=0.0), max_tokens=16)

        async def collect() -> str:
            return "".join([event.text async for event in engine.submit(request)])

        assert "Paris" in asyncio.run(collect())
    finally:
        engine.close()


def test_a_dropped_connection_is_resumed_with_a_range_request(
    registry_server: FakeOllamaRegistry, registry: Registry, model_bytes: bytes
) -> None:
    registry_server.add_model(REPO, "1", model_bytes)
    route = registry_server.blob_route(model_bytes)
    route.drop_after = [30_000_000]  # the first GET stops after 30 MB
    record = registry.pull(name_at(registry_server))
    assert record.model_path.read_bytes() == model_bytes

    gets = registry_server.requests_to(f"/cdn/{sha256(model_bytes)}")
    assert len(gets) == 2
    assert "range" not in gets[0].headers
    resumed_at = int(gets[1].headers["range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= 30_000_000


def test_a_pull_that_gives_up_leaves_a_partial_the_next_pull_resumes(
    registry_server: FakeOllamaRegistry, registry: Registry, model_bytes: bytes, tmp_home: Path
) -> None:
    registry_server.add_model(REPO, "1", model_bytes, template=None)
    registry_server.blob_route(model_bytes).drop_after = [40_000_000]
    name = parse_name(name_at(registry_server))
    impatient = OllamaRegistrySource(name, retries=0)
    with pytest.raises(PullError, match="pull again to resume"):
        impatient.pull(registry.store, name, lambda _: None)

    partial = tmp_home / "blobs" / f"sha256-{sha256(model_bytes)}-partial"
    assert partial.is_file()
    left = partial.stat().st_size
    assert 0 < left <= 40_000_000
    assert registry.list() == []  # nothing half-written is listed

    record = registry.pull(str(name))
    assert record.model_path.read_bytes() == model_bytes
    gets = registry_server.requests_to(f"/cdn/{sha256(model_bytes)}")
    assert gets[-1].headers["range"] == f"bytes={left}-"
    assert not partial.exists()


def test_a_corrupted_blob_is_refused_and_nothing_is_left(
    registry_server: FakeOllamaRegistry, registry: Registry, model_bytes: bytes, tmp_home: Path
) -> None:
    manifest = registry_server.add_model(REPO, "1", model_bytes, template=TEMPLATE, params=PARAMS)
    route = registry_server.blob_route(model_bytes)
    corrupted = bytearray(model_bytes)
    corrupted[len(corrupted) // 2] ^= 0xFF
    route.body = bytes(corrupted)
    # Template and params first, so the bad blob arrives after good ones were stored.
    manifest["layers"] = manifest["layers"][1:] + manifest["layers"][:1]
    registry_server.set_manifest(REPO, "1", manifest)

    with pytest.raises(ChecksumMismatch, match=r"sha256 mismatch for blob sha256:") as caught:
        registry.pull(name_at(registry_server))
    assert "the partial file was deleted" in caught.value.message
    assert files_under(tmp_home) == []
    assert registry.list() == []


def test_a_blob_longer_than_its_manifest_says_is_refused(
    registry_server: FakeOllamaRegistry, registry: Registry, tmp_home: Path, make_gguf: Any
) -> None:
    data = make_gguf().read_bytes()
    manifest = registry_server.add_model(REPO, "1", data, template=None)
    manifest["layers"][0]["size"] = len(data) - 10
    registry_server.set_manifest(REPO, "1", manifest)
    with pytest.raises(ChecksumMismatch, match="more than the expected"):
        registry.pull(name_at(registry_server))
    assert files_under(tmp_home) == []


BAD_DIGESTS = [
    "../../../../etc/passwd",
    "sha256:../../../../etc/passwd",
    "sha256-../../outside",
    "sha256:" + "A" * 64,  # upper-case hex is not a digest
    "sha256:" + "0" * 63,
    "sha256:" + "0" * 64 + "/../../x",
    "sha512:" + "0" * 64,
]


@pytest.mark.parametrize("bad", BAD_DIGESTS)
@pytest.mark.parametrize("where", ["layer", "config"])
def test_manifest_digests_that_could_leave_the_store_are_refused(
    registry_server: FakeOllamaRegistry,
    registry: Registry,
    tmp_path: Path,
    tmp_home: Path,
    make_gguf: Any,
    bad: str,
    where: str,
) -> None:
    manifest = registry_server.add_model(REPO, "1", make_gguf().read_bytes())
    target = manifest["config"] if where == "config" else manifest["layers"][0]
    target["digest"] = bad
    registry_server.set_manifest(REPO, "1", manifest)
    before = sorted(p.name for p in tmp_path.iterdir())

    with pytest.raises(PullError, match="invalid manifest") as caught:
        registry.pull(name_at(registry_server))
    assert "digest" in caught.value.message
    assert files_under(tmp_home) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not [s for s in registry_server.seen if "/blobs/" in s.path or "/cdn/" in s.path]


@pytest.mark.parametrize(
    "name",
    [
        "127.0.0.1:1/../../evil:1",
        "127.0.0.1:1/library/..:1",
        "127.0.0.1:1/library/x:../../y",
        "/abs/path:1",
        "127.0.0.1:1/library/x@sha256:" + "0" * 64,
    ],
)
def test_names_that_could_leave_the_store_are_refused(
    registry: Registry, tmp_home: Path, name: str
) -> None:
    with pytest.raises(InvalidName):
        registry.pull(name)
    with pytest.raises(InvalidName):
        registry.pull("smollm2:135m", as_name=name)
    assert files_under(tmp_home) == []


def test_blob_paths_are_built_only_from_valid_digests(tmp_home: Path) -> None:
    store = Store(tmp_home)
    for bad in BAD_DIGESTS:
        with pytest.raises(ValueError, match="invalid digest"):
            store.blob_path(bad)


def test_an_unknown_tag_is_model_not_found(
    registry_server: FakeOllamaRegistry, registry: Registry
) -> None:
    with pytest.raises(ModelNotFound, match="was not found in the registry at http://127"):
        registry.pull(name_at(registry_server, tag="nope"))


def test_a_manifest_without_a_model_layer_is_refused(
    registry_server: FakeOllamaRegistry, registry: Registry, tmp_home: Path, make_gguf: Any
) -> None:
    manifest = registry_server.add_model(REPO, "1", make_gguf().read_bytes())
    manifest["layers"] = manifest["layers"][1:]
    registry_server.set_manifest(REPO, "1", manifest)
    with pytest.raises(PullError, match="has no model layer"):
        registry.pull(name_at(registry_server))
    assert files_under(tmp_home) == []


def test_two_concurrent_pulls_of_one_blob_write_it_once(
    registry_server: FakeOllamaRegistry,
    tmp_home: Path,
    model_bytes: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="server.registry.blob_writer")
    registry_server.add_model(REPO, "1", model_bytes, template=None)
    registry_server.add_model("library/other", "1", model_bytes, template=None)
    registry_server.blob_route(model_bytes).delay = 0.0005  # ~2 s for the whole blob
    results: dict[str, Any] = {}

    def pull(name: str) -> None:
        try:  # separate Registry objects, as two processes would have
            results[name] = Registry(load_settings(home=tmp_home, ollama_models="")).pull(name)
        except Exception as exc:  # reported below
            results[name] = exc

    names = [name_at(registry_server), name_at(registry_server, repo="library/other")]
    threads = [threading.Thread(target=pull, args=(n,)) for n in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    records = [results[n] for n in names]
    assert all(not isinstance(r, Exception) for r in records), records

    blob = tmp_home / "blobs" / f"sha256-{sha256(model_bytes)}"
    with blob.open("rb") as handle:
        assert hashlib.file_digest(handle, "sha256").hexdigest() == sha256(model_bytes)
    # The second pull waited for the first and found the blob: one download only.
    assert "waiting for another pull writing" in caplog.text
    assert len(registry_server.requests_to(f"/cdn/{sha256(model_bytes)}")) == 1
    assert sorted(r.name.model for r in Registry(load_settings(home=tmp_home)).list()) == [
        "other",
        "smol",
    ]
