"""llama.cpp's devices through ctypes, and `n_gpu_layers: auto` on this machine."""

from __future__ import annotations

from pathlib import Path

from server.engine.devices import host_memory, list_devices
from server.engine.factory import auto_gpu_layers
from server.engine.options import LoadOptions


def test_the_host_comes_first_with_its_available_memory() -> None:
    devices = list_devices()
    host = devices[0]
    assert host.kind == "cpu" and host.name == "CPU"
    available, total = host_memory()
    assert 0 < host.free <= host.total == total
    assert abs(host.free - available) < 1 << 30  # read twice, a moment apart
    for device in devices[1:]:  # GPUs or RPC servers, when this build and machine have them
        assert device.kind in ("gpu", "igpu", "rpc") and device.total >= device.free >= 0


def test_auto_gpu_layers_is_zero_without_a_gpu(default_model_path: Path) -> None:
    offload = [d for d in list_devices() if not d.is_host]
    layers = auto_gpu_layers(default_model_path, LoadOptions(n_ctx=2048), n_ctx_cap=8192)
    if not offload:
        assert layers == 0
    else:  # a GPU machine: the 98 MB default model fits any GPU wholly
        assert layers == 31
