"""`POST /plan` and `/api/show`'s plan over a fake engine, with an injected device list."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.engine.memory import Device
from server.registry import Registry
from server.settings import load_settings
from tests.conftest import MakeGGUF
from tests.fakes import FakeEngine, fake_factory

GiB = 1 << 30
MODEL = "tiny:1b"


@pytest.fixture
def client(tmp_home: Path, make_gguf: MakeGGUF) -> Iterator[TestClient]:
    settings = load_settings(home=tmp_home, default_model=MODEL)
    registry = Registry(settings)
    registry.import_file(make_gguf(context_length=8192), MODEL)
    devices = [Device("CPU", "cpu", 16 * GiB, 32 * GiB), Device("CUDA0", "gpu", 8 * GiB, 8 * GiB)]
    app = create_app(
        settings,
        registry=registry,
        engine_factory=fake_factory(FakeEngine()),  # type: ignore[arg-type]
        preload=False,
        devices=lambda: devices,
    )
    with TestClient(app, base_url="http://localhost") as test_client:
        yield test_client


def test_plan_places_layers_on_the_given_gpu(client: TestClient) -> None:
    r = client.post("/plan", json={"model": MODEL, "ctx": 1024, "parallel": 2})
    assert r.status_code == 200, r.text
    plan = r.json()["plan"]
    assert plan["n_gpu_layers"] == 2 and plan["gpu_layers_auto"]  # 1 layer + the output layer
    cpu, gpu = plan["devices"]
    assert (cpu["name"], gpu["name"]) == ("CPU", "CUDA0")
    assert gpu["layers"] == 1 and gpu["output"] and gpu["kv"] == plan["kv"]["total"]
    assert plan["offloaded"] == gpu["total"] and plan["host"] == cpu["total"]
    assert r.json()["source"] == "store" and r.json()["header_bytes"] is None


def test_plan_with_fixed_layers_and_cache_types(client: TestClient) -> None:
    body = {"model": MODEL, "ctx": 2048, "gpu_layers": 0, "type_k": "q8_0", "type_v": "q4_0"}
    plan = client.post("/plan", json=body).json()["plan"]
    assert plan["n_gpu_layers"] == 0 and not plan["gpu_layers_auto"]
    assert (plan["kv"]["type_k"], plan["kv"]["type_v"]) == ("q8_0", "q4_0")
    assert plan["flash_attn"]  # a quantized V cache turns flash attention on
    # 1 layer x 2048 cells x 4 slots x 2 KV heads x 16 dims: q8_0 34/32 bytes, q4_0 18/32
    assert plan["kv"]["k_bytes"] == 2048 * 4 * 32 // 32 * 34
    assert plan["kv"]["v_bytes"] == 2048 * 4 * 32 // 32 * 18


def test_show_carries_the_plan_at_the_defaults(client: TestClient) -> None:
    show = client.post("/api/show", json={"model": MODEL}).json()
    assert show["plan"]["n_ctx"] == 4096 and show["plan"]["n_parallel"] == 4
    assert show["model_info"]["general.architecture"] == "llama"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"model": "missing:1b", "remote": False}, 404),
        ({"model": MODEL, "gpu_layers": "most"}, 400),
        ({}, 400),
    ],
)
def test_plan_errors_are_openai_shaped(
    client: TestClient, body: dict[str, object], status: int
) -> None:
    r = client.post("/plan", json=body)
    assert r.status_code == status
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
