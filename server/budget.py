"""The memory budget the scheduler fills with models: capacity per device, what is left.

Capacity is taken once, when the first model is planned: the host's `memory_budget` (default:
the memory available then, less `host_margin`) and each GPU's free memory less `gpu_margin`.
Loaded models are then accounted by their plans, not by re-reading free memory, so the answer
does not drift with page cache or with what the models have touched so far.

A model with `rpc_servers` is planned with their devices too (free less `gpu_margin`), described
at its load (server.rpc_planning); its host share is what counts against the host budget. When
they cannot be described (down, busy, slow), the model loads as configured and only its host
share is checked: llama.cpp then finds out for itself what fits on the servers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from server.engine.memory import Device, Margins, MemoryPlan, with_free
from server.engine.options import GpuLayers, LoadOptions
from server.errors import InsufficientMemory
from server.planning import Planner, PlanTarget
from server.registry.humanize import binary_bytes
from server.rpc_planning import RpcUnavailable, is_unchecked, unchecked_devices

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

    def devices_for(self, name: str, options: LoadOptions) -> list[Device]:
        """The capacity a model loaded with `options` may use: this machine's and its
        rpc-servers' (less `gpu_margin`), or placeholders that are not checked for servers that
        cannot be described now. Blocks while it asks the servers (up to
        `rpc_describe_timeout`): call it from a worker thread."""
        devices = self.capacity()
        if not options.rpc_servers:
            return devices
        try:
            rpc = self.planner.rpc.devices(options.rpc_servers).devices
        except RpcUnavailable as exc:
            logger.warning(
                "%s: %s; loading it with its rpc_servers as configured, their memory not checked",
                name,
                exc.message,
            )
            return [*devices, *unchecked_devices(options.rpc_servers)]
        margin = int(self.planner.settings.gpu_margin)
        return [*devices, *(with_free(d, max(d.free - margin, 0)) for d in rpc)]

    def remaining(
        self, loaded: Iterable[MemoryPlan], devices: list[Device] | None = None
    ) -> list[Device]:
        """The capacity (or `devices`) less what the `loaded` plans take on each device."""
        used: dict[str, int] = {}
        for plan in loaded:
            for device in plan.devices:
                used[device.name] = used.get(device.name, 0) + device.total
        capacity = devices if devices is not None else self.capacity()
        return [with_free(d, max(d.free - used.get(d.name, 0), 0)) for d in capacity]

    def plan_beside(
        self,
        target: PlanTarget,
        options: LoadOptions,
        loaded: Iterable[MemoryPlan],
        devices: list[Device] | None = None,
    ) -> MemoryPlan:
        """The plan of `target` in what the `loaded` plans leave of the capacity (or of
        `devices`, from devices_for). Raises InvalidLoadOptions."""
        return self.planner.plan(
            target,
            options,
            self.remaining(loaded, devices),
            margins=_NO_MARGIN,
            find_max_ctx=False,
        )

    def check_alone(
        self, target: PlanTarget, options: LoadOptions, devices: list[Device] | None = None
    ) -> MemoryPlan:
        """The plan of `target` with nothing else loaded (on `devices`, default the capacity).

        Raises InsufficientMemory, naming the numbers, when even that does not fit;
        InvalidLoadOptions.
        """
        capacity = devices if devices is not None else self.capacity()
        plan = self.planner.plan(target, options, capacity, margins=_NO_MARGIN)
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


def layers_to_load(options: LoadOptions, plan: MemoryPlan) -> GpuLayers:
    """The n_gpu_layers to load with: the plan's count (what the budget accounted for), except
    `auto` over rpc-servers that could not be described, which the engine resolves itself
    against the servers once it has registered them."""
    unchecked = any(d.kind == "rpc" and is_unchecked(d.free) for d in plan.devices)
    if options.n_gpu_layers == "auto" and unchecked:
        return "auto"
    return plan.n_gpu_layers
