"""Which models are loaded: load on demand, share one load, keep_alive, eviction."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol

from server.budget import MemoryBudget, layers_to_load
from server.chat.sandbox import RenderLimits
from server.chat.template import ChatTemplate
from server.engine.options import LoadOptions
from server.errors import EngineError, GGUFServeError, InvalidRequest, ModelLoadError
from server.planning import Planner, PlanTarget

if TYPE_CHECKING:
    from server.engine.memory import Device, MemoryPlan
    from server.engine.types import Engine, EngineReporter
    from server.registry import Registry, ResolvedModel
    from server.settings import Settings

logger = logging.getLogger(__name__)

EngineFactory = Callable[["ResolvedModel", LoadOptions], tuple["Engine", ChatTemplate]]
# What can be checked about a model before anything is unloaded to make room for it.
LoadCheck = Callable[["ResolvedModel"], None]

UnloadReason = Literal["expired", "evicted", "reload", "requested", "shutdown"]


class SchedulerReporter(Protocol):
    """Where the scheduler reports loads and unloads (metrics), and how each engine it starts
    gets its own reporter."""

    def model_loaded(self, name: str, seconds: float) -> None: ...

    def model_load_failed(self, name: str) -> None: ...

    def model_unloaded(self, name: str, reason: UnloadReason) -> None: ...

    def engine_reporter(self, name: str) -> EngineReporter:
        """The reporter the engine of model `name` is given."""
        ...


@dataclass(eq=False)
class LoadedModel:
    """A model with a running engine, and the bookkeeping that decides when it goes."""

    name: str
    resolved: ResolvedModel
    engine: Engine
    template: ChatTemplate
    options: LoadOptions  # as requested (n_gpu_layers may be auto); the plan has the counts
    load_seconds: float
    keep_alive: float
    plan: MemoryPlan | None = None
    refs: int = 0
    last_used: float = field(default_factory=time.monotonic)
    expires_at: datetime | None = None
    timer: asyncio.TimerHandle | None = None


def _target(resolved: ResolvedModel) -> PlanTarget:
    return PlanTarget(resolved.name, resolved.info, "store", None, resolved.load_overrides)


class Lease:
    """One request's hold on a loaded model; release() (or garbage collection) lets it go."""

    def __init__(self, manager: ModelManager, model: LoadedModel, keep_alive: float | None) -> None:
        self.manager = manager
        self.model = model
        self.keep_alive = keep_alive
        self._released = False
        model.refs += 1

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.manager._release(self.model, self.keep_alive)

    def __del__(self) -> None:  # a response body that never started still frees its model
        if not self._released:
            with contextlib.suppress(RuntimeError):  # event loop already gone at shutdown
                self.release()


def default_engine_factory(
    settings: Settings, reporter: SchedulerReporter | None = None
) -> EngineFactory:
    """The real engine: llama-cpp-python through engine.factory (imported only when used)."""

    def make(resolved: ResolvedModel, options: LoadOptions) -> tuple[Engine, ChatTemplate]:
        from server.engine.factory import start_engine
        from server.engine.loader import ModelFacts

        info = resolved.info
        facts = ModelFacts(n_ctx_train=info.context_length or 0, n_layer=info.block_count or 0)
        engine = start_engine(
            resolved.path,
            options,
            facts,
            n_ctx_cap=settings.n_ctx_cap,
            max_queue=settings.max_queue,
            label=resolved.name,
            reporter=reporter.engine_reporter(resolved.name) if reporter else None,
        )
        tok = engine.tokenizer
        bos, eos = tok.token_text(tok.bos), tok.token_text(tok.eos)
        limits = RenderLimits(settings.template_timeout_seconds, settings.template_max_chars)
        try:
            template = ChatTemplate(info.chat_template, bos_token=bos, eos_token=eos, limits=limits)
        except InvalidRequest:
            logger.warning("%s: its chat template does not parse; using ChatML", resolved.name)
            template = ChatTemplate(None, bos_token=bos, eos_token=eos, limits=limits)
        return engine, template

    return make


def default_load_check(resolved: ResolvedModel) -> None:
    """llama.cpp's own checks without loading the weights (engine.loader.check_loadable)."""
    from server.engine.loader import check_loadable

    check_loadable(resolved.path)


class ModelManager:
    """Loads models on demand (one load per model at a time) and unloads idle ones.

    Before a load the model is planned (engine.memory): if it cannot fit the memory budget even
    alone, the request fails with InsufficientMemory and nothing loaded is touched; if it does
    not fit beside the loaded models, idle ones are unloaded, least recently used first.
    `max_loaded_models` (0: none) caps the count as well.

    A load that cannot succeed should cost nothing: the model is checked before anything is
    unloaded for it, and when its load fails anyway the models unloaded for it are loaded
    again before the error is reported.
    """

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        factory: EngineFactory | None = None,
        *,
        check: LoadCheck | None = None,
        planner: Planner | None = None,
        reporter: SchedulerReporter | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.budget = MemoryBudget(planner or Planner(settings, registry))
        # Plans must not ask the rpc-servers our models hold: each serves one client at a time.
        self.budget.planner.rpc.held = self.rpc_servers_in_use
        self._reporter = reporter
        self._factory = factory or default_engine_factory(settings, reporter)
        # The real check only makes sense for the real engine; a test factory brings its own.
        self._check = check or (default_load_check if factory is None else None)
        self._loaded: dict[str, LoadedModel] = {}
        self._lock = asyncio.Lock()
        self._idle = asyncio.Condition()
        self._idle_seq = 0  # counts models going idle or unloaded (see _wait_change)
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()

    def loaded(self) -> list[LoadedModel]:
        return list(self._loaded.values())

    def rpc_servers_in_use(self) -> set[str]:
        """The rpc-servers the loaded models hold (callable from any thread)."""
        return {e for m in list(self._loaded.values()) for e in m.options.rpc_servers}

    def options_for(self, resolved: ResolvedModel, overrides: dict[str, Any] | None) -> LoadOptions:
        """Server defaults < the catalog's per-model defaults < per-request overrides.

        Raises InvalidRequest naming the bad option.
        """
        cap = self.settings.n_ctx_cap
        n_ctx = (overrides or {}).get("n_ctx")
        if isinstance(n_ctx, int) and n_ctx > cap:
            # A request (Ollama's num_ctx) cannot size a context past the operator's cap;
            # Ollama clamps an oversized num_ctx the same way rather than refusing it.
            logger.warning("requested n_ctx=%d is above n_ctx_cap; using %d", n_ctx, cap)
            overrides = {**(overrides or {}), "n_ctx": cap}
        return self.budget.planner.options(_target(resolved), overrides)

    async def acquire(
        self,
        name: str,
        *,
        overrides: dict[str, Any] | None = None,
        keep_alive: float | None = None,
    ) -> Lease:
        """A lease on `name`, loading it first if needed.

        Raises ModelNotFound, InvalidName, InvalidLoadOptions, ModelLoadError.
        """
        resolved = await asyncio.to_thread(self.registry.resolve, name)
        options = self.options_for(resolved, overrides)
        model = self._loaded.get(resolved.name)
        if model is None or model.options != options:
            model = await self._load(resolved, options)
        return Lease(self, model, keep_alive)

    async def _load(self, resolved: ResolvedModel, options: LoadOptions) -> LoadedModel:
        """Raises InsufficientMemory, InvalidLoadOptions, ModelLoadError, EngineError (the
        server is shutting down).

        The lock is held only while deciding and loading, never while waiting for a busy model
        to go idle (its own copy with other options, or one that must make room): that wait
        happens outside it, so other loads, expiry, unloads and shutdown go on meanwhile.
        """
        target = _target(resolved)
        devices: list[Device] | None = None
        checked = False
        evicted: list[LoadedModel] = []
        while True:
            async with self._lock:
                self._check_open()
                current = self._loaded.get(resolved.name)
                if current is not None and current.options == options:
                    return current  # another request loaded it while we waited
                if not checked:
                    checked = True
                    # this machine's devices, and the rpc-servers' of `options` (asked in a thread)
                    devices = await asyncio.to_thread(
                        self.budget.devices_for, resolved.name, options
                    )
                    self.budget.check_alone(target, options, devices)  # before anything is unloaded
                    if self._check is not None:
                        await asyncio.to_thread(self._checked, resolved)
                if current is not None and current.refs == 0:
                    await self._unload(current, "reload")
                    evicted.append(current)
                    current = None
                plan = None
                if current is None:
                    plan = await self._room(target, options, evicted, devices)
                if plan is not None:
                    try:
                        return await self._start(resolved, options, plan)
                    except Exception:
                        await self._restore(evicted)
                        raise
                seen = self._idle_seq
            await self._wait_change(seen)

    def _checked(self, resolved: ResolvedModel) -> None:
        """Raises ModelLoadError naming the model when the check refuses it."""
        assert self._check is not None
        try:
            self._check(resolved)
        except ModelLoadError as exc:
            raise ModelLoadError(f"cannot load '{resolved.name}': {exc.message}") from None

    async def _start(
        self, resolved: ResolvedModel, options: LoadOptions, plan: MemoryPlan | None
    ) -> LoadedModel:
        """Load and register `resolved` as `plan` places it. Raises ModelLoadError naming it,
        InvalidLoadOptions."""
        effective = options
        if plan is not None:
            effective = options.model_copy(update={"n_gpu_layers": layers_to_load(options, plan)})
        started = time.perf_counter()
        try:
            engine, template = await asyncio.to_thread(self._factory, resolved, effective)
        except BaseException as exc:
            if self._reporter is not None:
                self._reporter.model_load_failed(resolved.name)
            if isinstance(exc, ModelLoadError):
                raise ModelLoadError(f"cannot load '{resolved.name}': {exc.message}") from None
            raise
        model = LoadedModel(
            name=resolved.name,
            resolved=resolved,
            engine=engine,
            template=template,
            options=options,
            load_seconds=time.perf_counter() - started,
            keep_alive=self.settings.keep_alive,
            plan=plan,
        )
        self._loaded[resolved.name] = model
        if self._reporter is not None:
            self._reporter.model_loaded(model.name, model.load_seconds)
        return model

    async def _restore(self, evicted: list[LoadedModel]) -> None:
        """Load again what was unloaded for a load that failed, so it keeps serving."""
        for old in evicted:
            try:
                model = await self._start(old.resolved, old.options, old.plan)
            except GGUFServeError as exc:
                logger.error("could not load %s again: %s", old.name, exc.message)
                continue
            model.keep_alive = old.keep_alive
            logger.info("%s is loaded again after a failed load", old.name)
            if model.refs == 0:
                self._schedule_expiry(model, asyncio.get_running_loop())

    async def _room(
        self,
        target: PlanTarget,
        options: LoadOptions,
        evicted: list[LoadedModel],
        devices: list[Device] | None = None,
    ) -> MemoryPlan | None:
        """The plan of `target` beside what stays loaded, unloading idle models (least recently
        used first, each added to `evicted`) until it fits, the count limit allows and no loaded
        model holds one of its rpc-servers (an rpc-server serves one client at a time: loading
        beside would wait on it for ever); None when only busy models stand in the way (the
        caller waits, without the lock)."""
        limit = self.settings.max_loaded_models
        while True:
            loaded = list(self._loaded.values())
            plans = (m.plan for m in loaded if m.plan)
            plan = self.budget.plan_beside(target, options, plans, devices)
            clash = [m for m in loaded if set(m.options.rpc_servers) & set(options.rpc_servers)]
            if not loaded or (plan.fits and not clash and (limit == 0 or len(loaded) < limit)):
                return plan  # alone it fits: check_alone said so
            idle = [m for m in clash or loaded if m.refs == 0]
            if not idle:
                return None
            victim = min(idle, key=lambda m: m.last_used)
            logger.info("unloading %s to make room for %s", victim.name, target.name)
            await self._unload(victim, "evicted")
            evicted.append(victim)

    async def _wait_change(self, seen: int) -> None:
        """Wait (holding no lock) until a model went idle or was unloaded after `seen` was read,
        or the manager closes."""
        async with self._idle:
            await self._idle.wait_for(lambda: self._idle_seq != seen or self._closed)

    def _check_open(self) -> None:
        if self._closed:
            raise EngineError("the server is shutting down")

    def _changed(self) -> None:
        """Something a waiting load or unload may be waiting for happened: wake them."""
        self._idle_seq += 1
        self._spawn(asyncio.get_running_loop(), self._notify_idle())

    def _release(self, model: LoadedModel, keep_alive: float | None) -> None:
        model.refs -= 1
        model.last_used = time.monotonic()
        if keep_alive is not None:
            model.keep_alive = keep_alive
        if model.refs > 0:
            return
        self._changed()
        self._schedule_expiry(model, asyncio.get_running_loop())

    def _spawn(self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]) -> None:
        task = loop.create_task(coro)
        self._tasks.add(task)  # keep a reference until it finishes
        task.add_done_callback(self._tasks.discard)

    async def _notify_idle(self) -> None:
        async with self._idle:
            self._idle.notify_all()

    def _schedule_expiry(self, model: LoadedModel, loop: asyncio.AbstractEventLoop) -> None:
        if model.timer is not None:
            model.timer.cancel()
            model.timer = None
        if math.isinf(model.keep_alive):
            model.expires_at = None
            return
        model.expires_at = datetime.now(UTC) + timedelta(seconds=model.keep_alive)
        model.timer = loop.call_later(
            model.keep_alive, lambda: self._spawn(loop, self._expire(model))
        )

    async def _expire(self, model: LoadedModel) -> None:
        async with self._lock:
            if model.refs == 0 and self._loaded.get(model.name) is model:
                logger.info("unloading %s (keep_alive elapsed)", model.name)
                await self._unload(model, "expired")

    async def unload(self, name: str) -> bool:
        """Unload `name` once its requests finish (waiting without the lock); False if it was
        not loaded."""
        resolved = await asyncio.to_thread(self.registry.resolve, name)
        while True:
            async with self._lock:
                model = self._loaded.get(resolved.name)
                if model is None:
                    return False
                if model.refs == 0:
                    await self._unload(model, "requested")
                    return True
                seen = self._idle_seq
            await self._wait_change(seen)
            if self._closed:
                return True  # shutdown unloads it

    async def _unload(self, model: LoadedModel, reason: UnloadReason) -> None:
        if model.timer is not None:
            model.timer.cancel()
        self._loaded.pop(model.name, None)
        await asyncio.to_thread(model.engine.close)
        self._changed()
        if self._reporter is not None:
            self._reporter.model_unloaded(model.name, reason)

    async def close(self) -> None:
        """Unload everything (at shutdown); running requests fail with 'model unloaded', and
        loads or unloads waiting for a busy model give up."""
        self._closed = True
        await self._notify_idle()
        async with self._lock:
            for model in list(self._loaded.values()):
                await self._unload(model, "shutdown")
