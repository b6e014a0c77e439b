"""gguf-serve replicas on Ray Serve, on a Ray cluster simulated on this machine.

A head and one more node (one CPU each, `ray.cluster_utils.Cluster`), two replicas (one CPU
each, so one per node), every request through Ray's HTTP proxy. Needs the `ray` extra; opt out
only explicitly with GGUF_SERVE_TEST_SKIP_RAY=1.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import DEFAULT_MODEL, free_port

SKIP_ENV = "GGUF_SERVE_TEST_SKIP_RAY"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(420),
    pytest.mark.skipif(os.environ.get(SKIP_ENV) == "1", reason=f"{SKIP_ENV}=1 (opted out)"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning"),
]

REPLICA, NODE = "x-gguf-serve-replica", "x-gguf-serve-node"


@dataclass
class RayService:
    url: str
    cluster: Any
    head_node: str
    worker: Any


@pytest.fixture(scope="module")
def ray_service(model_home: Path) -> Iterator[RayService]:
    try:
        from ray import serve

        from server.deploy.ray import build, simulated_cluster
    except ImportError:
        pytest.fail(f"Ray is not installed: pip install -e '.[ray]' (or set {SKIP_ENV}=1)")
    from server.settings import Settings, load_settings

    with simulated_cluster(nodes=2, cpus_per_node=1) as cluster:
        port = free_port()

        def settings(replicas: int, router: str) -> Settings:
            return load_settings(
                home=model_home,
                ollama_models="",
                load={"n_parallel": 4, "n_ctx": 2048},
                ray={"replicas": replicas, "http_port": port, "router": router},
            )

        serve.start(http_options={"host": "127.0.0.1", "port": port}, proxy_location="HeadOnly")
        # First Ray's default router, used once through the proxy, then an in-place switch to
        # ours (as `serve deploy` with a changed config does): the proxy's handle keeps the
        # router it was built with unless the switch makes a new deployment, and the session
        # test below then sees every session on the proxy node's replica.
        serve.run(build(settings(1, "power-of-two")), name="gguf-serve", route_prefix="/")
        _wait_ready(f"http://127.0.0.1:{port}")
        serve.run(build(settings(2, "affinity")), name="gguf-serve", route_prefix="/")
        head, worker = cluster.head_node, cluster.list_all_nodes()[1]
        service = RayService(f"http://127.0.0.1:{port}", cluster, head.node_id, worker)
        _wait_ready(service.url)
        yield service


def _wait_ready(url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the Ray service did not become ready")


async def _sse(client: httpx.AsyncClient, i: int) -> tuple[int, int, str, float]:
    body = {
        "model": DEFAULT_MODEL,
        "messages": [{"role": "user", "content": f"Tell story number {i} about a fox."}],
        "max_tokens": 40,
        "temperature": 0,
        "stream": True,
    }
    reads, events, t = 0, 0, []
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        buffer = ""
        async for raw in r.aiter_text():
            reads += 1
            t.append(time.monotonic())
            buffer += raw
        events = buffer.count("data: ")
        assert buffer.rstrip().endswith("data: [DONE]")
        return reads, events, r.headers[NODE], t[-1] - t[0]


async def _ndjson(client: httpx.AsyncClient, i: int) -> tuple[int, int, str, float]:
    body = {
        "model": DEFAULT_MODEL,
        "prompt": f"Write poem number {i} about rain.",
        "options": {"num_predict": 40, "temperature": 0},
    }
    reads, t, text = 0, [], ""
    async with client.stream("POST", "/api/generate", json=body) as r:
        assert r.status_code == 200
        async for raw in r.aiter_text():
            reads += 1
            t.append(time.monotonic())
            text += raw
        lines = text.strip().splitlines()
        assert '"done":true' in lines[-1].replace(" ", "")
        return reads, len(lines), r.headers[NODE], t[-1] - t[0]


def test_eight_concurrent_streams_complete_chunk_by_chunk_on_both_nodes(
    ray_service: RayService,
) -> None:
    async def main() -> list[tuple[int, int, str, float]]:
        async with httpx.AsyncClient(base_url=ray_service.url, timeout=180) as client:
            jobs = [(_sse if i % 2 else _ndjson)(client, i) for i in range(8)]
            return await asyncio.gather(*jobs)

    results = asyncio.run(main())
    for reads, events, _node, spread in results:
        assert events >= 10  # SSE events or NDJSON lines
        assert reads >= 5 and spread > 0  # arrived as the tokens did, not as one buffered body
    nodes = {node for _reads, _events, node, _spread in results}
    assert nodes == {ray_service.head_node, ray_service.worker.node_id}


def test_client_disconnect_frees_the_slot_in_the_replica(ray_service: RayService) -> None:
    body = {
        "model": DEFAULT_MODEL,
        "messages": [{"role": "user", "content": "Count from one to one thousand in words."}],
        "max_tokens": 1500,
        "stream": True,
    }
    with (
        httpx.Client(base_url=ray_service.url, timeout=60) as client,
        client.stream("POST", "/v1/chat/completions", json=body) as r,
    ):
        replica = r.headers[REPLICA]
        for i, _ in enumerate(r.iter_raw()):
            if i == 3:
                break  # leaving the block closes the connection mid-stream
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # /slots answers from either replica; wait for ours
        s = httpx.get(f"{ray_service.url}/slots", timeout=10)
        if s.headers[REPLICA] == replica and all(
            slot["state"] == "idle" for model in s.json() for slot in model["slots"]
        ):
            return
        time.sleep(0.2)
    pytest.fail("the replica still generates for a client that left (1500 tokens take ~1 min)")


def test_a_session_sticks_to_one_replica_and_sessions_use_both(ray_service: RayService) -> None:
    body = {"model": DEFAULT_MODEL, "prompt": "Hi.", "stream": False, "options": {"num_predict": 1}}

    def replica(session: str) -> str:
        r = httpx.post(
            f"{ray_service.url}/api/generate",
            json=body,
            headers={"x-session-id": session},
            timeout=60,
        )
        assert r.status_code == 200
        return r.headers[REPLICA]

    for session in ("alice", "bob"):
        assert len({replica(session) for _ in range(4)}) == 1
    assert len({replica(f"user-{i}") for i in range(12)}) == 2


def test_removing_a_node_leaves_the_service_answering(ray_service: RayService) -> None:
    ray_service.cluster.remove_node(ray_service.worker)
    body = {
        "model": DEFAULT_MODEL,
        "prompt": "Say hi.",
        "stream": False,
        "options": {"num_predict": 4},
    }
    deadline, answered = time.monotonic() + 90, 0
    while answered < 4 and time.monotonic() < deadline:
        try:
            r = httpx.post(f"{ray_service.url}/api/generate", json=body, timeout=30)
        except httpx.TransportError:
            answered = 0
            continue
        answered = answered + 1 if r.status_code == 200 else 0
        if r.status_code == 200:
            assert r.headers[NODE] == ray_service.head_node
    assert answered == 4, "the service did not answer four times in a row after losing a node"
