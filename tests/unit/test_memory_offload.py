"""Placing layers on devices: fake device lists (8 GiB and 24 GiB cards, RPC servers, none).

The headers are 7B- and 14B-shaped synthetic GGUFs written as sparse files (no weights on
disk). Offload follows llama.cpp's `load_tensors`: `n_gpu_layers` counts from the last of the
n_layer + 1 layers (the output layer is the extra one), split over the devices by free memory
or `tensor_split`. No VRAM is measured here: the plan is checked against its own arithmetic and
against the devices' capacity.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from server.engine.memory import Device, Margins, plan_memory
from server.engine.options import LoadOptions
from server.registry.gguf_info import GGUFInfo, read_gguf_info
from tests.synthetic_gguf import Q, Shape, write_model

GiB = 1 << 30
HOST = Device("CPU", "cpu", 64 * GiB, 64 * GiB)
SEVEN_B = Shape(
    n_layer=32, n_embd=4096, n_head=32, n_head_kv=8, n_ff=14336, n_vocab=32000,
    weight_type=Q.Q4_0, n_ctx_train=32768,
)  # fmt: skip
FOURTEEN_B = Shape(
    n_layer=40, n_embd=5120, n_head=40, n_head_kv=8, n_ff=13824, n_vocab=32000,
    weight_type=Q.Q8_0, n_ctx_train=32768,
)  # fmt: skip


@pytest.fixture(scope="module")
def seven_b(tmp_path_factory: pytest.TempPathFactory) -> GGUFInfo:
    return read_gguf_info(write_model(tmp_path_factory.mktemp("m") / "7b.gguf", SEVEN_B))


@pytest.fixture(scope="module")
def fourteen_b(tmp_path_factory: pytest.TempPathFactory) -> GGUFInfo:
    return read_gguf_info(write_model(tmp_path_factory.mktemp("m") / "14b.gguf", FOURTEEN_B))


def card(name: str, gib: float) -> Device:
    return Device(name, "gpu", int(gib * GiB), int(gib * GiB))


def opts(**kw: object) -> LoadOptions:
    return LoadOptions.model_validate({"n_ctx": 8192, "n_parallel": 1, "n_threads": 1, **kw})


def test_cpu_only_machine_gets_no_gpu_layers(seven_b: GGUFInfo) -> None:
    plan = plan_memory(seven_b, opts(), [HOST], find_max_ctx=False)
    assert plan.gpu_layers_auto and plan.n_gpu_layers == 0
    assert [d.name for d in plan.devices] == ["CPU"]
    assert plan.host == plan.total and plan.offloaded == 0
    assert plan.devices[0].layer_range == "0-31" and plan.devices[0].output


def test_model_that_fits_wholly_on_a_24_gib_card(seven_b: GGUFInfo) -> None:
    plan = plan_memory(seven_b, opts(), [HOST, card("CUDA0", 24)], find_max_ctx=False)
    gpu = plan.on("CUDA0")
    assert gpu is not None and gpu.fits
    assert plan.n_gpu_layers == 33  # 32 layers and the output layer
    assert gpu.layers == 32 and gpu.output and gpu.layer_range == "0-31"
    # every layer's weights and KV moved; only the input embedding stays on the host
    assert (
        gpu.weights
        == sum(seven_b.tensor_sizes.layers)
        + seven_b.tensor_sizes.other["output.weight"]
        + seven_b.tensor_sizes.other["output_norm.weight"]
    )
    assert plan.devices[0].weights == seven_b.tensor_sizes.other["token_embd.weight"]
    assert gpu.kv == plan.kv.total == 32 * 8192 * 1024 * 2 * 2


def test_model_that_fits_partly_on_an_8_gib_card(fourteen_b: GGUFInfo) -> None:
    devices = [HOST, card("CUDA0", 8)]
    plan = plan_memory(fourteen_b, opts(), devices, find_max_ctx=False)
    n = plan.n_gpu_layers
    assert 0 < n < 41
    gpu = plan.on("CUDA0")
    # llama.cpp offloads from the end: the output layer and the last n - 1 layers
    assert gpu is not None and gpu.fits and gpu.output
    assert gpu.layer_range == f"{41 - n}-39"
    more = plan_memory(fourteen_b, opts(n_gpu_layers=n + 1), devices, find_max_ctx=False)
    assert not more.devices[1].fits  # one layer more would not fit
    assert gpu.total <= 7 * GiB  # 8 GiB less the 1 GiB margin


def test_offload_takes_the_last_layers_and_the_output(fourteen_b: GGUFInfo) -> None:
    plan = plan_memory(fourteen_b, opts(n_gpu_layers=11), [HOST, card("CUDA0", 24)])
    host, gpu = plan.devices
    assert gpu.layer_range == "30-39" and gpu.output and gpu.layers == 10
    assert host.layer_range == "0-29" and not host.output
    assert plan.n_gpu_layers == 11


def test_model_that_does_not_fit_at_all_stays_on_the_host(fourteen_b: GGUFInfo) -> None:
    small = Device("CUDA0", "gpu", int(1.2 * GiB), 2 * GiB)  # 0.2 GiB above the margin
    plan = plan_memory(fourteen_b, opts(), [HOST, small], find_max_ctx=False)
    assert plan.n_gpu_layers == 0 and plan.offloaded == 0
    assert plan.devices[1].total == 0
    forced = plan_memory(fourteen_b, opts(n_gpu_layers=-1), [HOST, small], find_max_ctx=False)
    assert not forced.fits and not forced.devices[1].fits


def test_two_cards_split_by_free_memory_or_tensor_split(seven_b: GGUFInfo) -> None:
    devices = [HOST, card("CUDA0", 8), card("CUDA1", 24)]
    plan = plan_memory(seven_b, opts(n_gpu_layers=-1), devices, find_max_ctx=False)
    a, b = plan.devices[1], plan.devices[2]
    assert a.layers + b.layers == 32 and b.output
    assert a.layer_range == "0-8" and b.layer_range == "9-31"  # 33 x 8/32 layers on CUDA0
    even = plan_memory(
        seven_b, opts(n_gpu_layers=-1), devices, tensor_split=[1, 1], find_max_ctx=False
    )
    assert even.devices[1].layer_range == "0-16" and even.devices[2].layer_range == "17-31"
    assert even.total == plan.total  # the same bytes, elsewhere


def test_rpc_servers_come_first_and_each_is_told_its_share(seven_b: GGUFInfo) -> None:
    rpc = Device("RPC0[10.0.0.2:50052]", "rpc", 16 * GiB, 16 * GiB, "remote GPU")
    plan = plan_memory(
        seven_b, opts(n_gpu_layers=-1), [HOST, card("CUDA0", 16), rpc], find_max_ctx=False
    )
    names = [d.name for d in plan.devices]
    assert names == ["CPU", "RPC0[10.0.0.2:50052]", "CUDA0"]
    remote = plan.on("RPC0[10.0.0.2:50052]")
    assert remote is not None and remote.kind == "rpc" and remote.layer_range == "0-16"
    assert remote.weights == sum(seven_b.tensor_sizes.layers[:17])  # 33 x 1/2, rounded up


def test_tied_embedding_is_copied_to_the_output_device(tmp_path: Path) -> None:
    shape = Shape(n_layer=4, n_embd=1024, n_head=8, n_head_kv=8, n_vocab=32000, tied=True)
    info = read_gguf_info(write_model(tmp_path / "tied.gguf", shape))
    embd = info.tensor_sizes.other["token_embd.weight"]
    plan = plan_memory(info, opts(n_ctx=1024, n_gpu_layers=-1), [HOST, card("CUDA0", 24)])
    assert plan.devices[0].weights == embd  # the input layer never leaves the host
    assert plan.devices[1].weights == sum(info.tensor_sizes.layers) + embd + 4 * 1024
    assert plan.weights == info.tensor_bytes + embd


def test_auto_layers_shrink_as_the_context_grows(fourteen_b: GGUFInfo) -> None:
    devices = [HOST, card("CUDA0", 12)]
    short = plan_memory(fourteen_b, opts(n_ctx=2048), devices, find_max_ctx=False)
    long = plan_memory(fourteen_b, opts(n_ctx=32768), devices, find_max_ctx=False)
    assert long.n_gpu_layers < short.n_gpu_layers


def test_margin_is_left_free_on_every_device(seven_b: GGUFInfo) -> None:
    devices = [HOST, card("CUDA0", 6)]
    tight = plan_memory(seven_b, opts(), devices, margins=Margins(device=0), find_max_ctx=False)
    loose = plan_memory(seven_b, opts(), devices, margins=Margins(device=2 * GiB))
    assert tight.n_gpu_layers > loose.n_gpu_layers
    gpu = loose.on("CUDA0")
    assert gpu is not None and gpu.total <= 4 * GiB and gpu.available == 4 * GiB
