"""Gauges read from the loaded models when Prometheus scrapes: nothing to update per token.

Slots, waiting requests and KV cells come from each engine (`slots()`, `queued()`); memory by
device comes from the model's memory plan (engine/memory.py, through the scheduler) when the
scheduler made one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from server.scheduler import ModelManager

PREFIX = "gguf_serve"


class LoadedModelsCollector(Collector):
    """Yields the per-model gauges for whatever is loaded at scrape time."""

    def __init__(self, manager: ModelManager) -> None:
        self._manager = manager

    def describe(self) -> list[Any]:
        return []  # the families depend on what is loaded: collected on scrape only

    def collect(self) -> Iterator[GaugeMetricFamily]:
        loaded = GaugeMetricFamily(f"{PREFIX}_models_loaded", "Models loaded now.")
        slots = GaugeMetricFamily(
            f"{PREFIX}_slots", "Slots (sequences decoded together) per model.", labels=["model"]
        )
        busy = GaugeMetricFamily(
            f"{PREFIX}_slots_busy",
            "Slots running a request (prompt or generation).",
            labels=["model"],
        )
        queued = GaugeMetricFamily(
            f"{PREFIX}_queue_depth", "Requests waiting for a free slot.", labels=["model"]
        )
        kv_used = GaugeMetricFamily(
            f"{PREFIX}_kv_cells_used",
            "KV cache cells holding tokens (running requests and reusable prefixes).",
            labels=["model"],
        )
        kv_total = GaugeMetricFamily(
            f"{PREFIX}_kv_cells", "KV cache cells of the model's context.", labels=["model"]
        )
        memory = GaugeMetricFamily(
            f"{PREFIX}_model_memory_bytes",
            "Bytes the memory plan puts on each device for a loaded model.",
            labels=["model", "device"],
        )
        models = self._manager.loaded()
        loaded.add_metric([], len(models))
        for model in models:
            engine = model.engine
            states = engine.slots()
            slots.add_metric([model.name], len(states))
            busy.add_metric([model.name], sum(1 for s in states if s.state != "idle"))
            queued.add_metric([model.name], engine.queued())
            kv_used.add_metric([model.name], sum(s.kv_tokens for s in states))
            kv_total.add_metric([model.name], engine.n_ctx_slot * len(states))
            for device in model.plan.devices if model.plan is not None else ():
                memory.add_metric([model.name, device.name], float(device.total))
        yield from (loaded, slots, busy, queued, kv_used, kv_total, memory)
