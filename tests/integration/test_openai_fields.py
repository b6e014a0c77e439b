"""Request fields we do not model: harmless ones are ignored, the others are a 400 naming them."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from openai import OpenAI

from tests.integration.conftest import DEFAULT_MODEL

ASK = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def client(base_url: str) -> OpenAI:
    return OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)


def test_ignored_chat_fields_change_nothing(client: OpenAI) -> None:
    kw: dict[str, Any] = {
        "model": DEFAULT_MODEL,
        "messages": ASK,
        "temperature": 0,
        "max_tokens": 8,
    }
    plain = client.chat.completions.create(**kw).choices[0].message.content
    noisy = client.chat.completions.create(
        **kw,
        user="user-1",
        metadata={"team": "qa"},
        store=True,
        service_tier="auto",
        safety_identifier="hash",
        prompt_cache_key="k1",
        prompt_cache_retention="in_memory",
        prompt_cache_options={"mode": "implicit"},
        prediction={"type": "content", "content": "Hello!"},
        modalities=["text"],
        parallel_tool_calls=True,
        stream_options=None,
        extra_body={"some_future_field": {"x": 1}, "cache_prompt": True},
    )
    assert noisy.choices[0].message.content == plain


def test_ignored_completion_and_embedding_fields(client: OpenAI) -> None:
    r = client.completions.create(model=DEFAULT_MODEL, prompt="Hi", max_tokens=2, user="u")
    assert r.choices[0].text
    e = client.embeddings.create(model=DEFAULT_MODEL, input="Hi", user="u")
    assert e.data


@pytest.mark.parametrize(
    "kw",
    [
        {"audio": {"voice": "alloy", "format": "wav"}, "modalities": ["text", "audio"]},
        {"modalities": ["text", "audio"]},
        {"web_search_options": {"search_context_size": "low"}},
        {"reasoning_effort": "high"},
        {"verbosity": "low"},
        {"functions": [{"name": "f", "parameters": {"type": "object"}}]},
        {"function_call": "auto"},
        {"moderation": {"model": "omni-moderation-latest"}},
        {"extra_body": {"mirostat": 2}},
    ],
)
def test_fields_that_change_the_answer_are_400(client: OpenAI, kw: dict[str, Any]) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=DEFAULT_MODEL, messages=ASK, max_tokens=4, **kw)  # type: ignore[arg-type]
    named = next(iter(kw["extra_body"])) if "extra_body" in kw else next(iter(kw))
    assert info.value.param == named  # type: ignore[attr-defined]
    assert info.value.code == "unsupported_parameter"
    assert client.chat.completions.create(model=DEFAULT_MODEL, messages=ASK, max_tokens=2).choices


def test_llama_server_sampler_extensions_are_honoured(client: OpenAI) -> None:
    r = client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=ASK,  # type: ignore[arg-type]
        max_tokens=6,
        extra_body={
            "top_k": 1,
            "min_p": 0.1,
            "typical_p": 0.9,
            "repeat_penalty": 1.1,
            "repeat_last_n": 16,
            "grammar": 'root ::= "yes" | "no"',
        },
    )
    assert r.choices[0].message.content in ("yes", "no")


def test_ignore_eos_generates_exactly_max_tokens(client: OpenAI) -> None:
    r = client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=ASK,  # type: ignore[arg-type]
        max_tokens=40,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    assert r.usage is not None and r.usage.completion_tokens == 40
    assert r.choices[0].finish_reason == "length"
