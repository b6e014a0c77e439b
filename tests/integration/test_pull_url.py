"""`gguf-serve pull <url> --as name:tag` from a plain file server on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.errors import ChecksumMismatch, InvalidModelFile, InvalidName, PullError
from server.registry import Registry, parse_name
from server.registry.sources import UrlSource
from server.settings import load_settings
from tests.integration.conftest import REPO
from tests.integration.fake_servers import LoopbackServer, Route, digest, files_under, sha256


@pytest.fixture
def files() -> Iterator[LoopbackServer]:
    server = LoopbackServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def registry(tmp_home: Path) -> Registry:
    return Registry(load_settings(home=tmp_home, ollama_models=""))


@pytest.fixture(scope="module")
def model_bytes(default_model_path: Path) -> bytes:
    return default_model_path.read_bytes()


def test_cli_pulls_a_url_with_a_progress_bar(
    files: LoopbackServer, tmp_home: Path, model_bytes: bytes
) -> None:
    files.routes["/models/smol.gguf"] = Route(body=model_bytes, etag='"v1"')
    env = {**os.environ, "GGUF_SERVE_HOME": str(tmp_home), "GGUF_SERVE_OLLAMA_MODELS": ""}
    done = subprocess.run(
        [sys.executable, "-m", "server", "pull", f"{files.url}/models/smol.gguf", "--as", "web:1"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "pulling smol.gguf" in done.stderr and "98.4/98.4 MB" in done.stderr
    assert done.stdout.startswith("pulled web:1 (")
    record = Registry(load_settings(home=tmp_home, ollama_models="")).record("web:1")
    assert record.model_digest == digest(model_bytes)
    facts = record.config.gguf_serve
    assert facts is not None and facts.source is not None
    assert facts.source.model_dump() == {"type": "url", "url": f"{files.url}/models/smol.gguf"}


def test_an_interrupted_url_download_resumes_with_if_range(
    files: LoopbackServer, registry: Registry, model_bytes: bytes
) -> None:
    route = Route(body=model_bytes, etag='"v1"', drop_after=[20_000_000])
    files.routes["/m.gguf"] = route
    record = registry.pull(f"{files.url}/m.gguf", as_name="web:1")
    assert record.model_path.read_bytes() == model_bytes
    first, second = files.requests_to("/m.gguf")
    assert "range" not in first.headers
    assert second.headers["if-range"] == '"v1"'
    assert 0 < int(second.headers["range"].removeprefix("bytes=").rstrip("-")) <= 20_000_000


def test_a_changed_file_is_not_resumed_from_the_old_version(
    files: LoopbackServer, registry: Registry, model_bytes: bytes, tmp_home: Path
) -> None:
    files.routes["/m.gguf"] = Route(body=model_bytes, etag='"a"', drop_after=[10_000_000])
    with pytest.raises(PullError, match="pull again to resume"):
        UrlSource(f"{files.url}/m.gguf", retries=0).pull(
            registry.store, parse_name("web:1"), lambda _: None
        )
    [stale] = [p for p in (tmp_home / "blobs").iterdir() if p.name.endswith("-partial")]
    other = model_bytes[:-1] + bytes([model_bytes[-1] ^ 1])
    files.routes["/m.gguf"] = Route(body=other, etag='"b"')  # a new version at the same URL

    record = registry.pull(f"{files.url}/m.gguf", as_name="web:1")
    assert record.model_digest == digest(other)
    assert "range" not in files.requests_to("/m.gguf")[-1].headers
    assert not stale.exists()  # the old version's partial is cleared away
    assert not [p for p in (tmp_home / "blobs").iterdir() if p.name.endswith("-partial")]


def test_a_url_that_is_not_gguf_or_has_the_wrong_digest_leaves_nothing(
    files: LoopbackServer, registry: Registry, tmp_home: Path, model_bytes: bytes
) -> None:
    files.routes["/page.gguf"] = Route(body=b"<html>not a model</html>" * 100)
    with pytest.raises(InvalidModelFile, match="not a GGUF file"):
        registry.pull(f"{files.url}/page.gguf", as_name="web:1")
    assert files_under(tmp_home) == []

    files.routes["/m.gguf"] = Route(body=model_bytes)
    wrong = "sha256:" + "0" * 64
    with pytest.raises(ChecksumMismatch, match="sha256 mismatch"):
        registry.pull(f"{files.url}/m.gguf", as_name="web:1", digest=wrong)
    assert files_under(tmp_home) == []
    right = registry.pull(f"{files.url}/m.gguf", as_name="web:1", digest=digest(model_bytes))
    assert right.model_digest == f"sha256:{sha256(model_bytes)}"


def test_a_url_needs_a_name(registry: Registry) -> None:
    with pytest.raises(InvalidName, match="--as name:tag"):
        registry.pull("https://example.com/m.gguf")
