"""The scheduler never waits for a busy model while holding its lock: a reload or unload that
waits for idle leaves other loads, keep_alive expiry, unloads and shutdown free to go on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from server.errors import EngineError
from server.registry import Registry
from server.scheduler import ModelManager
from server.settings import load_settings
from tests.conftest import MakeGGUF
from tests.unit.test_scheduler import CountingFactory

SOON = 2.0  # seconds: anything that is not blocked happens well within this


@pytest.fixture
def registry(tmp_home: Path, make_gguf: MakeGGUF) -> Registry:
    reg = Registry(load_settings(home=tmp_home))
    for i, name in enumerate(("alpha:1b", "beta:1b", "gamma:1b")):
        reg.import_file(make_gguf(f"{i}.gguf", seed=i + 1, context_length=32768), name)
    return reg


def manager(registry: Registry, **settings: object) -> tuple[ModelManager, CountingFactory]:
    factory = CountingFactory(delay=0)
    s = load_settings(home=registry.settings.home, **settings)
    return ModelManager(s, registry, factory), factory  # type: ignore[arg-type]


async def until(predicate: Callable[[], bool]) -> None:
    for _ in range(int(SOON / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("did not happen in time")


def test_a_reload_waiting_for_idle_blocks_no_other_work(registry: Registry) -> None:
    async def main() -> None:
        mm, factory = manager(registry, max_loaded_models=3)
        busy = await mm.acquire("alpha:1b")
        reload = asyncio.create_task(mm.acquire("alpha:1b", overrides={"n_ctx": 1024}))
        await asyncio.sleep(0.1)
        assert not reload.done()  # it waits for `busy`...

        beta = await asyncio.wait_for(mm.acquire("beta:1b"), SOON)  # ...another model loads,
        beta.release()
        gamma = await asyncio.wait_for(mm.acquire("gamma:1b", keep_alive=0.05), SOON)
        gamma.release()  # ...keep_alive expires,
        await until(lambda: "gamma:1b" not in {m.name for m in mm.loaded()})
        assert await asyncio.wait_for(mm.unload("beta:1b"), SOON)  # ...and an unload runs.
        assert {m.name for m in mm.loaded()} == {"alpha:1b"}
        assert not reload.done()

        busy.release()
        lease = await asyncio.wait_for(reload, SOON)
        assert lease.model.options.n_ctx == 1024
        assert factory.engines[0].closed  # the old copy went once idle
        lease.release()
        await mm.close()

    asyncio.run(main())


def test_shutdown_is_not_blocked_by_a_waiting_reload_or_unload(registry: Registry) -> None:
    async def main() -> None:
        mm, factory = manager(registry)
        busy = await mm.acquire("alpha:1b")
        reload = asyncio.create_task(mm.acquire("alpha:1b", overrides={"n_ctx": 1024}))
        unload = asyncio.create_task(mm.unload("alpha:1b"))
        await asyncio.sleep(0.1)
        assert not reload.done() and not unload.done()
        await asyncio.wait_for(mm.close(), SOON)
        with pytest.raises(EngineError, match="shutting down"):
            await asyncio.wait_for(reload, SOON)
        assert await asyncio.wait_for(unload, SOON)
        assert all(engine.closed for engine in factory.engines)
        busy.release()

    asyncio.run(main())


def test_a_load_waiting_for_room_takes_the_place_of_the_first_model_to_go_idle(
    registry: Registry,
) -> None:
    async def main() -> None:
        mm, _ = manager(registry, max_loaded_models=2)
        alpha = await mm.acquire("alpha:1b")
        beta = await mm.acquire("beta:1b")
        waiting = asyncio.create_task(mm.acquire("gamma:1b"))  # needs one of them to go
        await asyncio.sleep(0.1)
        assert not waiting.done()
        beta.release()
        gamma = await asyncio.wait_for(waiting, SOON)
        assert {m.name for m in mm.loaded()} == {"alpha:1b", "gamma:1b"}
        gamma.release()
        alpha.release()
        await mm.close()

    asyncio.run(main())
