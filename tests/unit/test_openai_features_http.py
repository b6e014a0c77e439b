"""Tools, formats, logprobs, completions, embeddings and field policy over the fake engine.

Wire shapes and what reaches the engine; the real model's behaviour is tested in
tests/integration/test_openai_*.py.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.fakes import FakeEngine
from tests.unit.conftest import MODEL, chat, sse_chunks

CALL_TEXT = (
    'Sure. <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
)
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(n_ctx_slot=4096)  # room for the generic tool prompt


def prompt_of(engine: FakeEngine, i: int = -1) -> str:
    return "".join(chr(t) for t in engine.submitted[i].prompt_tokens)


# ---- tools ------------------------------------------------------------------------------


def test_tool_calls_non_stream(client: TestClient, engine: FakeEngine) -> None:
    engine.reply = CALL_TEXT
    r = client.post("/v1/chat/completions", json=chat(tools=[WEATHER]))
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] == "Sure."
    (call,) = message["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    sampling = engine.submitted[-1].sampling
    assert sampling.grammar and sampling.grammar_triggers  # auto: a lazy grammar
    assert "# Tools" in prompt_of(engine)


def test_tool_calls_stream_in_openai_shape(client: TestClient, engine: FakeEngine) -> None:
    engine.reply = CALL_TEXT
    chunks = sse_chunks(client, "/v1/chat/completions", chat(tools=[WEATHER], stream=True))
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    first, rest = calls[0], calls[1:]
    assert first["index"] == 0 and first["id"].startswith("call_") and first["type"] == "function"
    assert first["function"] == {"name": "get_weather", "arguments": ""}
    assert rest and all(set(c) == {"index", "function"} for c in rest)
    assert all(set(c["function"]) == {"arguments"} for c in rest)
    assert json.loads("".join(c["function"]["arguments"] for c in rest)) == {"city": "Paris"}
    content = "".join(d.get("content") or "" for d in deltas)
    assert content == "Sure. "
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert [f for f in finishes if f] == ["tool_calls"]


@pytest.mark.parametrize(
    ("tool_choice", "triggers"),
    [
        ("required", False),
        ({"type": "function", "function": {"name": "get_weather"}}, False),
        (
            {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [WEATHER]}},
            True,
        ),
    ],
)
def test_forced_choices_apply_the_grammar_at_once(
    client: TestClient, engine: FakeEngine, tool_choice: Any, triggers: bool
) -> None:
    engine.reply = CALL_TEXT
    r = client.post("/v1/chat/completions", json=chat(tools=[WEATHER], tool_choice=tool_choice))
    assert r.status_code == 200, r.text
    sampling = engine.submitted[-1].sampling
    assert sampling.grammar and "get_weather" in sampling.grammar
    assert bool(sampling.grammar_triggers) is triggers


def test_tool_choice_none_neither_renders_nor_constrains(
    client: TestClient, engine: FakeEngine
) -> None:
    r = client.post("/v1/chat/completions", json=chat(tools=[WEATHER], tool_choice="none"))
    assert r.status_code == 200
    assert engine.submitted[-1].sampling.grammar is None
    assert "# Tools" not in prompt_of(engine)
    assert r.json()["choices"][0]["message"]["tool_calls"] is None


def test_tool_history_is_accepted_and_rendered(client: TestClient, engine: FakeEngine) -> None:
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "18 degrees"},
    ]
    r = client.post("/v1/chat/completions", json={"model": MODEL, "messages": messages})
    assert r.status_code == 200, r.text
    prompt = prompt_of(engine)
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}' in prompt
    assert "<tool_response>\n18 degrees\n</tool_response>" in prompt


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}},
            "tool_choice",
        ),
        ({"tool_choice": "required"}, "tools"),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools.0.type"),
        (
            {"tools": [{"type": "function", "function": {"name": "bad name"}}]},
            "tools.0.function.name",
        ),
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "f",
                            "parameters": {"type": "object", "not": {"required": ["a"]}},
                        },
                    }
                ]
            },
            "tools.0.function.parameters",
        ),
        ({"tools": [WEATHER], "ignore_eos": True}, "ignore_eos"),
    ],
)
def test_bad_tool_requests_are_400(client: TestClient, extra: dict[str, Any], param: str) -> None:
    r = client.post("/v1/chat/completions", json=chat(**extra))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


# ---- response_format ---------------------------------------------------------------------


def test_json_object_and_json_schema_reach_the_engine_as_grammars(
    client: TestClient, engine: FakeEngine
) -> None:
    r = client.post("/v1/chat/completions", json=chat(response_format={"type": "json_object"}))
    assert r.status_code == 200
    assert "object" in (engine.submitted[-1].sampling.grammar or "")
    fmt = {
        "type": "json_schema",
        "json_schema": {
            "name": "city",
            "strict": True,
            "schema": {"type": "object", "properties": {"zip": {"type": "string"}}},
        },
    }
    assert client.post("/v1/chat/completions", json=chat(response_format=fmt)).status_code == 200
    assert '\\"zip\\"' in (engine.submitted[-1].sampling.grammar or "")
    r = client.post("/v1/chat/completions", json=chat(response_format={"type": "text"}))
    assert r.status_code == 200 and engine.submitted[-1].sampling.grammar is None


@pytest.mark.parametrize(
    ("fmt", "param", "named"),
    [
        (
            {
                "type": "json_schema",
                "json_schema": {"name": "n", "schema": {"type": "integer", "minimum": 1}},
            },
            "response_format.json_schema.schema",
            "minimum",
        ),
        ({"type": "json_schema"}, "response_format.json_schema", "json_schema"),
        ({"type": "yaml"}, "response_format.type", "json_object"),
    ],
)
def test_bad_response_formats_are_400(
    client: TestClient, fmt: dict[str, Any], param: str, named: str
) -> None:
    r = client.post("/v1/chat/completions", json=chat(response_format=fmt))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param and named in r.json()["error"]["message"]


# ---- logprobs ----------------------------------------------------------------------------


def test_chat_logprobs_non_stream(client: TestClient, engine: FakeEngine) -> None:
    r = client.post("/v1/chat/completions", json=chat(logprobs=True, top_logprobs=2))
    assert engine.submitted[-1].logprobs == 2
    content = r.json()["choices"][0]["logprobs"]["content"]
    assert "".join(e["token"] for e in content) == r.json()["choices"][0]["message"]["content"]
    first = content[0]
    assert set(first) == {"token", "logprob", "bytes", "top_logprobs"}
    assert first["bytes"] == list(first["token"].encode())
    assert len(first["top_logprobs"]) == 2


def test_chat_logprobs_stream(client: TestClient) -> None:
    chunks = sse_chunks(client, "/v1/chat/completions", chat(logprobs=True, stream=True))
    entries = [
        e
        for c in chunks
        if c["choices"] and c["choices"][0].get("logprobs")
        for e in c["choices"][0]["logprobs"]["content"]
    ]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert "".join(e["token"] for e in entries) == text
    assert all(e["top_logprobs"] == [] for e in entries)


def test_logprobs_off_by_default_and_bounds(client: TestClient, engine: FakeEngine) -> None:
    r = client.post("/v1/chat/completions", json=chat())
    assert engine.submitted[-1].logprobs is None and r.json()["choices"][0]["logprobs"] is None
    for extra, param in (
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
    ):
        r = client.post("/v1/chat/completions", json=chat(**extra))
        assert r.status_code == 400 and r.json()["error"]["param"] == param


# ---- n ------------------------------------------------------------------------------------


def test_n_streams_each_choice_once_with_its_own_finish(
    client: TestClient, engine: FakeEngine
) -> None:
    body = chat(n=3, seed=5, stream=True, stream_options={"include_usage": True})
    chunks = sse_chunks(client, "/v1/chat/completions", body)
    finishes = [
        c["choices"][0]["index"]
        for c in chunks
        if c["choices"] and c["choices"][0]["finish_reason"]
    ]
    assert sorted(finishes) == [0, 1, 2]
    assert [r.sampling.seed for r in engine.submitted[-3:]] == [5, 6, 7]
    usage = chunks[-1]["usage"]
    assert usage["completion_tokens"] == 3 * 11 and usage["prompt_tokens"] == len(
        engine.submitted[-1].prompt_tokens
    )


# ---- legacy completions --------------------------------------------------------------------


def test_completion_prompt_forms(client: TestClient, engine: FakeEngine) -> None:
    r = client.post("/v1/completions", json={"model": MODEL, "prompt": "Hi", "max_tokens": 2})
    body = r.json()
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert (
        body["choices"][0]["text"] == "Hello from"
        and body["choices"][0]["finish_reason"] == "length"
    )
    assert engine.submitted[-1].prompt_tokens == [ord("H"), ord("i")]
    r = client.post("/v1/completions", json={"model": MODEL, "prompt": ["a", "bc"], "n": 2})
    assert [c["index"] for c in r.json()["choices"]] == [0, 1, 2, 3]
    assert [s.prompt_tokens for s in engine.submitted[-4:]] == [[97], [97], [98, 99], [98, 99]]
    assert r.json()["usage"]["prompt_tokens"] == 3  # each prompt once
    r = client.post(
        "/v1/completions", json={"model": MODEL, "prompt": [[72, 105], [120]], "echo": True}
    )
    assert [c["text"][:2] for c in r.json()["choices"]] == ["Hi", "xH"]


def test_completion_stream_echo_and_usage(client: TestClient) -> None:
    body = {
        "model": MODEL,
        "prompt": "Say:",
        "echo": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    chunks = sse_chunks(client, "/v1/completions", body)
    text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
    assert text.startswith("Say:Hello from") and all(
        c["object"] == "text_completion" for c in chunks
    )
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == 4


def test_completion_echo_with_zero_max_tokens_returns_the_prompt(
    client: TestClient, engine: FakeEngine
) -> None:
    body = {"model": MODEL, "prompt": ["abc", "d"], "echo": True, "max_tokens": 0, "n": 2}
    r = client.post("/v1/completions", json=body)
    assert [c["text"] for c in r.json()["choices"]] == ["abc", "abc", "d", "d"]
    assert not engine.submitted and r.json()["usage"]["completion_tokens"] == 0
    chunks = sse_chunks(client, "/v1/completions", {**body, "stream": True})
    finishes = [c["choices"][0]["index"] for c in chunks if c["choices"][0]["finish_reason"]]
    assert sorted(finishes) == [0, 1, 2, 3]


def test_completion_legacy_logprobs(client: TestClient) -> None:
    r = client.post(
        "/v1/completions", json={"model": MODEL, "prompt": "x", "logprobs": 3, "max_tokens": 3}
    )
    choice = r.json()["choices"][0]
    lp = choice["logprobs"]
    assert "".join(lp["tokens"]) == choice["text"]
    assert len(lp["token_logprobs"]) == 3 and all(len(t) == 3 for t in lp["top_logprobs"])
    assert lp["text_offset"] == [
        0,
        len(lp["tokens"][0]),
        len(lp["tokens"][0]) + len(lp["tokens"][1]),
    ]


def test_best_of_returns_n_choices(client: TestClient, engine: FakeEngine) -> None:
    r = client.post("/v1/completions", json={"model": MODEL, "prompt": "x", "best_of": 3, "n": 1})
    assert len(r.json()["choices"]) == 1 and len(engine.submitted) == 3 + 0
    assert engine.submitted[-1].logprobs == 0  # ranking needs log-probabilities


def test_suffix_needs_fim_tokens(client: TestClient, engine: FakeEngine) -> None:
    body = {"model": MODEL, "prompt": "def f(", "suffix": "return x"}
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == "suffix"
    assert r.json()["error"]["code"] == "unsupported_parameter"
    engine.fim_tokens = (1, 2, 3)
    assert client.post("/v1/completions", json=body).status_code == 200
    tokens = engine.submitted[-1].prompt_tokens
    assert tokens[0] == 1 and tokens[-1] == 3 and 2 in tokens


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"prompt": []}, "prompt"),
        ({"prompt": [1, "a"]}, "prompt"),
        ({"prompt": [[-1]]}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x", "echo": True, "logprobs": 1}, "echo"),
        ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "x", "best_of": 2, "stream": True}, "best_of"),
        ({"prompt": "x", "n": 3, "best_of": 2}, "best_of"),
        ({"prompt": "x", "logprobs": 21}, "logprobs"),
        ({}, "prompt"),
    ],
)
def test_bad_completion_requests_are_400(
    client: TestClient, extra: dict[str, Any], param: str
) -> None:
    r = client.post("/v1/completions", json={"model": MODEL, **extra})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"].startswith(param)


# ---- embeddings --------------------------------------------------------------------------


def test_embeddings_float_and_base64_agree(client: TestClient, engine: FakeEngine) -> None:
    body = {"model": MODEL, "input": ["ab", "ba", "zz"]}
    floats = client.post("/v1/embeddings", json=body).json()
    b64 = client.post("/v1/embeddings", json={**body, "encoding_format": "base64"}).json()
    assert floats["object"] == "list" and [d["index"] for d in floats["data"]] == [0, 1, 2]
    for f, b in zip(floats["data"], b64["data"], strict=True):
        decoded = np.frombuffer(base64.b64decode(b["embedding"]), dtype="<f4")
        assert np.allclose(decoded, f["embedding"], atol=1e-6)
    assert floats["usage"] == {"prompt_tokens": 6, "total_tokens": 6}
    assert (
        client.post("/v1/embeddings", json={"model": MODEL, "input": [[97, 98]]}).json()["data"][0][
            "embedding"
        ]
        == floats["data"][0]["embedding"]
    )


@pytest.mark.parametrize(
    ("extra", "param", "code"),
    [
        ({"input": "x", "dimensions": 4}, "dimensions", "unsupported_parameter"),
        ({"input": ""}, "input", None),
        ({"input": []}, "input", None),
        ({"input": [[0x110000]]}, "input", None),
        ({"input": "x" * 5000}, "input", "context_length_exceeded"),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format", None),
    ],
)
def test_bad_embedding_requests_are_400(
    client: TestClient, extra: dict[str, Any], param: str, code: str | None
) -> None:
    r = client.post("/v1/embeddings", json={"model": MODEL, **extra})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and (code is None or err["code"] == code)


def test_embedding_dimensions_equal_to_the_model_are_fine(
    client: TestClient, engine: FakeEngine
) -> None:
    r = client.post(
        "/v1/embeddings", json={"model": MODEL, "input": "x", "dimensions": engine.n_embd}
    )
    assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) == engine.n_embd


# ---- fields we do not model ----------------------------------------------------------------


@pytest.mark.parametrize(
    "field",
    [
        {"user": "u1"},
        {"metadata": {"k": "v"}},
        {"store": True},
        {"service_tier": "auto"},
        {"safety_identifier": "x"},
        {"prompt_cache_key": "k"},
        {"prediction": {"type": "content", "content": "x"}},
        {"modalities": ["text"]},
        {"reasoning_effort": "none"},
        {"parallel_tool_calls": False},
        {"stream_options": {"include_usage": False, "include_obfuscation": False}},
        {"some_future_field": 1},
    ],
)
def test_harmless_fields_are_ignored(client: TestClient, field: dict[str, Any]) -> None:
    assert client.post("/v1/chat/completions", json=chat(**field)).status_code == 200


@pytest.mark.parametrize(
    "field",
    [
        {"audio": {"voice": "alloy", "format": "wav"}},
        {"modalities": ["text", "audio"]},
        {"web_search_options": {}},
        {"reasoning_effort": "high"},
        {"verbosity": "low"},
        {"functions": [{"name": "f"}]},
        {"function_call": "auto"},
        {"mirostat": 2},
    ],
)
def test_fields_that_would_change_the_answer_are_400(
    client: TestClient, field: dict[str, Any]
) -> None:
    r = client.post("/v1/chat/completions", json=chat(**field))
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == next(iter(field)) and err["code"] == "unsupported_parameter"
    assert client.get("/health").status_code == 200


def test_a_bad_format_schema_with_tools_names_the_format(client: TestClient) -> None:
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "n", "schema": {"type": "object", "not": {"type": "null"}}},
    }
    r = client.post("/v1/chat/completions", json=chat(tools=[WEATHER], response_format=fmt))
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "response_format.json_schema.schema"
    assert "'not'" in r.json()["error"]["message"]
