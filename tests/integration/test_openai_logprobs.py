"""logprobs / top_logprobs, logit_bias and n on the real default model, through the SDK."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import OpenAI

from tests.integration.conftest import DEFAULT_MODEL

ASK = [{"role": "user", "content": "Write a sentence about the sea."}]


@pytest.fixture(scope="module")
def client(base_url: str) -> OpenAI:
    return OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)


def chat_logprobs(client: OpenAI, stream: bool, **kw: Any) -> tuple[str, list[Any], Any]:
    """(content, logprob entries, usage) of a greedy 12-token answer."""
    kw = {"model": DEFAULT_MODEL, "messages": ASK, "temperature": 0, "max_tokens": 12, **kw}
    if not stream:
        r = client.chat.completions.create(**kw)
        lp = r.choices[0].logprobs
        return r.choices[0].message.content or "", list(lp.content or []) if lp else [], r.usage
    text, entries, usage = "", [], None
    for chunk in client.chat.completions.create(
        stream=True, stream_options={"include_usage": True}, **kw
    ):
        usage = chunk.usage or usage
        for c in chunk.choices:
            text += c.delta.content or ""
            if c.logprobs and c.logprobs.content:
                entries += c.logprobs.content
    return text, entries, usage


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_logprobs_and_top_logprobs_in_openai_shape(client: OpenAI, stream: bool) -> None:
    text, entries, usage = chat_logprobs(client, stream, logprobs=True, top_logprobs=5)
    assert len(entries) == usage.completion_tokens == 12  # max_tokens reached: no end token
    assert "".join(e.token for e in entries) == text
    for e in entries:
        assert e.logprob <= 0.0 and e.bytes == list(e.token.encode())
        tops = e.top_logprobs
        assert len(tops) == 5
        assert [t.logprob for t in tops] == sorted((t.logprob for t in tops), reverse=True)
        assert tops[0].token == e.token  # greedy: the sampled token is the most likely one
        assert math.isclose(tops[0].logprob, e.logprob, abs_tol=1e-6)
        assert sum(math.exp(t.logprob) for t in tops) <= 1.0 + 1e-6


def test_stream_and_non_stream_logprobs_agree(client: OpenAI) -> None:
    a = chat_logprobs(client, False, logprobs=True, top_logprobs=2)[1]
    b = chat_logprobs(client, True, logprobs=True, top_logprobs=2)[1]
    assert [(e.token, round(e.logprob, 4)) for e in a] == [
        (e.token, round(e.logprob, 4)) for e in b
    ]


def test_logprobs_without_alternatives_and_off(client: OpenAI) -> None:
    _, entries, _ = chat_logprobs(client, False, logprobs=True)
    assert entries and all(e.top_logprobs == [] for e in entries)
    r = client.chat.completions.create(model=DEFAULT_MODEL, messages=ASK, max_tokens=3)  # type: ignore[arg-type]
    assert r.choices[0].logprobs is None
    _, entries, _ = chat_logprobs(client, False, logprobs=True, top_logprobs=20)
    assert all(len(e.top_logprobs) == 20 for e in entries)


@pytest.mark.parametrize("kw", [{"logprobs": True, "top_logprobs": 21}, {"top_logprobs": 3}])
def test_bad_top_logprobs_are_400(client: OpenAI, kw: dict[str, Any]) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=DEFAULT_MODEL, messages=ASK, **kw)  # type: ignore[arg-type, call-overload]
    assert info.value.param == "top_logprobs"  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def vocab(default_model_path: Path) -> Any:
    """The default model's tokenizer (vocabulary only), to name tokens by id."""
    import llama_cpp

    return llama_cpp.Llama(str(default_model_path), vocab_only=True, verbose=False)


def token_id(vocab: Any, piece: str) -> int:
    ids = vocab.tokenize(piece.encode(), add_bos=False, special=False)
    assert len(ids) == 1, (piece, ids)
    return int(ids[0])


def test_logit_bias_bans_and_forces_tokens(client: OpenAI, vocab: Any) -> None:
    _, entries, _ = chat_logprobs(client, False, logprobs=True)
    first = entries[0].token
    _, banned, _ = chat_logprobs(
        client, False, logprobs=True, logit_bias={str(token_id(vocab, first)): -100}
    )
    assert banned[0].token != first
    forced, _, _ = chat_logprobs(
        client, False, logit_bias={str(token_id(vocab, " banana")): 100}, max_tokens=4
    )
    assert forced == " banana" * 4


@pytest.mark.parametrize("bias", [101, -101])
def test_logit_bias_out_of_range_is_400(client: OpenAI, bias: int) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=DEFAULT_MODEL, messages=ASK, logit_bias={"5": bias})  # type: ignore[arg-type]
    assert info.value.param == "logit_bias"  # type: ignore[attr-defined]


def test_logit_bias_token_outside_the_vocabulary_is_400(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=DEFAULT_MODEL,
            messages=ASK,  # type: ignore[arg-type]
            logit_bias={"999999": 1},
        )
    assert info.value.param == "logit_bias"  # type: ignore[attr-defined]


def test_n_choices_stream_interleaved_each_with_its_finish_and_usage(client: OpenAI) -> None:
    n = 3
    text = [""] * n
    finishes: dict[int, list[str]] = {i: [] for i in range(n)}
    order: list[int] = []
    usage = None
    for chunk in client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=ASK,  # type: ignore[arg-type]
        n=n,
        seed=11,
        temperature=1.0,
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
    ):
        usage = chunk.usage or usage
        for c in chunk.choices:
            text[c.index] += c.delta.content or ""
            if c.delta.content:
                order.append(c.index)
            if c.finish_reason:
                finishes[c.index].append(c.finish_reason)
    assert all(len(f) == 1 for f in finishes.values())  # one finish per choice
    assert all(text)
    assert len(set(order[: 3 * n])) > 1  # choices interleave rather than run one by one
    assert usage is not None and 3 <= usage.completion_tokens <= 16 * n
    r = client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=ASK,  # type: ignore[arg-type]
        n=n,
        seed=11,
        temperature=1.0,
        max_tokens=16,
    )
    assert [c.index for c in r.choices] == list(range(n))
    assert all(c.message.content and c.finish_reason for c in r.choices)
    assert r.usage is not None and n <= r.usage.completion_tokens <= 16 * n
