"""The child side of a supervised engine: one BatchEngine, driven over a pair of pipes.

    python -m server.engine.child READ_FD WRITE_FD

The parent (engine/supervised.py) sends a `ChildConfig`, then requests; this process answers
with `ready` (or `failed`), then events, results and slot snapshots. Logs go to stderr, one
`LEVEL logger: message` line each, which the parent relays into its own log. If llama.cpp
aborts (an rpc-server went away), this process dies and the parent sees end-of-file.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from server.engine.factory import auto_gpu_layers, start_batch_engine
from server.engine.loader import ModelFacts, ensure_backend, resolve_options
from server.engine.options import LoadOptions
from server.engine.rpc import RpcDevice, plan_devices, register_servers
from server.engine.types import GenerationRequest, SlotInfo
from server.errors import EngineError, GGUFServeError

logger = logging.getLogger(__name__)

SLOT_SNAPSHOT_SECONDS = 0.25


@dataclass(frozen=True)
class ChildConfig:
    """What the child needs to load its model (already validated by the parent)."""

    path: Path
    options: LoadOptions
    n_ctx_train: int
    n_layer: int
    max_queue: int
    label: str
    log_level: int


@dataclass(frozen=True)
class ReadyInfo:
    """What the parent learns once the model is loaded."""

    n_ctx_slot: int
    n_parallel: int
    n_embd: int
    placement: tuple[tuple[str, str, float], ...]  # (buffer, kind, MiB) as llama.cpp logged them
    devices: tuple[RpcDevice, ...]  # the rpc-servers' devices, free memory before the load


_BUFFER = re.compile(
    r"(?P<buffer>\S+(?:\[[^\]]*\])?)\s+(?P<kind>model|KV|compute|output) buffer size =\s+(?P<mib>[0-9.]+) MiB"
)


class PlacementLog(logging.Handler):
    """Collects llama.cpp's `... buffer size = N MiB` lines: where weights and KV cache went."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.buffers: list[tuple[str, str, float]] = []

    def emit(self, record: logging.LogRecord) -> None:
        match = _BUFFER.search(record.getMessage())
        if match and "~llama_context" not in record.getMessage():
            self.buffers.append((match["buffer"], match["kind"], float(match["mib"])))


def _resolved(config: ChildConfig, rpc: list[RpcDevice]) -> LoadOptions:
    """The options with `n_gpu_layers: auto` (left to us when the parent could not describe the
    servers) made a count that fits this machine's devices and the registered servers'."""
    options = config.options
    if options.n_gpu_layers != "auto":
        return options
    cap = options.n_ctx or 1
    facts = ModelFacts(n_ctx_train=config.n_ctx_train, n_layer=config.n_layer)
    effective = resolve_options(options, facts, n_ctx_cap=cap)
    layers = auto_gpu_layers(config.path, effective, n_ctx_cap=cap, extra=plan_devices(rpc))
    logger.info("n_gpu_layers auto: %d fit this host's devices and the rpc-servers'", layers)
    return options.model_copy(update={"n_gpu_layers": layers})


def _load(config: ChildConfig) -> tuple[Any, ReadyInfo]:
    ensure_backend()
    rpc = register_servers(config.options.rpc_servers)  # first: `auto` plans with them
    options = _resolved(config, rpc)
    llama_log = logging.getLogger("server.engine.llama_cpp")
    placement = PlacementLog()
    llama_log.addHandler(placement)
    llama_log.setLevel(logging.DEBUG)  # the buffer lines are llama.cpp "info" (our DEBUG)
    try:
        engine = start_batch_engine(
            config.path,
            options,
            ModelFacts(n_ctx_train=config.n_ctx_train, n_layer=config.n_layer),
            n_ctx_cap=config.options.n_ctx or 1,
            max_queue=config.max_queue,
            label=config.label,
        )
    finally:
        llama_log.removeHandler(placement)
        llama_log.setLevel(logging.NOTSET)
    for buffer, kind, mib in placement.buffers:
        if kind in ("model", "KV"):
            logger.info("%s buffer on %s: %.2f MiB", kind, buffer, mib)
    info = ReadyInfo(
        n_ctx_slot=engine.n_ctx_slot,
        n_parallel=engine.n_parallel,
        n_embd=engine.n_embd,
        placement=tuple(placement.buffers),
        devices=tuple(rpc),
    )
    return engine, info


class _Server:
    """Runs requests from the parent on the engine and sends back what they produce."""

    def __init__(self, engine: Any, inbox: Connection, outbox: Connection) -> None:
        self.engine = engine
        self.inbox = inbox
        self.outbox = outbox
        self.send_lock = threading.Lock()
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.closed = asyncio.Event()

    def send(self, message: tuple[Any, ...]) -> None:
        with self.send_lock:
            self.outbox.send(message)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        threading.Thread(target=self._read, args=(loop,), daemon=True).start()
        publisher = loop.create_task(self._publish_slots())
        await self.closed.wait()
        publisher.cancel()
        for task in list(self.tasks.values()):
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)

    def _read(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            try:
                message = self.inbox.recv()
            except (EOFError, OSError):  # the parent went away
                message = ("close",)
            loop.call_soon_threadsafe(self._dispatch, message)
            if message[0] == "close":
                return

    def _dispatch(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "submit":
            self._start(message[1], self._generate(message[1], message[2]))
        elif kind == "embed":
            self._start(message[1], self._embed(message[1], *message[2:]))
        elif kind == "cancel":
            task = self.tasks.get(message[1])
            if task is not None:
                task.cancel()
        elif kind == "close":
            self.closed.set()

    def _start(self, rid: int, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks[rid] = task
        task.add_done_callback(lambda _t: self.tasks.pop(rid, None))

    async def _generate(self, rid: int, request: GenerationRequest) -> None:
        try:
            stream = self.engine.submit(request)
        except GGUFServeError as exc:
            self.send(("error", rid, exc))
            return
        try:
            async for event in stream:
                self.send(("event", rid, event))
        except GGUFServeError as exc:
            self.send(("error", rid, exc))
        except Exception as exc:
            logger.exception("request %d failed", rid)
            self.send(("error", rid, EngineError(f"generation failed: {exc}")))
        finally:
            await stream.aclose()

    async def _embed(
        self, rid: int, inputs: list[list[int]], normalize: bool, truncate: bool
    ) -> None:
        try:
            vectors = await self.engine.embed(inputs, normalize=normalize, truncate=truncate)
            self.send(("result", rid, vectors))
        except GGUFServeError as exc:
            self.send(("error", rid, exc))
        except Exception as exc:
            logger.exception("embedding %d failed", rid)
            self.send(("error", rid, EngineError(f"embedding failed: {exc}")))

    async def _publish_slots(self) -> None:
        last: list[SlotInfo] = []
        while True:
            slots = self.engine.slots()
            if slots != last:
                self.send(("slots", slots))
                last = slots
            await asyncio.sleep(SLOT_SNAPSHOT_SECONDS)


def main(argv: list[str]) -> int:
    inbox = Connection(int(argv[1]), writable=False)
    outbox = Connection(int(argv[2]), readable=False)
    config: ChildConfig = inbox.recv()
    logging.basicConfig(
        level=config.log_level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        engine, info = _load(config)
    except GGUFServeError as exc:
        outbox.send(("failed", exc))
        return 1
    outbox.send(("ready", info))
    try:
        asyncio.run(_Server(engine, inbox, outbox).run())
    finally:
        engine.close()
    return 0


if __name__ == "__main__":
    # Run the copy imported under its package name: messages pickle classes by module path.
    from server.engine.child import main as _main

    sys.exit(_main(sys.argv))
