"""Placing a model's layers on devices and adding up each device's bytes.

llama.cpp's `load_tensors`: the last `n_gpu_layers` of the n_layer + 1 layers (the output layer
is the extra one) go to the offload devices, split at the cumulative fractions of
`tensor_split` (default: each device's free memory); the input embedding stays on the host.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from server.engine import buffers
from server.engine.hparams import ModelShape
from server.engine.options import LoadOptions
from server.engine.plan_types import Device, DevicePlan, KVPlan, Margins, MemoryPlan
from server.registry.gguf_info import GGUFInfo

_OUTPUT_TENSORS = re.compile(r"^(output|cls)[._]")


def split_devices(devices: Sequence[Device]) -> tuple[Device, list[Device]]:
    """The host and the offload devices in llama.cpp's order: RPC, GPUs, iGPUs only if no GPU."""
    hosts = [d for d in devices if d.is_host]
    host = hosts[0] if hosts else Device("CPU", "cpu", 0, 0)
    rpc = [d for d in devices if d.kind == "rpc"]
    gpus = [d for d in devices if d.kind == "gpu"]
    igpus = [d for d in devices if d.kind == "igpu"]
    return host, rpc + (gpus or igpus)


def placement(
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


def plan_on(
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
    """The plan with `ngl` layers offloaded (options already resolved, except the layers)."""
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
    where = placement(shape.n_layer, ngl, offload, tensor_split)
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
