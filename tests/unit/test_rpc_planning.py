"""Planning a model split over rpc-servers, with devices handed in (no network, no servers).

The rpc-servers' devices join this machine's as kind "rpc" devices named as llama.cpp names
their buffers (`RPC0[host:port]`), first in llama.cpp's order; `tensor_split` shares the
offloaded layers; the scheduler plans and loads a model with `rpc_servers` on them, and when
they cannot be described it loads the model as configured. tests/integration/test_rpc_split.py
does the same against real rpc-servers in network namespaces.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.budget import MemoryBudget, layers_to_load
from server.cli import main
from server.cli.plan_view import describe_plan
from server.engine.memory import Device
from server.engine.options import LoadOptions
from server.engine.plan_types import rpc_device_name
from server.engine.rpc import RpcDevice, plan_devices
from server.planning import Planner, PlanTarget
from server.registry import Registry
from server.registry.gguf_info import GGUFInfo, read_gguf_info
from server.rpc_planning import RpcDevices, RpcUnavailable, is_unchecked
from server.scheduler import ModelManager
from server.settings import load_settings
from tests.conftest import MakeGGUF
from tests.fakes import FakeEngine, fake_factory
from tests.synthetic_gguf import Q, Shape, write_model
from tests.unit.test_scheduler import CountingFactory

GiB = 1 << 30
HOST = Device("CPU", "cpu", 8 * GiB, 16 * GiB)
A, B = "10.0.0.11:50052", "10.0.0.12:50052"
SEVEN_B = Shape(
    n_layer=32, n_embd=4096, n_head=32, n_head_kv=8, n_ff=14336, n_vocab=32000,
    weight_type=Q.Q4_0, n_ctx_train=32768,
)  # fmt: skip


class Servers:
    """A describer over fixed servers: endpoint -> GiB free per device; counts its calls."""

    def __init__(self, **gib: list[float]) -> None:
        self.gib = {k.replace("_", "."): v for k, v in gib.items()}
        self.calls: list[tuple[str, ...]] = []
        self.fail: str | None = None

    def __call__(self, endpoints: tuple[str, ...], timeout: float) -> list[Device]:
        self.calls.append(endpoints)
        if self.fail:
            raise RpcUnavailable(self.fail, param="rpc_servers")
        rows, n = [], 0
        for e in endpoints:
            for free in self.gib[e]:
                rows.append(RpcDevice(e, f"RPC{n}", e, int(free * GiB), int(free * GiB)))
                n += 1
        return plan_devices(rows)


def servers(a: list[float], b: list[float]) -> Servers:
    return Servers(**{A.replace(".", "_"): a, B.replace(".", "_"): b})


@pytest.fixture(scope="module")
def seven_b(tmp_path_factory: pytest.TempPathFactory) -> GGUFInfo:
    return read_gguf_info(write_model(tmp_path_factory.mktemp("m") / "7b.gguf", SEVEN_B))


def planner(tmp_home: Path, described: Servers, **settings: object) -> Planner:
    s = load_settings(home=tmp_home, **settings)
    return Planner(s, Registry(s), lambda: [HOST], RpcDevices(described, timeout=1))


def opts(**kw: object) -> LoadOptions:
    return LoadOptions.model_validate({"n_ctx": 4096, "n_parallel": 1, "n_threads": 1, **kw})


def test_devices_are_named_as_llama_cpp_names_their_buffers() -> None:
    rows = [
        RpcDevice(A, "RPC0", A, 4 * GiB, 8 * GiB),
        RpcDevice(A, "RPC1", A, 2 * GiB, 8 * GiB),
        RpcDevice(B, "RPC2", B, 6 * GiB, 6 * GiB),
    ]
    devices = plan_devices(rows)
    # load_tensors logs "RPC0[10.0.0.12:50052] model buffer size": index on the server, endpoint
    assert [d.name for d in devices] == [f"RPC0[{A}]", f"RPC1[{A}]", f"RPC0[{B}]"]
    assert [d.kind for d in devices] == ["rpc"] * 3
    sizes = [(d.free >> 30, d.total >> 30) for d in devices]
    assert sizes == [(4, 8), (2, 8), (6, 6)]
    assert devices[2].description == f"RPC2 on rpc-server {B}"  # llama.cpp's device name
    assert rpc_device_name(B) == f"RPC0[{B}]"


def test_a_cpu_only_host_offloads_auto_layers_to_the_servers(
    tmp_home: Path, seven_b: GGUFInfo
) -> None:
    described = servers([24], [24])
    p = planner(tmp_home, described)
    target = PlanTarget("seven:7b", seven_b, "store")
    alone = p.plan(target, opts(), find_max_ctx=False)
    assert alone.n_gpu_layers == 0  # no GPU and no servers: nothing offloaded
    plan = p.plan(target, opts(rpc_servers=(A, B)), find_max_ctx=False)
    assert plan.gpu_layers_auto and plan.n_gpu_layers == 33  # all 32 and the output layer
    cpu, first, second = plan.devices
    assert (first.name, second.name) == (f"RPC0[{A}]", f"RPC0[{B}]")
    assert first.layers + second.layers == 32 and second.output
    assert first.kv + second.kv == plan.kv.total and cpu.kv == 0
    assert plan.host == cpu.total < alone.host  # the host keeps the input embedding only
    assert described.calls == [(A, B)]


def test_tensor_split_shares_the_layers_as_llama_cpp_does(
    tmp_home: Path, seven_b: GGUFInfo
) -> None:
    p = planner(tmp_home, servers([24], [24]))
    target = PlanTarget("seven:7b", seven_b, "store")
    # 33 layers at cuts 1/4, 1: layer il goes to the first device while il/33 < 0.25
    plan = p.plan(
        target, opts(rpc_servers=(A, B), tensor_split=(1, 3), n_gpu_layers=-1), find_max_ctx=False
    )
    _, first, second = plan.devices
    assert (first.layer_range, second.layer_range) == ("0-8", "9-31") and second.output
    # 20 layers from the last: layers 0-12 stay on the host, 13-31 and the output go out
    plan = p.plan(target, opts(rpc_servers=(A, B), n_gpu_layers=20), find_max_ctx=False)
    cpu, first, second = plan.devices
    assert cpu.layer_range == "0-12" and first.layers + second.layers == 19


def test_auto_stops_at_what_the_servers_hold(tmp_home: Path, seven_b: GGUFInfo) -> None:
    p = planner(tmp_home, servers([3], [2]))  # 5 GiB, less 1 GiB margin each
    plan = p.plan(PlanTarget("seven:7b", seven_b, "store"), opts(rpc_servers=(A, B)))
    assert 0 < plan.n_gpu_layers < 33 and plan.fits
    assert all(d.total <= d.available for d in plan.devices)
    assert plan.host > 0 and plan.devices[0].layers == 33 - plan.n_gpu_layers


def test_servers_held_by_a_loaded_model_are_not_asked_again(
    tmp_home: Path, seven_b: GGUFInfo
) -> None:
    described = servers([24], [24])
    p = planner(tmp_home, described)
    target = PlanTarget("seven:7b", seven_b, "store")
    first = p.plan(target, opts(rpc_servers=(A, B)), find_max_ctx=False)
    p.rpc.held = lambda: {A, B}
    again = p.plan(target, opts(rpc_servers=(A, B)), find_max_ctx=False)
    assert described.calls == [(A, B)]  # remembered, never asked while held
    assert again.devices == first.devices
    assert any(f"rpc-server {A} is held by a loaded model" in n for n in again.notes)
    p.rpc.held = lambda: {"10.0.0.13:50052"}
    with pytest.raises(RpcUnavailable, match="held by a loaded model"):
        p.plan(target, opts(rpc_servers=("10.0.0.13:50052",)), find_max_ctx=False)


def test_a_server_that_cannot_be_asked_is_an_rpc_error(tmp_home: Path, seven_b: GGUFInfo) -> None:
    described = servers([24], [24])
    described.fail = f"rpc-server {B} does not accept connections"
    p = planner(tmp_home, described)
    with pytest.raises(RpcUnavailable, match="does not accept connections") as caught:
        p.plan(PlanTarget("seven:7b", seven_b, "store"), opts(rpc_servers=(A, B)))
    assert caught.value.param == "rpc_servers" and caught.value.code == "rpc_server_unavailable"


@pytest.fixture
def registry(tmp_home: Path, make_gguf: MakeGGUF) -> Registry:
    reg = Registry(load_settings(home=tmp_home))
    reg.import_file(make_gguf("a.gguf", seed=1, context_length=4096), "alpha:1b")
    return reg


def rpc_manager(registry: Registry, described: Servers, factory: CountingFactory) -> ModelManager:
    s = load_settings(
        home=registry.settings.home,
        load={"rpc_servers": [A, B], "n_ctx": 1024, "n_parallel": 1},
        memory_budget=1 * GiB,
    )
    p = Planner(s, registry, lambda: [HOST], RpcDevices(described, timeout=1))
    return ModelManager(s, registry, factory, planner=p)  # type: ignore[arg-type]


def test_the_scheduler_loads_auto_layers_onto_the_servers(registry: Registry) -> None:
    described = servers([4], [4])
    factory = CountingFactory(delay=0)

    async def main() -> None:
        mm = rpc_manager(registry, described, factory)
        (await mm.acquire("alpha:1b")).release()
        assert mm.rpc_servers_in_use() == {A, B}
        (model,) = mm.loaded()
        assert model.plan is not None
        loaded_with = factory.loads[0][1]
        assert loaded_with.n_gpu_layers == model.plan.n_gpu_layers == 2  # 1 layer + output
        assert loaded_with.rpc_servers == (A, B)
        assert [d.name for d in model.plan.devices] == ["CPU", f"RPC0[{A}]", f"RPC0[{B}]"]
        # the host share is what the host budget counts
        assert model.plan.host == model.plan.devices[0].total < model.plan.total
        # a reload with other options while the servers are held does not ask them again
        (await mm.acquire("alpha:1b", overrides={"n_ctx": 2048})).release()
        assert described.calls == [(A, B)] and len(factory.loads) == 2
        await mm.close()

    asyncio.run(main())


def test_servers_that_cannot_be_described_load_as_configured(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    described = servers([4], [4])
    described.fail = "rpc-servers did not answer in 1s"
    factory = CountingFactory(delay=0)

    async def main() -> None:
        mm = rpc_manager(registry, described, factory)
        with caplog.at_level(logging.WARNING, logger="server.budget"):
            (await mm.acquire("alpha:1b")).release()
        assert factory.loads[0][1].n_gpu_layers == "auto"  # the engine resolves it
        (model,) = mm.loaded()
        assert model.plan is not None and model.plan.devices[0].name == "CPU"
        assert all(is_unchecked(d.free) for d in model.plan.devices[1:])
        await mm.close()

    asyncio.run(main())
    assert "alpha:1b: rpc-servers did not answer in 1s; loading it with its rpc_servers" in (
        caplog.text
    )


def test_a_split_that_does_not_fit_the_servers_is_refused_before_loading(
    registry: Registry,
) -> None:
    from server.errors import InsufficientMemory

    described = servers([1.001], [1.001])  # next to nothing beyond the 1 GiB margin
    factory = CountingFactory(delay=0)

    async def main() -> None:
        mm = rpc_manager(registry, described, factory)
        with pytest.raises(InsufficientMemory, match=r"on RPC0\[10\.0\.0\.1[12]:50052\]"):
            await mm.acquire("alpha:1b", overrides={"n_gpu_layers": -1})
        assert not factory.loads
        await mm.close()

    asyncio.run(main())


def test_layers_to_load_keeps_auto_only_for_unchecked_servers(
    tmp_home: Path, seven_b: GGUFInfo
) -> None:
    p = planner(tmp_home, servers([24], [24]))
    target = PlanTarget("seven:7b", seven_b, "store")
    budget = MemoryBudget(p)
    options = opts(rpc_servers=(A, B))
    checked = budget.check_alone(target, options, budget.devices_for("seven:7b", options))
    assert layers_to_load(options, checked) == 33
    p.rpc = RpcDevices(servers([24], [24]), timeout=1, held=lambda: {A})  # held, never described
    unchecked = budget.check_alone(target, options, budget.devices_for("seven:7b", options))
    assert layers_to_load(options, unchecked) == "auto"
    ten = opts(rpc_servers=(A, B), n_gpu_layers=10)  # a count is exact without the servers
    assert layers_to_load(ten, budget.check_alone(target, ten, unchecked_devices_of(budget))) == 10


def unchecked_devices_of(budget: MemoryBudget) -> list[Device]:
    return budget.devices_for("seven:7b", opts(rpc_servers=(A, B)))


@pytest.fixture
def client(registry: Registry) -> Iterator[tuple[TestClient, Servers]]:
    settings = load_settings(
        home=registry.settings.home,
        default_model="alpha:1b",
        models={"alpha:1b": {"load": {"rpc_servers": [A, B], "tensor_split": [1, 1]}}},
    )
    described = servers([4], [4])
    app = create_app(
        settings,
        registry=Registry(settings),
        engine_factory=fake_factory(FakeEngine()),  # type: ignore[arg-type]
        preload=False,
        devices=lambda: [HOST],
        rpc=RpcDevices(described, timeout=1),
    )
    with TestClient(app, base_url="http://localhost") as test_client:
        yield test_client, described


def test_post_plan_shows_each_server_share(client: tuple[TestClient, Servers]) -> None:
    http, _ = client
    r = http.post("/plan", json={"model": "alpha:1b", "gpu_layers": -1, "ctx": 1024})
    assert r.status_code == 200, r.text
    cpu, first, second = r.json()["plan"]["devices"]
    assert cpu["layers"] == 0 and cpu["kv"] == 0
    assert (first["name"], first["kind"], first["layers"]) == (f"RPC0[{A}]", "rpc", 1)
    assert (second["name"], second["layers"], second["output"]) == (f"RPC0[{B}]", 0, True)
    assert first["kv"] > 0 and first["total"] == sum(
        first[k] for k in ("weights", "kv", "compute", "other")
    )
    # the request's own shares and servers (among the configured ones), or none
    r = http.post("/plan", json={"model": "alpha:1b", "rpc_servers": [B], "tensor_split": [1]})
    assert [d["name"] for d in r.json()["plan"]["devices"]] == ["CPU", f"RPC0[{B}]"]
    r = http.post("/plan", json={"model": "alpha:1b", "rpc_servers": []})
    assert [d["name"] for d in r.json()["plan"]["devices"]] == ["CPU"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"rpc_servers": ["10.9.9.9:50052"]}, 403, "forbidden"),
        ({"rpc_servers": ["no-port"]}, 400, "invalid_request"),
        ({"tensor_split": [-1, 1]}, 400, "invalid_request"),
    ],
)
def test_post_plan_refuses_servers_it_was_not_given(
    client: tuple[TestClient, Servers], body: dict[str, object], status: int, code: str
) -> None:
    http, described = client
    r = http.post("/plan", json={"model": "alpha:1b", **body})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["message"] and error["type"] and (error["code"] or error["param"])
    assert not described.calls  # nothing was asked of any server


def test_post_plan_with_a_server_down_is_a_clear_400(client: tuple[TestClient, Servers]) -> None:
    http, described = client
    described.fail = f"rpc-server {A} does not accept connections"
    r = http.post("/plan", json={"model": "alpha:1b"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "rpc_server_unavailable"
    assert r.json()["error"]["param"] == "rpc_servers"
    assert f"rpc-server {A} does not accept connections" in r.json()["error"]["message"]
    assert http.get("/health").status_code == 200


def test_the_plan_table_has_a_row_per_server(tmp_home: Path, seven_b: GGUFInfo) -> None:
    p = planner(tmp_home, servers([24], [24]))
    target = PlanTarget("seven:7b", seven_b, "store")
    plan = p.plan(target, opts(rpc_servers=(A, B), n_gpu_layers=20), find_max_ctx=False)
    lines = describe_plan(target, plan)
    assert "  offloaded layers 20 of 33 (as asked) to 2 rpc-server devices" in lines[3]
    rows = {line.split()[0]: line.split() for line in lines if line.startswith("  RPC")}
    assert rows[f"RPC0[{A}]"][1] == "13-22" and rows[f"RPC0[{B}]"][1] == "23-31,output"
    # nothing offloaded: the servers still get their (empty) rows
    plan = p.plan(target, opts(rpc_servers=(A, B), n_gpu_layers=0), find_max_ctx=False)
    rows = {line.split()[0]: line.split() for line in describe_plan(target, plan) if "RPC0" in line}
    assert rows[f"RPC0[{A}]"][1:3] == ["-", "0"]


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("rpc", "message"),
    [
        ("127.0.0.1:{port}", "error: rpc-server 127.0.0.1:{port} does not accept connections"),
        ("10.0.0.11", "rpc server '10.0.0.11' is not host:port"),
    ],
)
def test_cli_plan_with_a_bad_or_dead_server_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], registry: Registry, rpc: str, message: str
) -> None:
    port = unused_port()
    home = str(registry.settings.home)
    with pytest.raises(SystemExit) as caught:
        main(["plan", "alpha:1b", "--home", home, "--rpc", rpc.format(port=port)])
    err = capsys.readouterr().err
    assert caught.value.code == 1
    assert message.format(port=port) in err and "Traceback" not in err


def test_a_model_on_the_same_rpc_server_waits_for_the_one_holding_it(
    registry: Registry, make_gguf: MakeGGUF
) -> None:
    """An rpc-server serves one client: a second model on it would wait on it for ever, so the
    model holding it is unloaded first (when idle; waited for when busy), whatever memory says."""
    registry.import_file(make_gguf("b.gguf", seed=2, context_length=4096), "beta:1b")
    registry.import_file(make_gguf("c.gguf", seed=3, context_length=4096), "gamma:1b")
    described = servers([4], [4])
    factory = CountingFactory(delay=0)

    async def main() -> None:
        mm = rpc_manager(registry, described, factory)
        lease = await mm.acquire("alpha:1b")  # on A and B
        local = {"rpc_servers": [], "n_gpu_layers": 0}
        (await mm.acquire("gamma:1b", overrides=local)).release()  # no servers: loads beside
        assert {m.name for m in mm.loaded()} == {"alpha:1b", "gamma:1b"}
        waiting = asyncio.create_task(mm.acquire("beta:1b", overrides={"rpc_servers": [B]}))
        await asyncio.sleep(0.3)
        assert not waiting.done()  # alpha is busy on B: beta waits rather than load beside
        lease.release()
        (await asyncio.wait_for(waiting, 10)).release()
        assert {m.name for m in mm.loaded()} == {"beta:1b", "gamma:1b"}
        assert factory.engines[0].closed and not factory.engines[1].closed
        await mm.close()

    asyncio.run(main())
