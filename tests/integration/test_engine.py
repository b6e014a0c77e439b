"""The continuous-batching engine on the real default model (no HTTP)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.engine.batch import BatchEngine
from server.engine.factory import start_engine
from server.engine.loader import ModelFacts
from server.engine.options import LoadOptions
from server.engine.types import GenerationEvent, GenerationRequest, SamplingParams, Usage
from server.errors import ContextLengthExceeded, EngineError, InvalidLoadOptions, Overloaded

FACTS = ModelFacts(n_ctx_train=8192, n_layer=30)
CHAT = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"


def make_engine(path: Path, max_queue: int = 64, **options: object) -> BatchEngine:
    base = {"n_ctx": 1024, "n_parallel": 8, "n_threads": 2, "n_batch": 256, "n_ubatch": 256}
    opts = LoadOptions.model_validate({**base, **options})
    return start_engine(path, opts, FACTS, n_ctx_cap=8192, max_queue=max_queue)


@pytest.fixture(scope="module")
def engine(default_model_path: Path) -> Iterator[BatchEngine]:
    eng = make_engine(default_model_path)
    yield eng
    eng.close()


def request(eng: BatchEngine, text: str, **kw: object) -> GenerationRequest:
    sampling = kw.pop("sampling", SamplingParams(temperature=0.0))
    return GenerationRequest(eng.tokenize(CHAT.format(text)), sampling=sampling, **kw)  # type: ignore[arg-type]


async def run(eng: BatchEngine, req: GenerationRequest) -> tuple[str, GenerationEvent]:
    parts: list[str] = []
    last: GenerationEvent | None = None
    async for event in eng.submit(req):
        parts.append(event.text)
        last = event
    assert last is not None and last.finish_reason is not None
    return "".join(parts), last


def usage(event: GenerationEvent) -> Usage:
    assert event.usage is not None
    return event.usage


def test_greedy_generation_is_sensible_and_reports_usage(engine: BatchEngine) -> None:
    req = request(engine, "What is the capital of France?", max_tokens=40)
    text, last = asyncio.run(run(engine, req))
    assert "Paris" in text
    u = usage(last)
    assert u.prompt_tokens == len(req.prompt_tokens)
    assert 1 <= u.completion_tokens <= 40
    assert last.finish_reason in ("stop", "length")


def test_eight_concurrent_requests_all_complete(engine: BatchEngine) -> None:
    questions = [
        f"Name a fruit that is {c}."
        for c in ("red", "yellow", "green", "orange", "purple", "blue", "brown", "pink")
    ]

    async def main() -> list[tuple[str, GenerationEvent]]:
        return await asyncio.gather(
            *(run(engine, request(engine, q, max_tokens=32)) for q in questions)
        )

    results = asyncio.run(main())
    for text, last in results:
        assert len(text.split()) >= 2
        assert usage(last).completion_tokens >= 2
    assert all(s.state == "idle" for s in engine.slots())


def test_seeded_sampling_is_identical_alone_and_among_seven_others(engine: BatchEngine) -> None:
    seeded = SamplingParams(temperature=0.9, seed=1234)

    def req(text: str, sampling: SamplingParams) -> GenerationRequest:
        return request(engine, text, sampling=sampling, max_tokens=48)

    alone, _ = asyncio.run(run(engine, req("Tell me a story about a cat.", seeded)))

    async def crowded() -> str:
        others = [
            run(
                engine,
                req(f"Tell me about the number {i}.", SamplingParams(temperature=0.9, seed=i)),
            )
            for i in range(7)
        ]
        results = await asyncio.gather(
            run(engine, req("Tell me a story about a cat.", seeded)), *others
        )
        return results[0][0]

    assert asyncio.run(crowded()) == alone
    different, _ = asyncio.run(
        run(engine, req("Tell me a story about a cat.", SamplingParams(temperature=0.9, seed=99)))
    )
    assert different != alone  # the seed matters, so the equality above is not an accident


def test_stop_string_is_not_returned(engine: BatchEngine) -> None:
    full, _ = asyncio.run(
        run(engine, request(engine, "Count from 1 to 10 with commas.", max_tokens=40))
    )
    assert "5" in full
    cut, last = asyncio.run(
        run(engine, request(engine, "Count from 1 to 10 with commas.", max_tokens=40, stop=("5",)))
    )
    assert last.finish_reason == "stop"
    assert "5" not in cut
    assert full.startswith(cut)


def test_max_tokens_and_slot_context_end_give_length(default_model_path: Path) -> None:
    eng = make_engine(default_model_path, n_ctx=64, n_parallel=1)
    try:
        req = request(eng, "Write a very long essay about the sea.")
        _, last = asyncio.run(run(eng, req))  # no max_tokens: runs to the slot's end
        assert last.finish_reason == "length"
        n_ctx = eng.n_ctx_slot  # llama.cpp rounds the context up to a multiple of 256
        assert n_ctx >= 64
        assert usage(last).prompt_tokens + usage(last).completion_tokens == n_ctx
        with pytest.raises(ContextLengthExceeded):
            eng.submit(request(eng, "Hi", max_tokens=n_ctx))
        with pytest.raises(ContextLengthExceeded):
            eng.submit(GenerationRequest(list(range(100, 100 + n_ctx))))
    finally:
        eng.close()


def test_prefix_reuse_reports_cached_tokens_for_the_next_turn(engine: BatchEngine) -> None:
    first = request(engine, "My name is Ada and I like tea. Remember that.", max_tokens=24)
    reply, _ = asyncio.run(run(engine, first))
    history = (
        CHAT.format("My name is Ada and I like tea. Remember that.")
        + reply
        + "<|im_end|>\n<|im_start|>user\nWhat is my name?<|im_end|>\n<|im_start|>assistant\n"
    )
    second = GenerationRequest(
        engine.tokenize(history), sampling=SamplingParams(temperature=0.0), max_tokens=16
    )
    _, last2 = asyncio.run(run(engine, second))
    assert usage(last2).cached_tokens >= len(first.prompt_tokens)
    assert usage(last2).cached_tokens < len(second.prompt_tokens)


def test_cancel_mid_stream_frees_the_slot_and_keeps_what_it_evaluated(
    engine: BatchEngine,
) -> None:
    async def main() -> None:
        story = request(engine, "Write a long story about dragons.", max_tokens=500)
        stream = engine.submit(story)
        got = 0
        async for _event in stream:
            got += 1
            if got == 3:
                break
        await stream.aclose()
        deadline = time.monotonic() + 30  # freed at the next step; loose for a loaded machine
        # polling the operator view (slot state) is exactly what this test checks
        while any(s.state != "idle" for s in engine.slots()) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        assert all(s.state == "idle" for s in engine.slots())
        kept = max(s.kv_tokens for s in engine.slots())
        assert kept >= len(story.prompt_tokens) + 2  # the prompt and the tokens it generated
        text, _ = await run(engine, request(engine, "Say yes.", max_tokens=4))
        assert text
        # the stopped conversation's next turn starts from its cache, as after a finished one
        _, last = await run(
            engine, request(engine, "Write a long story about dragons.", max_tokens=2)
        )
        assert usage(last).cached_tokens == len(story.prompt_tokens) - 1

    asyncio.run(main())


def test_cancel_during_prompt_evaluation(default_model_path: Path) -> None:
    eng = make_engine(default_model_path, n_ctx=2048, n_parallel=1, n_batch=32, n_ubatch=32)
    try:

        async def main() -> None:
            long_prompt = CHAT.format(" ".join(f"word{i}" for i in range(400)))
            tokens = eng.tokenize(long_prompt)
            stream = eng.submit(GenerationRequest(tokens, max_tokens=8))
            await asyncio.sleep(0.05)  # inside the chunked prefill (32 tokens a step)
            assert eng.slots()[0].state == "prompt"
            await stream.aclose()
            deadline = time.monotonic() + 30  # freed at the next step; loose for a loaded machine
            # polling the operator view (slot state) is exactly what this test checks
            while eng.slots()[0].state != "idle" and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
            assert eng.slots()[0].state == "idle"
            kept = eng.slots()[0].kv_tokens
            assert 0 < kept < len(tokens)  # the chunks evaluated before the stop stay cached
            _, last = await run(eng, GenerationRequest(tokens, max_tokens=1))
            assert usage(last).cached_tokens == kept

        asyncio.run(main())
    finally:
        eng.close()


def test_queue_overflow_is_refused(default_model_path: Path) -> None:
    eng = make_engine(default_model_path, max_queue=1, n_parallel=1)
    try:

        async def main() -> None:
            a = eng.submit(request(eng, "Write a long story.", max_tokens=200))
            b = eng.submit(
                request(eng, "Write a long story.", max_tokens=200)
            )  # waits in the queue
            with pytest.raises(Overloaded) as info:
                eng.submit(request(eng, "One more.", max_tokens=5))
            assert info.value.retry_after >= 1
            await a.aclose()
            await b.aclose()

        asyncio.run(main())
    finally:
        eng.close()


def test_an_error_in_one_request_fails_only_that_request(
    engine: BatchEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = request(engine, "Say hello.", max_tokens=12)
    bad = request(engine, "Say goodbye.", max_tokens=12)
    original = engine._after_sample

    def flaky(slot: object, job: object, idx: int, now: float) -> GenerationEvent | None:
        if getattr(job, "req", None) is bad:
            raise RuntimeError("injected failure")
        return original(slot, job, idx, now)  # type: ignore[arg-type]

    monkeypatch.setattr(engine, "_after_sample", flaky)

    async def main() -> None:
        ok, failed = await asyncio.gather(
            run(engine, good), run(engine, bad), return_exceptions=True
        )
        assert isinstance(failed, EngineError)
        assert isinstance(ok, tuple) and ok[0]

    asyncio.run(main())
    monkeypatch.undo()
    text, _ = asyncio.run(run(engine, request(engine, "Say hello.", max_tokens=4)))
    assert text  # and the engine keeps serving


@pytest.mark.parametrize("flash_attn", ["on", "off"])
def test_generation_with_flash_attention_on_and_off(
    default_model_path: Path, flash_attn: str
) -> None:
    eng = make_engine(default_model_path, n_parallel=1, flash_attn=flash_attn)
    try:
        text, _ = asyncio.run(
            run(eng, request(eng, "What is the capital of France?", max_tokens=24))
        )
        assert "Paris" in text
    finally:
        eng.close()


def test_q8_0_kv_cache_is_about_half_the_bytes_of_f16(default_model_path: Path) -> None:
    prompt = CHAT.format(" ".join(["The quick brown fox jumps over the lazy dog."] * 40))

    def kv_bytes(cache_type: str) -> int:
        eng = make_engine(
            default_model_path, n_parallel=1, type_k=cache_type, type_v=cache_type, flash_attn="on"
        )
        try:
            req = GenerationRequest(
                eng.tokenize(prompt), sampling=SamplingParams(temperature=0.0), max_tokens=1
            )
            asyncio.run(run(eng, req))
            return asyncio.run(eng.kv_state_bytes())
        finally:
            eng.close()

    f16, q8 = kv_bytes("f16"), kv_bytes("q8_0")
    assert f16 > 5_000_000  # ~400 tokens x 30 layers x 2 x 192 x 2 bytes
    assert 0.45 < q8 / f16 < 0.6  # q8_0 stores 34 bytes per 32 values: 0.53 of f16


def test_quantized_v_cache_without_flash_attention_is_refused(default_model_path: Path) -> None:
    with pytest.raises(InvalidLoadOptions, match="flash"):
        make_engine(default_model_path, type_v="q8_0", flash_attn="off")


def test_n_ctx_above_trained_length_is_refused(default_model_path: Path) -> None:
    with pytest.raises(InvalidLoadOptions, match="8192"):
        make_engine(default_model_path, n_ctx=16384)


def greedy_text(
    eng: BatchEngine, sampling: SamplingParams, prompt: str = "Tell me about the sea."
) -> str:
    text, _ = asyncio.run(run(eng, request(eng, prompt, sampling=sampling, max_tokens=24)))
    return text


def test_top_k_1_and_min_p_1_are_greedy_whatever_the_seed(engine: BatchEngine) -> None:
    greedy = greedy_text(engine, SamplingParams(temperature=0.0))
    for seed in (1, 2, 3):
        assert greedy_text(engine, SamplingParams(temperature=1.5, top_k=1, seed=seed)) == greedy
        assert (
            greedy_text(engine, SamplingParams(temperature=1.5, top_k=0, min_p=1.0, seed=seed))
            == greedy
        )
    # and without those limits the same high temperature does wander off
    wild = {
        greedy_text(engine, SamplingParams(temperature=1.5, top_k=0, min_p=0.0, top_p=1.0, seed=s))
        for s in (1, 2, 3)
    }
    assert wild - {greedy}


def test_logit_bias_forces_and_bans_tokens(engine: BatchEngine) -> None:
    forced = engine.tokenize(" banana", add_special=False)[0]
    text = greedy_text(engine, SamplingParams(temperature=0.0, logit_bias=((forced, 100.0),)))
    assert text.count("banana") >= 10
    greedy_req = request(engine, "Tell me about the sea.", max_tokens=24)
    first = asyncio.run(run(engine, greedy_req))[0]
    first_token = engine.tokenize(first, add_special=False)[0]
    banned = greedy_text(
        engine, SamplingParams(temperature=0.0, logit_bias=((first_token, float("-inf")),))
    )
    assert engine.tokenize(banned, add_special=False)[0] != first_token


def test_repeat_penalty_changes_greedy_output(engine: BatchEngine) -> None:
    prompt = "Repeat the word 'apple' many times."
    plain = greedy_text(engine, SamplingParams(temperature=0.0), prompt)
    assert greedy_text(engine, SamplingParams(temperature=0.0, repeat_penalty=1.8), prompt) != plain


def test_ignore_eos_generates_exactly_max_tokens(engine: BatchEngine) -> None:
    req = request(engine, "Say yes.", max_tokens=40)
    req.ignore_eos = True
    _, last = asyncio.run(run(engine, req))
    assert last.finish_reason == "length" and usage(last).completion_tokens == 40
