"""The memory budget the scheduler fills with models: capacity per device, what is left.

Capacity is taken once, when the first model is planned: the host's `memory_budget` (default:
the memory available then, less `host_margin`) and each GPU's free memory less `gpu_margin`.
Loaded models are then accounted by their plans, not by re-reading free memory, so the answer
does not drift with page cache or with what the models have touched so far.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from server.engine.memory import Device, Margins, MemoryPlan, with_free
from server.engine.options import LoadOptions
from server.errors import InsufficientMemory
from server.planning import Planner, PlanTarget
from server.registry.humanize import binary_bytes

logger = logging.getLogger(__name__)
_NO_MARGIN = Margins(host=0, device=0)


class MemoryBudget:
    """Plans models against what the budget leaves beside the loaded ones."""

    def __init__(self, planner: Planner) -> None:
        self.planner = planner
        self._capacity: list[Device] | None = None
        self._lock = threading.Lock()

    def capacity(self) -> list[Device]:
        """Each device with `free` = what models may take there in all."""
        with self._lock:
            if self._capacity is None:
                settings = self.planner.settings
                devices = []
                for device in self.planner.devices():
                    if device.is_host:
                        free = (
                            int(settings.memory_budget)
                            if settings.memory_budget is not None
                            else device.free - int(settings.host_margin)
                        )
                    else:
                        free = device.free - int(settings.gpu_margin)
                    devices.append(with_free(device, max(free, 0)))
                self._capacity = devices
                logger.info(
                    "memory budget for models: %s",
                    ", ".join(f"{d.name} {binary_bytes(d.free)}" for d in devices),
                )
            return list(self._capacity)

    def remaining(self, loaded: Iterable[MemoryPlan]) -> list[Device]:
        """The capacity less what the `loaded` plans take on each device."""
        used: dict[str, int] = {}
        for plan in loaded:
            for device in plan.devices:
                used[device.name] = used.get(device.name, 0) + device.total
        return [with_free(d, max(d.free - used.get(d.name, 0), 0)) for d in self.capacity()]

    def plan_beside(
        self, target: PlanTarget, options: LoadOptions, loaded: Iterable[MemoryPlan]
    ) -> MemoryPlan:
        """The plan of `target` in what the `loaded` plans leave. Raises InvalidLoadOptions."""
        return self.planner.plan(
            target, options, self.remaining(loaded), margins=_NO_MARGIN, find_max_ctx=False
        )

    def check_alone(self, target: PlanTarget, options: LoadOptions) -> MemoryPlan:
        """The plan of `target` with nothing else loaded.

        Raises InsufficientMemory, naming the numbers, when even that does not fit;
        InvalidLoadOptions.
        """
        plan = self.planner.plan(target, options, self.capacity(), margins=_NO_MARGIN)
        if plan.fits:
            return plan
        short = next(d for d in plan.devices if not d.fits)
        where = "" if short.kind == "cpu" else f" on {short.name}"
        if plan.max_ctx:
            hint = f"at most {plan.max_ctx} tokens of context per slot fit"
            if plan.n_parallel > 1:
                hint += f" with {plan.n_parallel} slots"
        else:
            hint = "it does not fit at any context"
        raise InsufficientMemory(
            f"{target.name} needs {binary_bytes(short.total)}{where} (weights "
            f"{binary_bytes(short.weights)}, KV cache {binary_bytes(short.kv)} for "
            f"{plan.n_ctx} tokens x {plan.n_parallel} slots, compute "
            f"{binary_bytes(short.compute)}), {binary_bytes(short.available)} available for "
            f"models; {hint}; try a smaller quant, a smaller num_ctx or a q8_0 KV cache",
            param="options.num_ctx",
        )
