"""A decode step that fails: only the request whose tokens caused it fails (real engine, real model).

The fault is real: the engine's test hook writes an id outside the vocabulary into the batch for
one request's tokens, and llama.cpp's own batch check makes llama_decode return -1 for every
batch that holds them. The engine must find that request and finish the other seven.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.engine.batch import BatchEngine
from server.engine.factory import start_batch_engine
from server.engine.loader import ModelFacts
from server.engine.options import LoadOptions
from server.engine.types import GenerationRequest, SamplingParams
from server.errors import EngineError

FACTS = ModelFacts(n_ctx_train=8192, n_layer=30)
CHAT = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
QUESTIONS = [
    f"Name a fruit that is {c}."
    for c in ("red", "yellow", "green", "orange", "purple", "blue", "brown", "pink")
]
MAX_TOKENS = 16
FAIL_AFTER = 5  # the bad request decodes its prompt and 4 tokens normally, then fails


class Poison:
    """Fails one request's decode steps from its FAIL_AFTER-th batch on."""

    def __init__(self) -> None:
        self.target: GenerationRequest | None = None
        self.seen = 0

    def __call__(self, req: GenerationRequest) -> bool:
        if req is not self.target:
            return False
        self.seen += 1
        return self.seen >= FAIL_AFTER


@pytest.fixture(scope="module")
def poisoned_engine(default_model_path: Path) -> Iterator[tuple[BatchEngine, Poison]]:
    poison = Poison()
    opts = LoadOptions.model_validate(
        {"n_ctx": 1024, "n_parallel": 8, "n_threads": 2, "n_batch": 256, "n_ubatch": 256}
    )
    eng = start_batch_engine(
        default_model_path, opts, FACTS, n_ctx_cap=8192, max_queue=64, fault=poison
    )
    yield eng, poison
    eng.close()


def make(eng: BatchEngine, text: str) -> GenerationRequest:
    return GenerationRequest(
        eng.tokenize(CHAT.format(text)),
        sampling=SamplingParams(temperature=0.0),
        max_tokens=MAX_TOKENS,
    )


async def answer(eng: BatchEngine, req: GenerationRequest) -> tuple[str, str | None, int]:
    parts: list[str] = []
    async for event in eng.submit(req):
        parts.append(event.text)
        if event.finish_reason is not None:
            assert event.usage is not None
            return "".join(parts), event.finish_reason, event.usage.completion_tokens
    raise AssertionError("the stream ended without a finish reason")


def test_one_failing_request_of_eight_leaves_the_others_their_answers(
    poisoned_engine: tuple[BatchEngine, Poison],
) -> None:
    eng, poison = poisoned_engine
    healthy = QUESTIONS[:3] + QUESTIONS[4:]

    async def alone() -> list[tuple[str, str | None, int]]:
        return await asyncio.gather(*(answer(eng, make(eng, q)) for q in healthy))

    expected = asyncio.run(alone())  # the seven without the bad one: their normal answers

    async def together() -> list[object]:
        reqs = [make(eng, q) for q in QUESTIONS]
        poison.target = reqs[3]
        return await asyncio.gather(*(answer(eng, r) for r in reqs), return_exceptions=True)

    results = asyncio.run(together())
    bad = results[3]
    assert isinstance(bad, EngineError), bad
    assert "llama_decode returned -1" in bad.message
    assert poison.seen >= FAIL_AFTER  # it really ran alongside the others before failing
    others = results[:3] + results[4:]
    assert others == expected
    assert all(reason in ("stop", "length") for _, reason, _ in expected)
    assert all(slot.state == "idle" for slot in eng.slots())


def test_the_engine_keeps_serving_after_an_isolated_failure(
    poisoned_engine: tuple[BatchEngine, Poison],
) -> None:
    eng, poison = poisoned_engine
    poison.target = None
    text, reason, n = asyncio.run(answer(eng, make(eng, "What is the capital of France?")))
    assert "Paris" in text and reason in ("stop", "length") and n >= 1
