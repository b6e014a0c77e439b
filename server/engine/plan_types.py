"""The memory plan's types: devices in, plans out (engine.memory makes them)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from pydantic import BaseModel, ConfigDict

DeviceKind = Literal["cpu", "gpu", "igpu", "rpc"]
GiB = 1 << 30


@dataclass(frozen=True)
class Device:
    """Somewhere memory can go: the host (kind cpu), a GPU, or an RPC server's device.

    `repack` (host only): the ggml types llama.cpp copies into its CPU_REPACK layout on this
    CPU (Q4_0, Q4_K, IQ4_NL, MXFP4 with AVX2, ...): with mmap those weights are then held twice,
    the mapped file pages (clean, reclaimable) and the repacked copy.
    """

    name: str
    kind: DeviceKind
    free: int
    total: int
    description: str = ""
    repack: frozenset[str] = frozenset()

    @property
    def is_host(self) -> bool:
        return self.kind == "cpu"


@dataclass(frozen=True)
class Margins:
    """Memory left unplanned on each device: for the OS and other programs, and estimate error."""

    host: int = 1 * GiB
    device: int = 1 * GiB  # llama.cpp's --fit leaves 1 GiB per GPU too


class DevicePlan(BaseModel):
    """What one device holds under the plan."""

    model_config = ConfigDict(frozen=True)

    name: str
    kind: DeviceKind
    layers: int  # repeating layers placed here
    layer_range: str  # e.g. "0-29", "" for none
    output: bool  # holds the output layer
    weights: int
    kv: int
    compute: int
    other: int  # output buffer and runtime tables (host only)
    total: int
    free: int
    available: int  # free less the margin
    fits: bool


class KVPlan(BaseModel):
    """The KV cache (and recurrent state) the context allocates."""

    model_config = ConfigDict(frozen=True)

    type_k: str
    type_v: str
    cells: int  # per sequence, full-attention layers
    cells_swa: int | None  # per sequence, sliding-window layers (None: the model has none)
    sequences: int
    layers: int  # layers with a KV cache of their own
    layers_swa: int
    recurrent_layers: int
    k_bytes: int
    v_bytes: int
    recurrent_bytes: int
    total: int


class MemoryPlan(BaseModel):
    """Bytes a model needs at given load options, in total and per device."""

    model_config = ConfigDict(frozen=True)

    architecture: str
    n_layer: int
    n_ctx_train: int
    n_ctx: int  # per slot, as loaded (padded to 256 as llama.cpp does)
    n_parallel: int
    n_gpu_layers: int  # resolved count, llama.cpp's meaning (n_layer + 1 = everything)
    gpu_layers_auto: bool
    flash_attn: bool
    n_ubatch: int  # tokens of the worst-case batch the buffers are sized for
    use_mmap: bool
    weights: int
    weights_mapped: int  # of which host memory mapped from the file (counted in RSS, reclaimable)
    weights_repacked: int  # host copies in llama.cpp's CPU_REPACK layout (beside the mapping)
    kv: KVPlan
    compute: int
    output: int
    runtime: int
    total: int
    host: int
    offloaded: int  # on devices other than the host
    devices: list[DevicePlan]
    fits: bool
    max_ctx: int | None  # largest per-slot context that fits with these layers (None: not asked)
    notes: list[str]

    def on(self, name: str) -> DevicePlan | None:
        return next((d for d in self.devices if d.name == name), None)


def with_free(device: Device, free: int) -> Device:
    """A copy of `device` that has `free` bytes free (e.g. a budget less what is loaded)."""
    return replace(device, free=free)


def rpc_device_name(endpoint: str, index: int = 0) -> str:
    """How llama.cpp names device `index` of the rpc-server at `endpoint` in its load log."""
    return f"RPC{index}[{endpoint}]"
