"""The OpenAI API of a real server on the real default model, driven by the official SDK."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from openai import OpenAI

from tests.integration.conftest import DEFAULT_MODEL, RunningServer

QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


@pytest.fixture(scope="module")
def client(base_url: str) -> OpenAI:
    return OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=60)


def ask(client: OpenAI, stream: bool, **kw: object) -> tuple[str, str | None, object]:
    """(text, finish_reason, usage) for one choice, streamed or not."""
    if not stream:
        r = client.chat.completions.create(model=DEFAULT_MODEL, stream=False, **kw)  # type: ignore[call-overload]
        return r.choices[0].message.content or "", r.choices[0].finish_reason, r.usage
    text, finish, usage = "", None, None
    for chunk in client.chat.completions.create(
        model=DEFAULT_MODEL,
        stream=True,
        stream_options={"include_usage": True},
        **kw,  # type: ignore[call-overload]
    ):
        if chunk.usage is not None:
            assert chunk.choices == []  # the usage chunk comes alone
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    return text, finish, usage


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_chat_answers_sensibly(client: OpenAI, stream: bool) -> None:
    text, finish, usage = ask(client, stream, messages=QUESTION, temperature=0, max_tokens=40)
    assert "Paris" in text
    assert finish in ("stop", "length")
    assert usage is not None and usage.completion_tokens > 0  # type: ignore[attr-defined]
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens  # type: ignore[attr-defined]


def test_stream_and_non_stream_give_the_same_greedy_text(client: OpenAI) -> None:
    kw = {
        "messages": [{"role": "user", "content": "List three colours."}],
        "temperature": 0,
        "max_tokens": 48,
    }
    assert ask(client, False, **kw)[0] == ask(client, True, **kw)[0]


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_token_limit_gives_length(client: OpenAI, stream: bool, field: str) -> None:
    text, finish, usage = ask(
        client,
        stream,
        messages=[{"role": "user", "content": "Write a long story about a ship."}],
        temperature=0,
        **{field: 7},
    )
    assert finish == "length"
    assert usage.completion_tokens == 7  # type: ignore[attr-defined]
    assert text


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_stop_strings_end_generation_and_are_not_returned(client: OpenAI, stream: bool) -> None:
    kw = {
        "messages": [{"role": "user", "content": "Count from 1 to 10, separated by commas."}],
        "temperature": 0,
        "max_tokens": 40,
    }
    full = ask(client, stream, **kw)[0]
    assert "4" in full
    text, finish, _ = ask(client, stream, stop=["4", "zzz"], **kw)
    assert finish == "stop"
    assert "4" not in text and full.startswith(text)
    assert ask(client, stream, stop="4", **kw)[0] == text


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_seed_reproduces_sampled_text(client: OpenAI, stream: bool) -> None:
    kw = {
        "messages": [{"role": "user", "content": "Invent a name for a cat."}],
        "temperature": 1.0,
        "max_tokens": 24,
    }
    a = ask(client, stream, seed=42, **kw)[0]
    b = ask(client, stream, seed=42, **kw)[0]
    assert a == b
    others = {ask(client, stream, seed=s, **kw)[0] for s in (1, 2, 3)}
    assert others - {a}  # the seed changes the sample, so equality above is meaningful


def test_frequency_and_presence_penalties_change_greedy_output(client: OpenAI) -> None:
    kw = {
        "messages": [{"role": "user", "content": "Repeat the word 'apple' many times."}],
        "temperature": 0,
        "max_tokens": 40,
    }
    plain = ask(client, False, **kw)[0]
    assert ask(client, False, frequency_penalty=2.0, **kw)[0] != plain
    assert ask(client, False, presence_penalty=2.0, **kw)[0] != plain


def test_temperature_and_top_p_are_accepted(client: OpenAI) -> None:
    text, _, _ = ask(
        client, False, messages=QUESTION, temperature=0.2, top_p=0.5, max_tokens=16, seed=1
    )
    assert text


def test_unknown_model_is_404(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="no-such-model:1b", messages=QUESTION)
    assert info.value.code == "model_not_found"


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_prompt_longer_than_context_is_400(client: OpenAI, stream: bool) -> None:
    long = [{"role": "user", "content": "word " * 3000}]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=DEFAULT_MODEL, messages=long, stream=stream)  # type: ignore[call-overload]
    assert info.value.code == "context_length_exceeded"


def test_out_of_range_values_are_400(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=DEFAULT_MODEL, messages=QUESTION, temperature=5)
    assert info.value.param == "temperature"  # type: ignore[attr-defined]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=DEFAULT_MODEL, messages=[])


def test_models_endpoints(client: OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert DEFAULT_MODEL in ids
    assert client.models.retrieve(DEFAULT_MODEL).id == DEFAULT_MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("missing:1b")


def test_raw_sse_framing(server: RunningServer) -> None:
    body = {
        "model": DEFAULT_MODEL,
        "messages": QUESTION,
        "stream": True,
        "max_tokens": 8,
        "ignore_eos": True,  # exactly 8 tokens, so the finish reason is always "length"
        "stream_options": {"include_usage": True},
    }
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=30) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode("utf-8")
    events = [e for e in raw.split("\n\n") if e and not e.startswith(":")]
    assert raw.endswith("data: [DONE]\n\n")
    assert all(e.startswith("data: ") and "\n" not in e for e in events)
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert [c["choices"][0]["finish_reason"] for c in chunks[1:-1]][-1] == "length"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 8


def test_curl_style_form_body(server: RunningServer) -> None:
    body = json.dumps({"model": DEFAULT_MODEL, "messages": QUESTION, "max_tokens": 4})
    r = httpx.post(
        f"{server.url}/v1/chat/completions",
        content=body,
        headers={"content-type": "application/x-www-form-urlencoded"},
        timeout=30,
    )
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 4
