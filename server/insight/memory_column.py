"""Memory a model needs at a context length and KV type, for `compare` and `recommend`.

The memory planner (`engine/memory.py`) owns the arithmetic: this asks it for one sequence of
`n_ctx` tokens on this host, everything on the CPU, with the weights read once (`use_mmap:
false`). With mmap, llama.cpp's CPU backend keeps the file's pages mapped beside its repacked
copies of Q4_0/Q4_K/... weights: RSS counts those tensors twice, but the mapped half is page
cache the kernel can drop, so the figure that decides whether a quant fits is the one without
it (and it follows the file sizes, as users expect).
"""

from __future__ import annotations

from functools import cache

from server.engine.memory import plan_memory
from server.engine.options import LoadOptions
from server.engine.plan_types import Device
from server.errors import InvalidLoadOptions
from server.registry import GGUFInfo


@cache
def _host() -> Device:
    from server.engine.devices import host_memory, repacked_types  # loads llama.cpp: not at import

    available, total = host_memory()
    return Device("CPU", "cpu", available, total, "host memory", repacked_types())


def memory_at_context(info: GGUFInfo, n_ctx: int, type_k: str = "f16", type_v: str = "f16") -> int:
    """Bytes to run the model with one sequence of `n_ctx` tokens on this host (the plan's
    total: weights, KV cache, compute and output buffers); a model trained on
    fewer tokens is counted at its trained length, the most it runs."""
    options = LoadOptions.model_validate(
        {
            "n_ctx": n_ctx,
            "n_parallel": 1,
            "type_k": type_k,
            "type_v": type_v,
            "n_gpu_layers": 0,
            "use_mmap": False,
        }
    )
    cap = max(n_ctx, 256)
    try:
        plan = plan_memory(info, options, [_host()], n_ctx_cap=cap, find_max_ctx=False)
    except InvalidLoadOptions:  # n_ctx past the trained length
        trained = options.model_copy(update={"n_ctx": 0})
        plan = plan_memory(info, trained, [_host()], n_ctx_cap=cap, find_max_ctx=False)
    return plan.total


def available_memory() -> int | None:
    """The memory new work can use on this host (MemAvailable, container limits included)."""
    from server.engine.devices import host_memory  # loads llama.cpp: not at import

    available, _ = host_memory()
    return available or None
