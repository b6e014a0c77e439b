"""Memory over HTTP and from the command line, against a real server with a memory budget.

The server (`memory_budget` 400 MiB, the default model at 2048 tokens x 4 slots: ~300 MiB
planned) answers `POST /plan`, `/api/show` with a plan, `/api/ps` with the plan's size; a
request whose `num_ctx` cannot fit is refused with numbers while the model keeps serving; and
`gguf-serve ps` / `gguf-serve stop` / `gguf-serve plan` are run as a user runs them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import DEFAULT_MODEL, REPO, RunningServer, start_server
from tests.integration.fake_servers import FakeHub, LoopbackServer

MiB = 1 << 20
KV_ROW = 30 * 2 * 3 * 64  # layers x (K, V) x KV heads x head size: elements per token
SHORT: dict[str, Any] = {"options": {"num_predict": 2}}


@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHub]:
    cdn = LoopbackServer()
    hub = FakeHub(cdn)
    yield hub
    hub.close()
    cdn.close()


@pytest.fixture(scope="module")
def budgeted(
    model_home: Path, tmp_path_factory: pytest.TempPathFactory, hub: FakeHub
) -> Iterator[RunningServer]:
    srv = start_server(
        model_home,
        tmp_path_factory.mktemp("logs"),
        GGUF_SERVE_MEMORY_BUDGET="400MiB",
        HF_ENDPOINT=hub.url,
    )
    yield srv
    srv.stop()


def cli(server: RunningServer, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    port = server.url.rsplit(":", 1)[1]
    full_env = {**os.environ, "GGUF_SERVE_PORT": port, "GGUF_SERVE_OLLAMA_MODELS": "", **env}
    return subprocess.run(
        [sys.executable, "-m", "server", *args],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def post(server: RunningServer, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=120)


def test_plan_endpoint(budgeted: RunningServer) -> None:
    r = post(budgeted, "/plan", {"model": DEFAULT_MODEL, "ctx": 8192, "kv_type": "q8_0"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["source"] == "store" and body["header_bytes"] is None
    plan = body["plan"]
    assert plan["n_ctx"] == 8192 and plan["n_parallel"] == 4
    assert plan["kv"]["total"] == 8192 * 4 * KV_ROW // 32 * 34  # q8_0: 34 bytes per 32
    assert plan["n_gpu_layers"] == 0 and plan["gpu_layers_auto"]  # no GPU here
    assert plan["devices"][0]["name"] == "CPU" and plan["fits"]
    assert plan["max_ctx"] == 8192  # the trained length fits this machine


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"model": "hf.co/nobody/nothing:Q4_K_M"}, 404, "not found"),
        ({"model": DEFAULT_MODEL, "ctx": -1}, 400, "ctx"),
        ({"model": DEFAULT_MODEL, "kv_type": "q3"}, 400, "kv_type"),
        ({"model": DEFAULT_MODEL, "ctx": 100000}, 400, "trained context length"),
        ({"model": DEFAULT_MODEL, "typo": 1}, 400, "typo"),
    ],
)
def test_plan_endpoint_errors(
    budgeted: RunningServer, body: dict[str, Any], status: int, words: str
) -> None:
    r = post(budgeted, "/plan", body)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]["message"]


def test_plan_of_a_model_not_pulled_reads_only_its_header(
    budgeted: RunningServer, hub: FakeHub, default_model_path: Path
) -> None:
    data = default_model_path.read_bytes()
    hub.add_repo("someone/SmolLM2-GGUF", {"SmolLM2-135M-Instruct-Q4_1.gguf": data})
    before = hub.cdn.bytes_sent  # type: ignore[attr-defined]
    r = post(budgeted, "/plan", {"model": "hf.co/someone/SmolLM2-GGUF:Q4_1", "ctx": 4096})
    assert r.status_code == 200, r.text
    body = r.json()
    assert 0 < body["header_bytes"] <= 4 * MiB
    assert hub.cdn.bytes_sent - before == body["header_bytes"]  # type: ignore[attr-defined]
    assert body["plan"]["weights"] == 96_576_768
    assert "Hugging Face" in body["source"]


def test_show_has_the_plan_and_ps_its_size(budgeted: RunningServer) -> None:
    show = post(budgeted, "/api/show", {"model": DEFAULT_MODEL}).json()
    plan = show["plan"]
    assert plan["n_ctx"] == 2048 and plan["n_parallel"] == 4
    post(
        budgeted,
        "/api/generate",
        {"model": DEFAULT_MODEL, "prompt": "Hi", "stream": False, **SHORT},
    )
    running = httpx.get(f"{budgeted.url}/api/ps").json()["models"]
    assert [m["name"] for m in running] == [DEFAULT_MODEL]
    m = running[0]
    assert m["size"] == plan["total"] and m["size_vram"] == 0
    assert (m["kv_type_k"], m["kv_type_v"], m["parallel"]) == ("f16", "f16", 4)
    assert m["context_length"] == 2048


def test_num_ctx_that_cannot_fit_is_refused_and_the_model_keeps_serving(
    budgeted: RunningServer,
) -> None:
    post(
        budgeted,
        "/api/generate",
        {"model": DEFAULT_MODEL, "prompt": "Hi", "stream": False, **SHORT},
    )
    before = httpx.get(f"{budgeted.url}/api/ps").json()["models"]
    r = post(
        budgeted,
        "/api/generate",
        {"model": DEFAULT_MODEL, "prompt": "Hi", "options": {"num_ctx": 8192}, "stream": False},
    )
    assert r.status_code == 400, r.text
    message = r.json()["error"]
    assert "needs" in message and "available for models" in message and "at most" in message
    after = httpx.get(f"{budgeted.url}/api/ps").json()["models"]
    assert [m["name"] for m in after] == [m["name"] for m in before]
    assert after[0]["context_length"] == before[0]["context_length"]
    question = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    ok = post(
        budgeted,
        "/v1/chat/completions",
        {"model": DEFAULT_MODEL, "messages": question, "temperature": 0, "max_tokens": 24},
    )
    assert ok.status_code == 200 and "Paris" in ok.json()["choices"][0]["message"]["content"]


def test_cli_ps_and_stop(budgeted: RunningServer) -> None:
    post(
        budgeted,
        "/api/generate",
        {"model": DEFAULT_MODEL, "prompt": "Hi", "stream": False, **SHORT},
    )
    ps = cli(budgeted, "ps")
    assert ps.returncode == 0, ps.stderr
    header, row = ps.stdout.splitlines()[:2]
    assert header.split() == ["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "KV", "SLOTS", "UNTIL"]
    assert row.startswith(DEFAULT_MODEL) and "100% CPU" in row and "f16/f16" in row
    assert "from now" in row
    stop = cli(budgeted, "stop", DEFAULT_MODEL)
    assert stop.returncode == 0 and f"stopped {DEFAULT_MODEL}" in stop.stdout
    deadline = time.monotonic() + 10
    while httpx.get(f"{budgeted.url}/api/ps").json()["models"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert httpx.get(f"{budgeted.url}/api/ps").json()["models"] == []
    again = cli(budgeted, "stop", DEFAULT_MODEL)
    assert again.returncode == 1 and "is not loaded" in again.stderr


def test_cli_plan_for_a_pulled_and_a_not_pulled_model(
    budgeted: RunningServer, hub: FakeHub, model_home: Path, default_model_path: Path
) -> None:
    env = {"GGUF_SERVE_HOME": str(model_home), "HF_ENDPOINT": hub.url}
    local = cli(budgeted, "plan", DEFAULT_MODEL, "--ctx", "8192", "--kv-type", "q8_0", **env)
    assert local.returncode == 0, local.stderr
    text = local.stdout
    assert "from the store" in text and "q8_0/q8_0" in text
    assert "382.5 MiB" in text  # KV: 30 layers x 8192 tokens x 4 slots at q8_0
    assert "largest context that fits: 8192 per slot (the trained length)" in text
    as_json = cli(budgeted, "plan", DEFAULT_MODEL, "--json", "--parallel", "1", **env)
    plan = json.loads(as_json.stdout)["plan"]
    assert plan["kv"]["total"] == 4096 * KV_ROW * 2

    hub.add_repo("someone/Smol-GGUF", {"Smol-Q4_1.gguf": default_model_path.read_bytes()})
    remote = cli(budgeted, "plan", "hf.co/someone/Smol-GGUF:Q4_1", "--gpu-layers", "auto", **env)
    assert remote.returncode == 0, remote.stderr
    assert "not pulled: header read over HTTP" in remote.stdout
    assert "GPU layers 0 of 31 (auto: no GPU)" in remote.stdout
    missing = cli(budgeted, "plan", "hf.co/someone/missing:Q4_K_M", **env)
    assert missing.returncode == 1 and missing.stderr.startswith("gguf-serve: error:")
    bad = cli(budgeted, "plan", DEFAULT_MODEL, "--gpu-layers", "many", **env)
    assert bad.returncode == 2 and "--gpu-layers" in bad.stderr
