"""Scheduling by memory with two real engines: the default model and a q8_0 copy of it.

The budget (setting `memory_budget`) is sized from the models' own plans: room for both, room
for one (the least recently used is unloaded), and a request that cannot fit even alone (refused
with the numbers, while the loaded model keeps answering).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from server.engine.quantize import LlamaQuantizer
from server.engine.types import GenerationRequest, SamplingParams
from server.errors import InsufficientMemory
from server.planning import PlanTarget
from server.registry import Registry
from server.scheduler import Lease, ModelManager
from server.settings import load_settings

DEFAULT = "smollm2:135m"
COPY = "smol-q8:135m"
LOAD = {"n_ctx": 1024, "n_parallel": 1, "n_threads": 2, "n_batch": 128, "n_ubatch": 128}


@pytest.fixture(scope="module")
def home(default_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("sched-home")
    registry = Registry(load_settings(home=home, ollama_models=""))
    registry.import_file(default_model_path, DEFAULT)
    registry.quantize(DEFAULT, "q8_0", LlamaQuantizer(2), as_name=COPY, allow_requantize=True)
    return home


def manager(home: Path, budget: int) -> ModelManager:
    settings = load_settings(home=home, ollama_models="", memory_budget=budget, load=LOAD)
    return ModelManager(settings, Registry(settings))


def alone(home: Path, name: str) -> int:
    """The plan total of `name` at the test's load options."""
    mm = manager(home, 1 << 40)
    resolved = mm.registry.resolve(name)
    target = PlanTarget(resolved.name, resolved.info, "store")
    return mm.budget.check_alone(target, mm.options_for(resolved, None)).total


async def ask(lease: Lease) -> str:
    engine = lease.model.engine
    prompt = engine.tokenize(
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    )
    request = GenerationRequest(prompt, sampling=SamplingParams(temperature=0.0), max_tokens=8)
    text = "".join([event.text async for event in engine.submit(request)])
    lease.release()
    return text


def test_both_fit_so_both_stay_loaded(home: Path) -> None:
    budget = alone(home, DEFAULT) + alone(home, COPY) + (16 << 20)

    async def main() -> None:
        mm = manager(home, budget)
        assert "Paris" in await ask(await mm.acquire(DEFAULT))
        assert "Paris" in await ask(await mm.acquire(COPY))
        loaded = {m.name: m for m in mm.loaded()}
        assert set(loaded) == {DEFAULT, COPY}
        used = sum(m.plan.total for m in loaded.values() if m.plan)
        assert used <= budget
        assert "Paris" in await ask(await mm.acquire(DEFAULT))  # still loaded, not reloaded
        await mm.close()

    asyncio.run(main())


def test_a_budget_for_one_evicts_the_least_recently_used(home: Path) -> None:
    budget = max(alone(home, DEFAULT), alone(home, COPY)) + (16 << 20)

    async def main() -> None:
        mm = manager(home, budget)
        first = await mm.acquire(DEFAULT)
        engine = first.model.engine
        assert "Paris" in await ask(first)
        assert "Paris" in await ask(await mm.acquire(COPY))
        assert [m.name for m in mm.loaded()] == [COPY]
        again = await mm.acquire(DEFAULT)  # loads anew, and unloads the copy in turn
        assert again.model.engine is not engine
        assert [m.name for m in mm.loaded()] == [DEFAULT]
        assert "Paris" in await ask(again)
        await mm.close()

    asyncio.run(main())


def test_what_cannot_fit_alone_is_refused_and_the_loaded_model_still_answers(home: Path) -> None:
    budget = alone(home, COPY) + (8 << 20)  # the copy fits at 1024 tokens, not at 8192

    async def main() -> None:
        mm = manager(home, budget)
        assert "Paris" in await ask(await mm.acquire(DEFAULT))
        with pytest.raises(InsufficientMemory) as caught:
            await mm.acquire(COPY, overrides={"n_ctx": 8192})
        message = caught.value.message
        assert f"{COPY} needs" in message and "available for models" in message
        assert "at most" in message
        assert [m.name for m in mm.loaded()] == [DEFAULT]
        assert "Paris" in await ask(await mm.acquire(DEFAULT))
        await mm.close()

    asyncio.run(main())
