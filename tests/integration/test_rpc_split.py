"""One model split over two simulated hosts with llama.cpp's RPC backend, for real.

Two `gguf-serve rpc-server` processes (the make-built rpc-server), each in a network namespace
of its own, hold the default model's layers and KV cache; the server reaches them at their
namespace addresses. The same server also has a local copy of the model, for the reference
run and to show other models keep serving while the split one is down.

Opt out only explicitly: GGUF_SERVE_TEST_SKIP_RPC=1. Missing pieces fail with what to do.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.engine.rpc import describe_servers, reachable
from server.registry import Store
from tests.integration.conftest import REPO, RunningServer, start_server
from tests.integration.simhosts import SKIP_ENV, SimHost, make_hosts, preflight, remove_hosts

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(300),
    pytest.mark.skipif(os.environ.get(SKIP_ENV) == "1", reason=f"{SKIP_ENV}=1 (opted out)"),
]

SPLIT = "smollm2:135m"  # the default model, split over the two hosts by the catalog
LOCAL = "smollm2-local:135m"  # the same file, loaded in-process
PORT = 50052
RPC_BINARY = REPO / ".cache" / "rpc-server" / "rpc-server"
ASK = [{"role": "user", "content": "Name three colours of the rainbow."}]


def start_rpc_server(host: SimHost, log_dir: Path) -> subprocess.Popen[bytes]:
    """Our `rpc-server` command inside the host's namespace, bound to its private address."""
    log = (log_dir / f"rpc-{host.index}.log").open("ab")
    proc = subprocess.Popen(
        host.exec_argv(
            sys.executable, "-m", "server", "rpc-server",
            "--host", host.address, "--port", str(PORT), "--threads", "1",
            "--binary", str(RPC_BINARY),
        ),
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )  # fmt: skip
    host.procs.append(proc)
    deadline = time.monotonic() + 30
    while not reachable(f"{host.address}:{PORT}", timeout=1):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"rpc-server on {host.netns} did not start")
        time.sleep(0.1)
    return proc


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[SimHost]]:
    why = preflight()
    if why is not None:
        pytest.fail(f"{why}; set {SKIP_ENV}=1 to skip these tests on purpose")
    if not RPC_BINARY.is_file():
        pytest.fail(f"no {RPC_BINARY}: run `make rpc-server` (or set {SKIP_ENV}=1 to skip)")
    made = make_hosts(2)
    try:
        logs = tmp_path_factory.mktemp("rpc")
        for host in made:
            start_rpc_server(host, logs)
        yield made
    finally:
        remove_hosts(made)


@pytest.fixture(scope="module")
def split_home(default_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("home")
    store = Store(home)
    store.import_file(default_model_path, SPLIT)
    store.copy(SPLIT, LOCAL)
    return home


@pytest.fixture(scope="module")
def planned(split_home: Path, hosts: list[SimHost]) -> tuple[dict[str, Any], str]:
    """`gguf-serve plan --rpc` (JSON and table) at the split server's settings, run as a user
    runs it before that server holds the rpc-servers (each serves one client at a time)."""
    endpoints = ",".join(f"{h.address}:{PORT}" for h in hosts)
    argv = [
        sys.executable, "-m", "server", "plan", SPLIT, "--home", str(split_home),
        "--rpc", endpoints, "--tensor-split", "1,1", "--gpu-layers", "-1",
        "--ctx", "2048", "--parallel", "2",
    ]  # fmt: skip
    runs = [
        subprocess.run(a, capture_output=True, text=True, timeout=120, cwd=REPO)
        for a in ([*argv, "--json"], argv)
    ]
    for run in runs:
        assert run.returncode == 0, run.stderr
    return json.loads(runs[0].stdout)["plan"], runs[1].stdout


@pytest.fixture(scope="module")
def split_server(
    planned: tuple[dict[str, Any], str],  # first: the plan asks the servers before we hold them
    hosts: list[SimHost],
    split_home: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningServer]:
    endpoints = [f"{h.address}:{PORT}" for h in hosts]
    catalog = {
        SPLIT: {"load": {"rpc_servers": endpoints, "n_gpu_layers": -1, "tensor_split": [1, 1]}}
    }
    srv = start_server(
        split_home,
        tmp_path_factory.mktemp("logs"),
        GGUF_SERVE_MODELS=json.dumps(catalog),
        GGUF_SERVE_MAX_LOADED_MODELS="2",
        GGUF_SERVE_LOAD__N_PARALLEL="2",
    )
    yield srv
    srv.stop()


def logged_buffers(log: str) -> dict[tuple[str, str], float]:
    """(buffer, model|KV) -> MiB, from the child's `<kind> buffer on <buffer>: N MiB` lines."""
    found = re.findall(r"\] (model|KV) buffer on (\S+): ([0-9.]+) MiB", log)
    return {(buffer, kind): float(mib) for kind, buffer, mib in found}


def greedy(url: str, model: str) -> tuple[list[str], str]:
    """Tokens and text of a greedy 24-token chat answer."""
    body = {
        "model": model, "messages": ASK, "temperature": 0, "max_tokens": 24, "logprobs": True,
    }  # fmt: skip
    r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    return [t["token"] for t in choice["logprobs"]["content"]], choice["message"]["content"]


def test_servers_describe_their_devices_for_the_memory_planner(hosts: list[SimHost]) -> None:
    # Before split_server connects: an rpc-server answers one client at a time.
    endpoints = tuple(f"{h.address}:{PORT}" for h in hosts)
    devices = describe_servers(endpoints)
    assert [d.endpoint for d in devices] == list(endpoints)
    assert all(d.name.startswith("RPC") and 0 < d.free <= d.total for d in devices)


def test_cli_plan_splits_the_layers_over_both_servers(
    planned: tuple[dict[str, Any], str], hosts: list[SimHost]
) -> None:
    plan, table = planned
    names = [f"RPC0[{h.address}:{PORT}]" for h in hosts]  # as llama.cpp names their buffers
    cpu, first, second = plan["devices"]
    assert (cpu["kind"], first["name"], second["name"]) == ("cpu", *names)
    assert plan["n_gpu_layers"] == 31 and not plan["gpu_layers_auto"]
    # 31 layers (30 and the output) at the cut 1/2: il / 31 < 0.5 goes to the first
    assert (first["layer_range"], second["layer_range"]) == ("0-15", "16-29") and second["output"]
    assert cpu["layers"] == 0 and cpu["kv"] == 0 and first["kv"] > second["kv"] > 0
    assert plan["offloaded"] == first["total"] + second["total"] and plan["fits"]
    rows = {line.split()[0]: line.split() for line in table.splitlines() if line.strip()}
    assert rows[names[0]][1] == "0-15" and rows[names[1]][1] == "16-29,output"
    assert "offloaded layers 31 of 31 (as asked) to 2 rpc-server devices" in table


def test_the_real_split_load_puts_what_the_plan_said_on_each_server(
    planned: tuple[dict[str, Any], str], split_server: RunningServer
) -> None:
    plan, _ = planned
    buffers = logged_buffers(split_server.log.read_text())
    mib = 1 << 20
    for device in plan["devices"][1:]:
        # the KV cache is exact arithmetic; weights within 1% (llama.cpp pads each tensor)
        assert buffers[(device["name"], "KV")] == pytest.approx(device["kv"] / mib, abs=0.01)
        assert buffers[(device["name"], "model")] == pytest.approx(
            device["weights"] / mib, rel=0.01
        )
    host_weights = sum(v for (b, k), v in buffers.items() if k == "model" and "RPC" not in b)
    assert host_weights == pytest.approx(plan["devices"][0]["weights"] / mib, rel=0.01)
    assert not any(k == "KV" and "RPC" not in b for b, k in buffers)  # no KV on the host


def test_post_plan_while_the_model_holds_the_servers_answers_from_its_load(
    planned: tuple[dict[str, Any], str], split_server: RunningServer
) -> None:
    plan, _ = planned
    started = time.monotonic()
    r = httpx.post(f"{split_server.url}/plan", json={"model": SPLIT}, timeout=60)
    assert r.status_code == 200, r.text
    assert time.monotonic() - started < 10  # never waits on a server the model holds
    served = r.json()["plan"]
    assert [(d["name"], d["layer_range"], d["output"]) for d in served["devices"]] == [
        (d["name"], d["layer_range"], d["output"]) for d in plan["devices"]
    ]
    assert sum("held by a loaded model" in note for note in served["notes"]) == 2
    r = httpx.post(
        f"{split_server.url}/plan", json={"model": SPLIT, "rpc_servers": ["10.9.9.9:50052"]}
    )
    assert r.status_code == 403 and r.json()["error"]["param"] == "rpc_servers"


def test_load_log_shows_model_and_kv_buffers_on_both_hosts(
    split_server: RunningServer, hosts: list[SimHost]
) -> None:
    log = split_server.log.read_text()
    for host in hosts:
        where = re.escape(f"[{host.address}:{PORT}]")
        assert re.search(rf"model buffer on RPC\d+{where}: [1-9][0-9.]* MiB", log), where
        assert re.search(rf"KV buffer on RPC\d+{where}: [1-9][0-9.]* MiB", log), where


def test_greedy_output_equals_the_local_run_token_for_token(split_server: RunningServer) -> None:
    split_tokens, split_text = greedy(split_server.url, SPLIT)
    local_tokens, local_text = greedy(split_server.url, LOCAL)
    assert len(split_tokens) == 24
    assert split_tokens == local_tokens
    assert split_text == local_text


def test_a_lost_server_gives_503_the_api_stays_up_and_its_return_restores_service(
    split_server: RunningServer, hosts: list[SimHost], tmp_path: Path
) -> None:
    url = split_server.url
    expected = greedy(url, SPLIT)
    victim = hosts[1]
    victim.procs[-1].kill()
    victim.procs[-1].wait(timeout=10)

    body: dict[str, Any] = {"model": SPLIT, "messages": ASK, "max_tokens": 8}
    lost = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
    assert lost.status_code == 503, lost.text
    assert lost.json()["error"]["code"] == "model_unavailable"
    assert int(lost.headers["retry-after"]) > 0
    again = httpx.post(f"{url}/api/chat", json={**body, "stream": False}, timeout=60)
    assert again.status_code == 503 and "unavailable" in again.json()["error"]
    assert "died (killed by SIGABRT)" in split_server.log.read_text()

    assert httpx.get(f"{url}/health", timeout=5).status_code == 200
    assert httpx.get(f"{url}/v1/models", timeout=5).status_code == 200
    assert greedy(url, LOCAL) == expected  # the other model keeps serving

    start_rpc_server(victim, tmp_path)
    deadline = time.monotonic() + 90
    while True:
        r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        assert r.status_code == 503, r.text
        time.sleep(0.5)
    assert r.status_code == 200, split_server.log_tail()
    assert greedy(url, SPLIT) == expected
    assert f"{SPLIT}: restored" in split_server.log.read_text()
