"""Grammar sampling, lazy triggers and the embedding context on the real engine (no HTTP)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from server.engine.batch import BatchEngine
from server.engine.factory import start_engine
from server.engine.grammar import json_grammar, schema_grammar
from server.engine.loader import ModelFacts
from server.engine.options import LoadOptions
from server.engine.types import GenerationRequest, SamplingParams
from server.errors import ContextLengthExceeded, InvalidRequest

CHAT = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def engine(default_model_path: Path) -> Iterator[BatchEngine]:
    opts = LoadOptions.model_validate({"n_ctx": 512, "n_parallel": 4, "n_threads": 2})
    eng = start_engine(
        default_model_path,
        opts,
        ModelFacts(n_ctx_train=8192, n_layer=30),
        n_ctx_cap=8192,
        max_queue=8,
    )
    yield eng
    eng.close()


async def generate(
    eng: BatchEngine, text: str, sampling: SamplingParams, max_tokens: int
) -> tuple[str, str | None]:
    parts, finish = [], None
    async for event in eng.submit(
        GenerationRequest(eng.tokenize(CHAT.format(text)), sampling, max_tokens=max_tokens)
    ):
        parts.append(event.text)
        finish = event.finish_reason or finish
    return "".join(parts), finish


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_sampled_output_follows_the_grammar(engine: BatchEngine, seed: int) -> None:
    schema = {
        "type": "object",
        "properties": {
            "answer": {"type": "string", "enum": ["yes", "no"]},
            "n": {"type": "integer"},
        },
        "required": ["answer", "n"],
        "additionalProperties": False,
    }
    sampling = SamplingParams(temperature=1.0, seed=seed, grammar=schema_grammar(schema))
    text, finish = asyncio.run(generate(engine, "Is the sky blue?", sampling, 40))
    assert finish == "stop"
    value = json.loads(text)
    assert value["answer"] in ("yes", "no") and isinstance(value["n"], int)


def test_json_grammar_with_greedy_sampling(engine: BatchEngine) -> None:
    sampling = SamplingParams(temperature=0.0, grammar=json_grammar())
    text, finish = asyncio.run(generate(engine, "Give a JSON object with a name.", sampling, 80))
    assert finish == "stop" and isinstance(json.loads(text), dict)


def test_lazy_grammar_leaves_free_text_alone(engine: BatchEngine) -> None:
    free = SamplingParams(temperature=0.0)
    lazy = SamplingParams(
        temperature=0.0,
        grammar='root ::= "<never>" [0-9]',
        grammar_triggers=("(<never>)",),
    )
    question = "What is the capital of France?"
    assert asyncio.run(generate(engine, question, lazy, 24)) == asyncio.run(
        generate(engine, question, free, 24)
    )


async def submit(eng: BatchEngine, request: GenerationRequest) -> None:
    await eng.submit(request).aclose()


def test_ignore_eos_with_a_grammar_is_refused(engine: BatchEngine) -> None:
    request = GenerationRequest(
        engine.tokenize("hi"), SamplingParams(grammar=json_grammar()), max_tokens=4, ignore_eos=True
    )
    with pytest.raises(InvalidRequest) as info:
        asyncio.run(submit(engine, request))
    assert info.value.param == "ignore_eos"


def test_a_broken_grammar_is_a_400(engine: BatchEngine) -> None:
    request = GenerationRequest(
        engine.tokenize("hi"), SamplingParams(grammar="root ::= ("), max_tokens=4
    )
    with pytest.raises(InvalidRequest) as info:
        asyncio.run(submit(engine, request))
    assert info.value.param == "grammar"


def test_embeddings_are_pooled_normalised_and_batch_independent(engine: BatchEngine) -> None:
    texts = ["a red apple", "a green apple", "the stock market fell"]
    tokens = [engine.tokenize(t) for t in texts]
    together = np.array(asyncio.run(engine.embed(tokens)))
    assert together.shape == (3, engine.n_embd)
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    alone = np.array(asyncio.run(engine.embed(tokens[2:])))
    assert np.allclose(alone[0], together[2], atol=1e-4)
    raw = np.array(asyncio.run(engine.embed(tokens[:1], normalize=False)))
    assert np.allclose(raw[0] / np.linalg.norm(raw[0]), together[0], atol=1e-5)


def test_embedding_limits(engine: BatchEngine) -> None:
    too_long = list(range(100, 700))  # 600 ids > the 512-token slot
    with pytest.raises(ContextLengthExceeded):
        asyncio.run(engine.embed([too_long]))
    assert len(asyncio.run(engine.embed([too_long], truncate=True))[0]) == engine.n_embd
    with pytest.raises(InvalidRequest):
        asyncio.run(engine.embed([[]]))


def test_many_inputs_are_split_into_several_decodes(engine: BatchEngine) -> None:
    inputs = [engine.tokenize(f"sentence number {i} " * 10) for i in range(14)]  # > 512 tokens
    assert sum(map(len, inputs)) > 512
    vectors = asyncio.run(engine.embed(inputs))
    assert len(vectors) == 14
    again = asyncio.run(engine.embed(inputs[13:]))
    assert float(np.dot(vectors[13], again[0])) > 0.999  # batch shape moves only rounding


def test_default_model_has_no_fill_in_the_middle_tokens(engine: BatchEngine) -> None:
    assert engine.fim_tokens is None


def test_inputs_longer_than_a_ubatch_pool_over_every_token(engine: BatchEngine) -> None:
    """llama.cpp pools per ubatch; the embedder pools itself, so the ubatch size cannot matter."""
    from server.engine.embeddings import Embedder

    tokens = engine.tokenize("The quick brown fox jumps over the lazy dog. " * 30)[:300]
    model = engine._h.model

    def embed_with(n_ubatch: int) -> np.ndarray:  # type: ignore[type-arg]
        embedder = Embedder(model, n_ctx=512, n_ubatch=n_ubatch, n_threads=2, flash_attn="auto")
        try:
            return embedder.embed([tokens])[0]
        finally:
            embedder.close()

    small = asyncio.run(engine.call(lambda: embed_with(64)))
    whole = asyncio.run(engine.call(lambda: embed_with(512)))
    cosine = float(np.dot(small, whole) / (np.linalg.norm(small) * np.linalg.norm(whole)))
    assert cosine > 0.999
