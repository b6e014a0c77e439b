"""The memory plan: what a model will take, where, before anything is loaded.

`plan_memory(info, options, devices)` is pure arithmetic over the GGUF header facts, the load
options and a list of devices (the host, GPUs, RPC servers: `Device`). It places layers on
devices the way llama.cpp's `load_tensors` does (`n_gpu_layers` counts from the last layer, the
output layer included; GPU layers are split by `tensor_split` or by free memory), sizes the
weights from the tensor table, the KV cache, the compute and output buffers (engine.buffers),
and says whether it fits each device's free memory less a margin. `n_gpu_layers: auto` becomes
the most layers that fit; the plan also finds the largest context that fits.

No llama_cpp here: the devices come from engine.devices (llama.cpp's backend API) or from a
caller that knows better (tests, a scheduler budget, RPC servers).
"""

from __future__ import annotations

from collections.abc import Sequence

from server.engine import buffers
from server.engine.hparams import ModelShape, model_shape
from server.engine.options import LoadOptions, ModelFacts, resolve_options
from server.engine.placement import plan_on, split_devices
from server.engine.plan_types import (
    Device,
    DeviceKind,
    DevicePlan,
    KVPlan,
    Margins,
    MemoryPlan,
    with_free,
)
from server.registry.gguf_info import GGUFInfo

__all__ = [
    "Device",
    "DeviceKind",
    "DevicePlan",
    "KVPlan",
    "Margins",
    "MemoryPlan",
    "fit_gpu_layers",
    "plan_memory",
    "with_free",
]


def plan_memory(
    info: GGUFInfo,
    options: LoadOptions,
    devices: Sequence[Device],
    *,
    margins: Margins | None = None,
    n_ctx_cap: int = 1 << 20,
    tensor_split: Sequence[float] | None = None,
    find_max_ctx: bool = True,
) -> MemoryPlan:
    """The memory plan of the model `info` loaded with `options` on `devices`.

    `devices` lists the host first or anywhere (kind cpu; a host with 0 free bytes is assumed
    when none is given) and the offload devices in llama.cpp's order (RPC servers, GPUs).
    `tensor_split` gives the share of the offloaded layers per offload device (default: by free
    memory, as llama.cpp). Raises InvalidLoadOptions for options the model cannot take.
    """
    margins = margins or Margins()
    shape = model_shape(info)
    facts = ModelFacts(n_ctx_train=shape.n_ctx_train, n_layer=shape.n_layer)
    effective = resolve_options(options, facts, n_ctx_cap=n_ctx_cap)
    host, offload = split_devices(devices)
    auto = effective.n_gpu_layers == "auto"
    if auto:
        ngl = fit_gpu_layers(info, shape, effective, host, offload, margins, tensor_split)
    else:
        ngl = int(effective.n_gpu_layers)
    plan = plan_on(info, shape, effective, host, offload, margins, tensor_split, ngl, auto)
    if find_max_ctx:
        plan = plan.model_copy(
            update={
                "max_ctx": _max_ctx(
                    info, shape, effective, host, offload, margins, tensor_split, ngl
                )
            }
        )
    return plan


def fit_gpu_layers(
    info: GGUFInfo,
    shape: ModelShape,
    options: LoadOptions,
    host: Device,
    offload: Sequence[Device],
    margins: Margins,
    tensor_split: Sequence[float] | None = None,
) -> int:
    """The most layers (llama.cpp's count) whose weights, KV and compute fit every offload
    device's free memory less the margin; 0 without offload devices."""
    if not offload:
        return 0
    for ngl in range(shape.n_layer + 1, 0, -1):
        plan = plan_on(info, shape, options, host, offload, margins, tensor_split, ngl, True)
        if all(d.fits for d in plan.devices if d.kind != "cpu"):
            return ngl
    return 0


def _max_ctx(
    info: GGUFInfo,
    shape: ModelShape,
    options: LoadOptions,
    host: Device,
    offload: Sequence[Device],
    margins: Margins,
    tensor_split: Sequence[float] | None,
    ngl: int,
) -> int:
    """The largest per-slot context (a multiple of 256, at most the trained length) that fits
    every device with `ngl` layers offloaded; 0 when not even 256 tokens fit."""

    def fits(n_ctx: int) -> bool:
        trial = options.model_copy(update={"n_ctx": n_ctx})
        return plan_on(info, shape, trial, host, offload, margins, tensor_split, ngl, False).fits

    top = shape.n_ctx_train or 1 << 20
    lo, hi = 0, top // buffers.PAD  # in units of 256 tokens
    if fits(top):
        return top
    while lo < hi:  # largest k with fits(256 k)
        mid = (lo + hi + 1) // 2
        if fits(mid * buffers.PAD):
            lo = mid
        else:
            hi = mid - 1
    return lo * buffers.PAD
