"""The legacy /v1/completions endpoint on the real default model, through the SDK."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest
from openai import OpenAI

from tests.integration.conftest import DEFAULT_MODEL

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def client(base_url: str) -> OpenAI:
    return OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def vocab(default_model_path: Path) -> Any:
    import llama_cpp

    return llama_cpp.Llama(str(default_model_path), vocab_only=True, verbose=False)


def complete(client: OpenAI, stream: bool, **kw: Any) -> tuple[dict[int, str], dict[int, str], Any]:
    """({index: text}, {index: finish_reason}, usage)."""
    kw = {"model": DEFAULT_MODEL, "temperature": 0, "max_tokens": 8, **kw}
    if not stream:
        r = client.completions.create(**kw)
        return (
            {c.index: c.text for c in r.choices},
            {c.index: c.finish_reason for c in r.choices},
            r.usage,
        )
    texts: dict[int, str] = {}
    finishes: dict[int, str] = {}
    usage = None
    for chunk in client.completions.create(
        stream=True, stream_options={"include_usage": True}, **kw
    ):
        usage = chunk.usage or usage
        for c in chunk.choices:
            texts[c.index] = texts.get(c.index, "") + c.text
            if c.finish_reason:
                finishes[c.index] = c.finish_reason
    return texts, finishes, usage


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_string_prompt(client: OpenAI, stream: bool) -> None:
    texts, finishes, usage = complete(client, stream, prompt=PROMPT)
    assert "Paris" in texts[0]
    assert finishes == {0: "length"} and usage.completion_tokens == 8
    assert usage.prompt_tokens > 0 and usage.total_tokens == usage.prompt_tokens + 8


def test_stream_equals_non_stream(client: OpenAI) -> None:
    assert complete(client, False, prompt=PROMPT)[0] == complete(client, True, prompt=PROMPT)[0]


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_list_of_prompts_gives_one_choice_per_prompt(client: OpenAI, stream: bool) -> None:
    prompts = [PROMPT, "1, 2, 3, 4,"]
    texts, finishes, usage = complete(client, stream, prompt=prompts)
    assert sorted(texts) == [0, 1] and set(finishes.values()) == {"length"}
    assert texts[0] == complete(client, False, prompt=prompts[0])[0][0]
    assert texts[1] == complete(client, False, prompt=prompts[1])[0][0]
    assert usage.completion_tokens == 16


def test_prompts_times_n_are_indexed_prompt_major(client: OpenAI) -> None:
    prompts = [PROMPT, "Once upon a time"]
    texts, _, usage = complete(client, False, prompt=prompts, n=2)  # greedy: samples agree
    assert sorted(texts) == [0, 1, 2, 3]
    first, second = (complete(client, False, prompt=p)[0][0] for p in prompts)
    assert [texts[0], texts[1], texts[2], texts[3]] == [first, first, second, second]
    assert usage.completion_tokens == 4 * 8


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_token_id_prompts(client: OpenAI, vocab: Any, stream: bool) -> None:
    ids = vocab.tokenize(PROMPT.encode(), add_bos=False, special=False)
    by_text = complete(client, False, prompt=PROMPT)[0][0]
    assert complete(client, stream, prompt=ids)[0][0] == by_text
    texts = complete(client, stream, prompt=[ids, ids])[0]
    assert texts == {0: by_text, 1: by_text}


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_echo(client: OpenAI, stream: bool) -> None:
    plain = complete(client, False, prompt=PROMPT)[0][0]
    assert complete(client, stream, prompt=PROMPT, echo=True)[0][0] == PROMPT + plain
    texts, _, usage = complete(client, stream, prompt=PROMPT, echo=True, max_tokens=0)
    assert texts[0] == PROMPT and usage.completion_tokens == 0


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_stop(client: OpenAI, stream: bool) -> None:
    full = complete(client, False, prompt="1, 2, 3, 4,", max_tokens=12)[0][0]
    assert " 6" in full
    texts, finishes, _ = complete(client, stream, prompt="1, 2, 3, 4,", max_tokens=12, stop=[" 6"])
    assert finishes[0] == "stop" and full.startswith(texts[0]) and " 6" not in texts[0]


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_integer_logprobs(client: OpenAI, stream: bool) -> None:
    kw = {"model": DEFAULT_MODEL, "prompt": PROMPT, "max_tokens": 6, "temperature": 0}
    tokens: list[str] = []
    top: list[Any] = []
    offsets: list[int] = []
    text = ""
    if stream:
        for chunk in client.completions.create(stream=True, logprobs=3, **kw):  # type: ignore[call-overload]
            for c in chunk.choices:
                text += c.text
                if c.logprobs:
                    tokens += c.logprobs.tokens or []
                    top += c.logprobs.top_logprobs or []
                    offsets += c.logprobs.text_offset or []
    else:
        r = client.completions.create(logprobs=3, **kw)  # type: ignore[call-overload]
        lp = r.choices[0].logprobs
        text, tokens, top, offsets = r.choices[0].text, lp.tokens, lp.top_logprobs, lp.text_offset
    assert "".join(tokens) == text and len(tokens) == 6
    assert all(len(t) == 3 for t in top)
    assert offsets == [len("".join(tokens[:i])) for i in range(len(tokens))]


def test_sampling_fields(client: OpenAI, vocab: Any) -> None:
    kw: dict[str, Any] = {"prompt": "Repeat after me: apple apple apple", "max_tokens": 12}
    plain = complete(client, False, **kw)[0][0]
    assert complete(client, False, frequency_penalty=2.0, **kw)[0][0] != plain
    assert complete(client, False, presence_penalty=2.0, **kw)[0][0] != plain
    sampled = {"temperature": 1.0, "top_p": 0.9, **kw}
    a = complete(client, False, seed=9, **sampled)[0][0]
    assert a == complete(client, False, seed=9, **sampled)[0][0]
    assert {complete(client, False, seed=s, **sampled)[0][0] for s in (1, 2, 3)} - {a}
    banana = vocab.tokenize(b" banana", add_bos=False, special=False)
    forced = complete(client, False, logit_bias={str(banana[0]): 100}, **{**kw, "max_tokens": 3})
    assert forced[0][0] == " banana" * 3


def test_best_of_returns_the_best_n(client: OpenAI) -> None:
    r = client.completions.create(
        model=DEFAULT_MODEL, prompt=PROMPT, best_of=3, n=1, temperature=1.0, seed=2, max_tokens=6
    )
    assert len(r.choices) == 1 and r.choices[0].index == 0
    assert r.usage is not None and r.usage.completion_tokens >= 6  # every sample is generated


@pytest.mark.parametrize(
    ("kw", "param"),
    [
        ({"suffix": "return result"}, "suffix"),
        ({"echo": True, "logprobs": 1}, "echo"),
        ({"prompt": [[999999]]}, "prompt"),
        ({"prompt": []}, "prompt"),
        ({"best_of": 2, "stream": True}, "best_of"),
        ({"mirostat": 2}, "mirostat"),
    ],
)
def test_bad_requests_are_400(client: OpenAI, kw: dict[str, Any], param: str) -> None:
    kw = {"prompt": PROMPT, **kw}
    extra = {k: kw.pop(k) for k in list(kw) if k == "mirostat"}
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=DEFAULT_MODEL, max_tokens=4, extra_body=extra, **kw)
    assert info.value.param == param  # type: ignore[attr-defined]
    assert complete(client, False, prompt=PROMPT, max_tokens=1)[0][0]  # still serving


def test_suffix_refusal_says_why(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=DEFAULT_MODEL, prompt="def f(x):", suffix="return y")
    assert info.value.code == "unsupported_parameter" and "fill in the middle" in info.value.message
