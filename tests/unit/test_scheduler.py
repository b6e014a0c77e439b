"""ModelManager: one load per model, keep_alive, eviction under max_loaded_models and memory.

A fake engine stands in for llama.cpp here; tests/integration/test_scheduling_memory.py runs
the same rules with two real engines.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from server.chat.template import ChatTemplate
from server.engine.options import LoadOptions
from server.errors import ModelLoadError
from server.registry import Registry, ResolvedModel
from server.scheduler import ModelManager
from server.settings import load_settings
from tests.conftest import MakeGGUF
from tests.fakes import FakeEngine


class CountingFactory:
    def __init__(self, delay: float = 0.1) -> None:
        self.delay = delay
        self.loads: list[tuple[str, LoadOptions]] = []
        self.engines: list[FakeEngine] = []
        self._lock = threading.Lock()

    def __call__(
        self, resolved: ResolvedModel, options: LoadOptions
    ) -> tuple[FakeEngine, ChatTemplate]:
        time.sleep(self.delay)
        engine = FakeEngine()
        with self._lock:
            self.loads.append((resolved.name, options))
            self.engines.append(engine)
        return engine, ChatTemplate(None)


@pytest.fixture
def registry(tmp_home: Path, make_gguf: MakeGGUF) -> Registry:
    reg = Registry(load_settings(home=tmp_home))
    reg.import_file(make_gguf("a.gguf", seed=1, context_length=32768), "alpha:1b")
    reg.import_file(make_gguf("b.gguf", seed=2, context_length=32768), "beta:1b")
    return reg


def manager(registry: Registry, factory: CountingFactory, **settings: object) -> ModelManager:
    s = load_settings(home=registry.settings.home, **settings)
    return ModelManager(s, registry, factory)  # type: ignore[arg-type]


def test_concurrent_requests_share_one_load(registry: Registry) -> None:
    factory = CountingFactory()

    async def main() -> None:
        mm = manager(registry, factory)
        leases = await asyncio.gather(*(mm.acquire("alpha:1b") for _ in range(5)))
        assert len(factory.loads) == 1
        assert len({id(lease.model) for lease in leases}) == 1
        assert leases[0].model.refs == 5
        for lease in leases:
            lease.release()
        await mm.close()

    asyncio.run(main())


def test_keep_alive_zero_unloads_after_the_request(registry: Registry) -> None:
    factory = CountingFactory(delay=0)

    async def main() -> None:
        mm = manager(registry, factory)
        lease = await mm.acquire("alpha:1b", keep_alive=0)
        lease.release()
        for _ in range(100):
            if not mm.loaded():
                break
            await asyncio.sleep(0.01)
        assert mm.loaded() == []
        assert factory.engines[0].closed

    asyncio.run(main())


def test_keep_alive_timer_unloads_idle_model(registry: Registry) -> None:
    factory = CountingFactory(delay=0)

    async def main() -> None:
        mm = manager(registry, factory, keep_alive="200ms")
        (await mm.acquire("alpha:1b")).release()
        assert mm.loaded()[0].expires_at is not None
        await asyncio.sleep(0.1)
        assert len(mm.loaded()) == 1
        await asyncio.sleep(0.3)
        assert mm.loaded() == []

    asyncio.run(main())


def test_loading_another_model_evicts_the_idle_one(registry: Registry) -> None:
    factory = CountingFactory(delay=0)

    async def main() -> None:
        mm = manager(registry, factory, max_loaded_models=1)
        (await mm.acquire("alpha:1b")).release()
        lease = await mm.acquire("beta:1b")
        assert [m.name for m in mm.loaded()] == ["beta:1b"]
        assert factory.engines[0].closed
        lease.release()
        await mm.close()

    asyncio.run(main())


def test_a_busy_model_is_not_evicted_until_its_requests_finish(registry: Registry) -> None:
    factory = CountingFactory(delay=0)

    async def main() -> None:
        mm = manager(registry, factory, max_loaded_models=1)
        busy = await mm.acquire("alpha:1b")
        waiter = asyncio.create_task(mm.acquire("beta:1b"))
        await asyncio.sleep(0.1)
        assert not waiter.done()
        assert not factory.engines[0].closed
        busy.release()
        lease = await asyncio.wait_for(waiter, 2)
        assert lease.model.name == "beta:1b"
        lease.release()
        await mm.close()

    asyncio.run(main())


def test_different_load_options_reload(registry: Registry) -> None:
    factory = CountingFactory(delay=0)

    async def main() -> None:
        mm = manager(registry, factory)
        (await mm.acquire("alpha:1b")).release()
        (await mm.acquire("alpha:1b", overrides={"n_ctx": 1024})).release()
        assert len(factory.loads) == 2
        assert factory.loads[1][1].n_ctx == 1024
        assert factory.engines[0].closed
        (await mm.acquire("alpha:1b", overrides={"n_ctx": 1024})).release()
        assert len(factory.loads) == 2  # same options: reused
        await mm.close()

    asyncio.run(main())


def test_unknown_model_and_bad_overrides(registry: Registry) -> None:
    from server.errors import InvalidRequest, ModelNotFound

    async def main() -> None:
        mm = manager(registry, CountingFactory(delay=0))
        with pytest.raises(ModelNotFound):
            await mm.acquire("gamma:1b")
        with pytest.raises(InvalidRequest):
            await mm.acquire("alpha:1b", overrides={"n_parallel": 0})

    asyncio.run(main())


class FailingFactory(CountingFactory):
    """Loads fail for the names in `broken`, as llama.cpp refusing a model would."""

    def __init__(self, broken: set[str]) -> None:
        super().__init__(delay=0)
        self.broken = broken

    def __call__(
        self, resolved: ResolvedModel, options: LoadOptions
    ) -> tuple[FakeEngine, ChatTemplate]:
        if resolved.name in self.broken:
            raise ModelLoadError("llama.cpp could not load it: missing tensor 'x'")
        return super().__call__(resolved, options)


def test_a_model_its_check_refuses_unloads_nothing(registry: Registry) -> None:
    factory = CountingFactory(delay=0)
    checked: list[str] = []

    def check(resolved: ResolvedModel) -> None:
        checked.append(resolved.name)
        if resolved.name == "beta:1b":
            raise ModelLoadError("llama.cpp refuses it: key not found in model: x")

    async def main() -> None:
        s = load_settings(home=registry.settings.home, max_loaded_models=1)
        mm = ModelManager(s, registry, factory, check=check)  # type: ignore[arg-type]
        (await mm.acquire("alpha:1b")).release()
        alpha = mm.loaded()[0]
        with pytest.raises(ModelLoadError) as caught:
            await mm.acquire("beta:1b")
        assert caught.value.message == (
            "cannot load 'beta:1b': llama.cpp refuses it: key not found in model: x"
        )
        assert mm.loaded() == [alpha] and not factory.engines[0].closed
        assert checked == ["alpha:1b", "beta:1b"] and len(factory.loads) == 1
        await mm.close()

    asyncio.run(main())


def plan_total(registry: Registry, name: str, **settings: object) -> int:
    mm = manager(registry, CountingFactory(delay=0), **settings)
    from server.planning import PlanTarget

    resolved = registry.resolve(name)
    target = PlanTarget(resolved.name, resolved.info, "store")
    return mm.budget.check_alone(target, mm.options_for(resolved, None)).total


def test_models_that_fit_together_stay_loaded_together(registry: Registry) -> None:
    factory = CountingFactory(delay=0)
    budget = 3 * plan_total(registry, "alpha:1b")

    async def main() -> None:
        mm = manager(registry, factory, memory_budget=budget)
        (await mm.acquire("alpha:1b")).release()
        (await mm.acquire("beta:1b")).release()
        assert sorted(m.name for m in mm.loaded()) == ["alpha:1b", "beta:1b"]
        assert all(m.plan is not None and m.plan.fits for m in mm.loaded())
        await mm.close()

    asyncio.run(main())


def test_a_failed_load_brings_back_the_model_it_unloaded(registry: Registry) -> None:
    factory = FailingFactory(broken={"beta:1b"})

    async def main() -> None:
        mm = manager(registry, factory, max_loaded_models=1, keep_alive="1h")
        (await mm.acquire("alpha:1b", keep_alive=600)).release()
        with pytest.raises(ModelLoadError, match=r"^cannot load 'beta:1b': llama\.cpp could not"):
            await mm.acquire("beta:1b")
        [alpha] = mm.loaded()
        assert alpha.name == "alpha:1b" and alpha.keep_alive == 600
        assert factory.engines[0].closed and not factory.engines[1].closed  # loaded again
        assert alpha.expires_at is not None
        lease = await mm.acquire("alpha:1b")  # serving: no further load
        assert lease.model is alpha and len(factory.loads) == 2
        lease.release()
        await mm.close()

    asyncio.run(main())


def test_a_failed_reload_with_new_options_brings_back_the_old_ones(registry: Registry) -> None:
    class Picky(CountingFactory):
        def __call__(
            self, resolved: ResolvedModel, options: LoadOptions
        ) -> tuple[FakeEngine, ChatTemplate]:
            if options.n_ctx == 1024:
                raise ModelLoadError("llama.cpp could not create its context")
            return super().__call__(resolved, options)

    factory = Picky(delay=0)

    async def main() -> None:
        mm = manager(registry, factory)
        (await mm.acquire("alpha:1b")).release()
        with pytest.raises(ModelLoadError):
            await mm.acquire("alpha:1b", overrides={"n_ctx": 1024})
        [alpha] = mm.loaded()
        assert alpha.options.n_ctx == load_settings().load.n_ctx
        await mm.close()

    asyncio.run(main())


def test_a_budget_for_one_model_evicts_the_least_recently_used(registry: Registry) -> None:
    factory = CountingFactory(delay=0)
    budget = plan_total(registry, "alpha:1b") * 3 // 2

    async def main() -> None:
        mm = manager(registry, factory, memory_budget=budget)
        (await mm.acquire("alpha:1b")).release()
        (await mm.acquire("beta:1b")).release()
        assert [m.name for m in mm.loaded()] == ["beta:1b"]
        assert factory.engines[0].closed and not factory.engines[1].closed
        await mm.close()

    asyncio.run(main())


def test_what_cannot_fit_alone_is_refused_and_nothing_is_unloaded(registry: Registry) -> None:
    from server.errors import InsufficientMemory

    factory = CountingFactory(delay=0)
    budget = plan_total(registry, "alpha:1b") * 3 // 2

    async def main() -> None:
        mm = manager(registry, factory, memory_budget=budget)
        (await mm.acquire("alpha:1b")).release()
        with pytest.raises(InsufficientMemory) as caught:
            await mm.acquire("beta:1b", overrides={"n_ctx": 32768})
        message = caught.value.message
        assert "beta:1b needs" in message and "available for models" in message
        assert "at most" in message  # the context that would fit
        assert [m.name for m in mm.loaded()] == ["alpha:1b"]
        assert not factory.engines[0].closed and len(factory.loads) == 1
        await mm.close()

    asyncio.run(main())
