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

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from pydantic import BaseModel, ConfigDict

from server.engine import buffers
from server.engine.hparams import ModelShape, model_shape
from server.engine.options import LoadOptions, ModelFacts, resolve_options
from server.registry.gguf_info import GGUFInfo

DeviceKind = Literal["cpu", "gpu", "igpu", "rpc"]
GiB = 1 << 30
_INPUT_TENSORS = re.compile(r"^(token_embd|per_layer_token_embd|position_embd|token_types)\b")
_OUTPUT_TENSORS = re.compile(r"^(output|cls)[._]")


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
    host, offload = _split_devices(devices)
    auto = effective.n_gpu_layers == "auto"
    if auto:
        ngl = fit_gpu_layers(info, shape, effective, host, offload, margins, tensor_split)
    else:
        ngl = int(effective.n_gpu_layers)
    plan = _plan(info, shape, effective, host, offload, margins, tensor_split, ngl, auto)
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
        plan = _plan(info, shape, options, host, offload, margins, tensor_split, ngl, True)
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
        return _plan(info, shape, trial, host, offload, margins, tensor_split, ngl, False).fits

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


def _split_devices(devices: Sequence[Device]) -> tuple[Device, list[Device]]:
    """The host and the offload devices in llama.cpp's order: RPC, GPUs, iGPUs only if no GPU."""
    hosts = [d for d in devices if d.is_host]
    host = hosts[0] if hosts else Device("CPU", "cpu", 0, 0)
    rpc = [d for d in devices if d.kind == "rpc"]
    gpus = [d for d in devices if d.kind == "gpu"]
    igpus = [d for d in devices if d.kind == "igpu"]
    return host, rpc + (gpus or igpus)


def _placement(
    n_layer: int, ngl: int, offload: Sequence[Device], tensor_split: Sequence[float] | None
) -> list[int]:
    """Device index per layer 0..n_layer (the last is the output layer); -1 is the host.

    llama.cpp: the last `ngl` of the n_layer + 1 layers go to the offload devices, split at
    the cumulative fractions of `tensor_split` (default: each device's free memory).
    """
    if not offload or ngl == 0:
        return [-1] * (n_layer + 1)
    ngl = n_layer + 1 if ngl < 0 else min(ngl, n_layer + 1)
    weights = list(tensor_split or [])[: len(offload)]
    if not any(weights):
        weights = [float(d.free) for d in offload]
    if not any(weights):
        weights = [1.0] * len(offload)
    weights += [0.0] * (len(offload) - len(weights))
    total = sum(weights)
    cuts, running = [], 0.0
    for w in weights:
        running += w
        cuts.append(running / total)
    start = n_layer + 1 - ngl
    out = []
    for il in range(n_layer + 1):
        if il < start:
            out.append(-1)
            continue
        x = (il - start) / ngl
        out.append(next((i for i, c in enumerate(cuts) if x < c), len(cuts) - 1))
    return out


def _plan(
    info: GGUFInfo,
    shape: ModelShape,
    options: LoadOptions,
    host: Device,
    offload: Sequence[Device],
    margins: Margins,
    tensor_split: Sequence[float] | None,
    ngl: int,
    auto: bool,
) -> MemoryPlan:
    flash_attn = options.flash_attn != "off"  # auto: llama.cpp turns it on where supported
    ctx = buffers.context_shape(
        n_ctx=int(options.n_ctx),
        n_parallel=options.n_parallel,
        n_batch=options.n_batch,
        n_ubatch=options.n_ubatch,
        n_outputs=options.n_parallel,  # the engine samples one token per slot per step
        flash_attn=flash_attn,
        type_k=options.type_k,
        type_v=options.type_v,
        swa_full=options.swa_full,
    )
    where = _placement(shape.n_layer, ngl, offload, tensor_split)
    slots = [host, *offload]
    acc = [_Acc() for _ in slots]

    sizes = info.tensor_sizes
    layer_bytes = sizes.layers
    repack = host.repack if options.use_mmap else frozenset()
    repacked = 0
    kv_k = kv_v = recurrent = 0
    for il in range(shape.n_layer):
        a = acc[where[il] + 1]
        a.layers.append(il)
        a.weights += layer_bytes[il] if il < len(layer_bytes) else 0
        if where[il] < 0 and il < len(sizes.matrices):
            repacked += sum(n for t, n in sizes.matrices[il].items() if t in repack)
        k, v = buffers.kv_layer_bytes(shape, ctx, il)
        kv_k, kv_v = kv_k + k, kv_v + v
        a.kv += k + v
        if shape.recurrent[il]:
            state = buffers.recurrent_layer_bytes(shape, ctx)
            recurrent += state
            a.kv += state
    out_acc = acc[where[shape.n_layer] + 1]
    out_acc.output = True
    tied = "output.weight" not in sizes.other
    for name, size in sizes.other.items():
        if _OUTPUT_TENSORS.match(name):
            out_acc.weights += size
            if out_acc is acc[0] and sizes.other_types.get(name) in repack and "norm" not in name:
                repacked += size
        else:
            acc[0].weights += size
            if tied and name == "token_embd.weight" and out_acc is not acc[0]:
                out_acc.weights += size  # llama.cpp copies the tied embedding to the output device

    acc[0].weights += repacked
    for a in acc:
        if a.layers or a.output:
            a.compute = buffers.compute_bytes(shape, ctx, output=a.output)
    if not acc[0].compute:  # everything offloaded: the host still embeds the input tokens
        acc[0].compute = buffers.F32 * 2 * shape.n_embd * ctx.n_tokens
    output = buffers.output_bytes(shape, ctx)
    vocab = info.array_lengths.get("tokenizer.ggml.tokens", shape.n_vocab)
    vocab += info.array_lengths.get("tokenizer.ggml.merges", 0)
    runtime = buffers.host_runtime_bytes(vocab)
    acc[0].other = output + runtime

    plans = []
    for device, a in zip(slots, acc, strict=True):
        margin = margins.host if device.is_host else margins.device
        total = a.weights + a.kv + a.compute + a.other
        available = max(device.free - margin, 0)
        plans.append(
            DevicePlan(
                name=device.name,
                kind=device.kind,
                layers=len(a.layers),
                layer_range=_ranges(a.layers),
                output=a.output,
                weights=a.weights,
                kv=a.kv,
                compute=a.compute,
                other=a.other,
                total=total,
                free=device.free,
                available=available,
                fits=total <= available,
            )
        )
    weights = sum(a.weights for a in acc)
    compute = sum(a.compute for a in acc)
    swa_layers = sum(1 for layer in shape.attention if layer is not None and layer.swa)
    kv = KVPlan(
        type_k=options.type_k,
        type_v=options.type_v,
        cells=ctx.n_ctx_seq,
        cells_swa=buffers.swa_cells(shape, ctx) if swa_layers else None,
        sequences=ctx.n_seq,
        layers=shape.kv_layers,
        layers_swa=swa_layers,
        recurrent_layers=shape.recurrent_layers,
        k_bytes=kv_k,
        v_bytes=kv_v,
        recurrent_bytes=recurrent,
        total=kv_k + kv_v + recurrent,
    )
    total = sum(p.total for p in plans)
    return MemoryPlan(
        architecture=shape.arch,
        n_layer=shape.n_layer,
        n_ctx_train=shape.n_ctx_train,
        n_ctx=ctx.n_ctx_seq,
        n_parallel=ctx.n_seq,
        n_gpu_layers=sum(len(a.layers) for a in acc[1:]) + (1 if where[-1] >= 0 else 0),
        gpu_layers_auto=auto,
        flash_attn=flash_attn,
        n_ubatch=ctx.n_tokens,
        use_mmap=options.use_mmap,
        weights=weights,
        weights_mapped=acc[0].weights - repacked if options.use_mmap else 0,
        weights_repacked=repacked,
        kv=kv,
        compute=compute,
        output=output,
        runtime=runtime,
        total=total,
        host=plans[0].total,
        offloaded=total - plans[0].total,
        devices=plans,
        fits=all(p.fits for p in plans),
        max_ctx=None,
        notes=list(shape.notes),
    )


@dataclass
class _Acc:
    """Running totals of one device while layers are placed."""

    layers: list[int] = field(default_factory=list)
    weights: int = 0
    kv: int = 0
    compute: int = 0
    other: int = 0
    output: bool = False


def _ranges(ids: list[int]) -> str:
    """`[0, 1, 2, 5]` -> `"0-2,5"`."""
    out: list[str] = []
    for i in ids:
        if out and int(out[-1].rsplit("-", 1)[-1]) == i - 1:
            first = out[-1].split("-", 1)[0]
            out[-1] = f"{first}-{i}"
        else:
            out.append(str(i))
    return ",".join(out)


def with_free(device: Device, free: int) -> Device:
    """A copy of `device` that has `free` bytes free (e.g. a budget less what is loaded)."""
    return replace(device, free=free)
