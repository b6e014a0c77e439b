"""Reusing a store Ollama wrote: listed, marked, loaded straight from its blobs, never written.

The Ollama store is built in a temporary directory exactly as Ollama lays it out (manifests by
host/namespace/model/tag, `blobs/sha256-<hex>`, Ollama's own config blob without our facts).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.errors import InvalidRequest
from server.registry import Registry
from server.settings import load_settings
from tests.integration.conftest import DEFAULT_MODEL, REPO, start_server

LAYER = "application/vnd.ollama.image."


def _blob(root: Path, data: bytes) -> dict[str, Any]:
    hexdigest = hashlib.sha256(data).hexdigest()
    (root / "blobs" / f"sha256-{hexdigest}").write_bytes(data)
    return {"digest": f"sha256:{hexdigest}", "size": len(data)}


def write_ollama_model(root: Path, name: tuple[str, str, str, str], gguf: Path) -> Path:
    """An Ollama-written model: GGUF, template and params layers, Ollama's config blob."""
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    target = root / "blobs" / f"sha256-{hashlib.sha256(gguf.read_bytes()).hexdigest()}"
    if not target.exists():
        shutil.copyfile(gguf, target)
    model: dict[str, Any] = {"mediaType": LAYER + "model", "digest": "sha256:" + target.name[7:]}
    model["size"] = target.stat().st_size
    template = {"mediaType": LAYER + "template", **_blob(root, b"{{ .Prompt }}")}
    params = {"mediaType": LAYER + "params", **_blob(root, b'{"stop": ["<|im_end|>"]}')}
    config = {
        "model_format": "gguf",
        "model_family": "llama",
        "model_families": ["llama"],
        "model_type": "135M",
        "file_type": "Q4_1",
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [model["digest"]]},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            **_blob(root, json.dumps(config).encode()),
        },
        "layers": [model, template, params],
    }
    path = root / "manifests" / Path(*name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest))
    return path


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under `root` with its size and modification time."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
    }


@pytest.fixture(scope="module")
def ollama_root(default_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ollama") / "models"
    lib = ("registry.ollama.ai", "library")
    write_ollama_model(root, (*lib, "smollm2", "135m"), default_model_path)
    write_ollama_model(root, (*lib, "tinyllama", "chat"), default_model_path)
    # Things a damaged or hostile store may hold; none may break listing or reach outside.
    bad = root / "manifests" / "registry.ollama.ai" / "library" / "evil" / "latest"
    bad.parent.mkdir(parents=True)
    bad.write_text(
        json.dumps(
            {
                "schemaVersion": 2,
                "config": {"mediaType": "x", "digest": "sha256:../../../etc/passwd", "size": 1},
                "layers": [],
            }
        )
    )
    missing = root / "manifests" / "registry.ollama.ai" / "library" / "gone" / "latest"
    missing.parent.mkdir(parents=True)
    manifest = json.loads((root / "manifests" / Path(*lib, "smollm2", "135m")).read_text())
    manifest["layers"][0]["digest"] = "sha256:" + "e" * 64
    missing.write_text(json.dumps(manifest))
    return root


@pytest.fixture
def registry(ollama_root: Path, tmp_home: Path) -> Registry:
    return Registry(load_settings(home=tmp_home, ollama_models=str(ollama_root)))


def test_ollama_models_are_listed_marked_and_resolve_to_ollamas_blobs(
    registry: Registry, ollama_root: Path, tmp_home: Path
) -> None:
    before = snapshot(ollama_root)
    records = registry.list()
    assert sorted(r.name.display for r in records) == ["smollm2:135m", "tinyllama:chat"]
    assert all(r.from_ollama for r in records)
    assert all(r.config.file_type == "Q4_1" for r in records)  # Ollama's config is read as is

    resolved = registry.resolve("SmolLM2:135M")
    assert resolved.from_ollama
    assert resolved.path.parent == ollama_root / "blobs"
    assert resolved.info.block_count == 30  # header read from Ollama's blob
    assert registry.resolve("smollm2:135m-instruct-q4_1").name == "smollm2:135m"  # alias

    with pytest.raises(InvalidRequest, match="ollama rm"):
        registry.remove("tinyllama:chat")
    with pytest.raises(InvalidRequest, match="Ollama's store"):
        registry.copy("tinyllama:chat", "mine:1")
    assert snapshot(ollama_root) == before
    assert not (tmp_home / "blobs").exists() and not (tmp_home / "manifests").exists()


def test_our_store_shadows_ollamas_and_can_be_switched_off(
    registry: Registry, ollama_root: Path, tmp_home: Path, make_gguf: Any
) -> None:
    ours = registry.import_file(make_gguf(), "tinyllama:chat")
    [listed] = [r for r in registry.list() if r.name.display == "tinyllama:chat"]
    assert not listed.from_ollama and listed.digest == ours.digest
    assert registry.resolve("tinyllama:chat").path == ours.model_path
    registry.remove("tinyllama:chat")  # ours goes; Ollama's shows again
    assert registry.resolve("tinyllama:chat").from_ollama

    alone = Registry(load_settings(home=tmp_home, ollama_models=""))
    assert alone.ollama_store is None and alone.list() == []


def test_cli_list_marks_ollamas_models(ollama_root: Path, tmp_home: Path) -> None:
    env = {**os.environ, "GGUF_SERVE_HOME": str(tmp_home), "OLLAMA_MODELS": str(ollama_root)}
    env.pop("GGUF_SERVE_OLLAMA_MODELS", None)
    done = subprocess.run(
        [sys.executable, "-m", "server", "list"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    header, *rows = done.stdout.splitlines()
    assert header.split() == ["NAME", "ID", "SIZE", "QUANT", "PARAMS", "MODIFIED", "FROM"]
    assert sorted(row.split()[0] for row in rows) == ["smollm2:135m", "tinyllama:chat"]
    assert all(row.rstrip().endswith("ollama") for row in rows)
    shown = subprocess.run(
        [sys.executable, "-m", "server", "show", "tinyllama:chat"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert f"ollama store {ollama_root} (read-only)" in shown.stdout
    assert "Q4_1" in shown.stdout


def test_the_server_serves_a_model_from_ollamas_store(
    ollama_root: Path, tmp_home: Path, tmp_path: Path
) -> None:
    before = snapshot(ollama_root)
    server = start_server(tmp_home, tmp_path, "--parallel", "1", OLLAMA_MODELS=str(ollama_root))
    try:
        models = httpx.get(f"{server.url}/v1/models", timeout=10).json()
        assert {m["id"] for m in models["data"]} == {"smollm2:135m", "tinyllama:chat"}
        reply = httpx.post(
            f"{server.url}/v1/chat/completions",
            json={
                "model": DEFAULT_MODEL,
                "messages": [{"role": "user", "content": "What is the capital of France?"}],
                "max_tokens": 16,
                "temperature": 0,
            },
            timeout=60,
        )
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["model"] == DEFAULT_MODEL
        assert body["choices"][0]["message"]["content"].strip()
        assert body["usage"]["completion_tokens"] > 0
    finally:
        server.stop()
    assert snapshot(ollama_root) == before  # not a byte, not a timestamp written there
    assert not (tmp_home / "blobs").exists()
