"""What the batch engine tracks per request and per slot, and the stream a request's caller reads.

Kept apart from the decode loop (batch.py): these are plain data holders and the asyncio-side
iterator; nothing here calls llama.cpp.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from server.engine.queue_stream import Item, QueueStream
from server.engine.sampling import Sampler
from server.engine.textstream import TextStream
from server.engine.types import (
    GenerationRequest,
    Outcome,
    OutputWatch,
    RequestReport,
)


class _Canceller(Protocol):
    def cancel(self, job: Job) -> None: ...


class Job:
    """A submitted request as the worker sees it."""

    __slots__ = (
        "cancelled",
        "loop",
        "queue",
        "req",
        "sampler",
        "t_admit",
        "t_first",
        "t_submit",
        "watch",
    )

    def __init__(
        self, req: GenerationRequest, sampler: Sampler, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.req = req
        self.sampler = sampler
        self.loop = loop
        self.queue: asyncio.Queue[Item] = asyncio.Queue()
        self.cancelled = False
        self.t_submit = time.perf_counter()
        self.t_admit = 0.0
        self.t_first = 0.0
        self.watch: OutputWatch | None = req.watch() if req.watch is not None else None


class Slot:
    """One sequence of the context; `tokens` mirrors what its KV cache holds."""

    __slots__ = (
        "cached",
        "generated",
        "id",
        "job",
        "last_used",
        "n_done",
        "pending",
        "text",
        "tokens",
    )

    def __init__(self, slot_id: int) -> None:
        self.id = slot_id
        self.tokens: list[int] = []
        self.job: Job | None = None
        self.n_done = 0  # prompt tokens already in the KV cache
        self.cached = 0
        self.generated = 0
        self.pending = -1  # sampled token not yet decoded
        self.text: TextStream | None = None
        self.last_used = 0

    @property
    def state(self) -> str:
        job = self.job
        if job is None:
            return "idle"
        return "prompt" if self.n_done < len(job.req.prompt_tokens) else "generating"


class GenerationStreamImpl(QueueStream):
    """Async iterator over one job's events; aclose() cancels the job."""

    def __init__(self, engine: _Canceller, job: Job) -> None:
        super().__init__(job.queue)
        self._engine = engine
        self._job = job

    def _cancel(self) -> None:
        self._engine.cancel(self._job)

    def __del__(self) -> None:  # a response body that was never iterated still frees its slot
        if not self._done:
            self._job.cancelled = True  # no lock here: the worker reads the flag every step


def deliver(items: list[tuple[Job, Item]]) -> None:
    for job, item in items:
        job.queue.put_nowait(item)


def end_report(outcome: Outcome, job: Job, slot: Slot | None, end: float | None) -> RequestReport:
    """How `job` ended, for the engine's reporter; `slot` is where it ran (None: it never got
    one), `end` when its last token came (None: now)."""
    ran = slot is not None and slot.job is job
    return RequestReport(
        outcome=outcome,
        prompt_tokens=min(slot.n_done, len(job.req.prompt_tokens)) if slot and ran else 0,
        cached_tokens=slot.cached if slot and ran else 0,
        generated_tokens=slot.generated if slot and ran else 0,
        generation_seconds=((end or time.perf_counter()) - job.t_first) if job.t_first else 0.0,
    )


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # binary search on prefix equality: O(n log n) C-level compares
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo
