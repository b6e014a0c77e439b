"""The text of `gguf-serve plan`: a table per device and the arithmetic behind it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from server.registry.humanize import binary_bytes

if TYPE_CHECKING:
    from server.engine.memory import DevicePlan, MemoryPlan
    from server.planning import PlanTarget


def describe_plan(target: PlanTarget, plan: MemoryPlan) -> list[str]:
    """Lines: what the model is, the load settings, a table of bytes per device, the verdict."""
    info = target.info
    kv = plan.kv
    lines = [
        f"{target.name}: {info.architecture}, {info.parameter_size} parameters, {info.quant}, "
        f"{plan.n_layer} layers, trained context {plan.n_ctx_train or '?'}",
        f"  {_source(target)}",
        f"  context {plan.n_ctx} per slot x {plan.n_parallel} slots, KV cache {kv.type_k}/"
        f"{kv.type_v}, flash attention {'on' if plan.flash_attn else 'off'}",
        f"  {_gpu_layers(plan)}, batches of {plan.n_ubatch} tokens",
        "",
    ]
    rows = [
        ["DEVICE", "LAYERS", "WEIGHTS", "KV CACHE", "COMPUTE", "OTHER", "TOTAL", "FREE", "FITS"]
    ]
    rows += [_row(d) for d in plan.devices if d.total or d.kind in ("cpu", "rpc")]
    if len(rows) > 2:
        rows.append(
            [
                "total",
                "",
                binary_bytes(plan.weights),
                binary_bytes(kv.total),
                binary_bytes(plan.compute),
                binary_bytes(plan.output + plan.runtime),
                binary_bytes(plan.total),
                "",
                "yes" if plan.fits else "NO",
            ]
        )
    lines += ["  " + line for line in _columns(rows)]
    lines.append("")
    lines += [f"  {line}" for line in _details(plan)]
    return lines


def _source(target: PlanTarget) -> str:
    if target.header_bytes is None:
        return "from the store"
    return (
        f"not pulled: header read over HTTP ({binary_bytes(target.header_bytes)} of "
        f"{binary_bytes(target.info.size_bytes)}) from {target.source}"
    )


def _gpu_layers(plan: MemoryPlan) -> str:
    n, total = plan.n_gpu_layers, plan.n_layer + 1
    offload = [d for d in plan.devices if d.kind != "cpu"]
    if plan.gpu_layers_auto and not offload:
        return f"GPU layers 0 of {total} (auto: no GPU)"
    how = "auto: the most that fit" if plan.gpu_layers_auto else "as asked"
    servers = sum(1 for d in offload if d.kind == "rpc")
    if servers:
        where = f"{servers} rpc-server device{'s' if servers > 1 else ''}"
        if len(offload) > servers:
            where += " and the GPUs"
        return f"offloaded layers {n} of {total} ({how}) to {where}"
    return f"GPU layers {n} of {total} ({how})"


def _row(d: DevicePlan) -> list[str]:
    layers = d.layer_range or "-"
    if d.output:
        layers += ",output"
    return [
        d.name,
        layers,
        binary_bytes(d.weights),
        binary_bytes(d.kv),
        binary_bytes(d.compute),
        binary_bytes(d.other),
        binary_bytes(d.total),
        binary_bytes(d.free),
        "yes" if d.fits else "NO",
    ]


def _details(plan: MemoryPlan) -> list[str]:
    kv = plan.kv
    out = []
    cells = kv.cells * kv.sequences
    if kv.layers:
        swa = ""
        if kv.cells_swa is not None:
            swa = f" ({kv.layers_swa} sliding-window layers keep {kv.cells_swa} cells per slot)"
        out.append(
            f"KV cache: {kv.layers} layers x {cells} cells{swa}: {binary_bytes(kv.k_bytes)} K + "
            f"{binary_bytes(kv.v_bytes)} V, {binary_bytes(kv.total // max(cells, 1))} per token"
        )
    if kv.recurrent_layers:
        out.append(
            f"recurrent state: {kv.recurrent_layers} layers, {binary_bytes(kv.recurrent_bytes)} "
            "whatever the context"
        )
    if plan.use_mmap and plan.weights_mapped:
        out.append(
            f"weights on the host are memory-mapped from the file ({binary_bytes(plan.weights_mapped)}"
            "): counted in RSS, shared, reclaimable"
        )
    if plan.weights_repacked:
        out.append(
            f"plus {binary_bytes(plan.weights_repacked)} of them copied into llama.cpp's CPU_REPACK "
            "layout for this CPU (their mapped pages stay resident until reclaimed)"
        )
    if plan.max_ctx is not None:
        if plan.max_ctx == 0:
            out.append("largest context that fits: none; not even 256 tokens per slot")
        else:
            top = " (the trained length)" if plan.max_ctx == plan.n_ctx_train else ""
            out.append(f"largest context that fits: {plan.max_ctx} per slot{top}")
    if not plan.fits:
        short = [d for d in plan.devices if not d.fits]
        for d in short:
            out.append(
                f"does not fit {d.name}: needs {binary_bytes(d.total)}, "
                f"{binary_bytes(d.available)} available; try a smaller quant, --ctx or --kv-type"
            )
    out += plan.notes
    return out


def _columns(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
