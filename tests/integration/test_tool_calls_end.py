"""A forced tool call ends generation (issue: it ran on until the context was full).

Real model, real server, the official clients, no `max_tokens`: the answer must be the call(s)
and nothing else, finish with `tool_calls` (Ollama: `stop`), each call once, and stop well
under 100 tokens. Before the fix the default model, greedy, wrote `{...} }` (a blank the
parser did not expect, so the rest leaked into the content) and repeated its call until the
slot's context was full.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import ollama
import pytest
from openai import OpenAI

from tests.integration.conftest import DEFAULT_MODEL, RunningServer

WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
FORCED = {"type": "function", "function": {"name": "get_weather"}}
SYNTAX = ("<tool_call>", "</tool_call>", '"arguments"', "{", "}")


@pytest.fixture(scope="module")
def client(base_url: str) -> OpenAI:
    return OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=300)


def assert_only_calls(content: str | None, calls: list[tuple[str, str]]) -> None:
    assert not content, f"text besides the calls: {content!r}"
    assert calls
    assert len(set(calls)) == len(calls), "a call repeated"
    for name, arguments in calls:
        assert name == "get_weather"
        assert isinstance(json.loads(arguments)["city"], str)


@pytest.mark.parametrize("parallel", [None, False], ids=["parallel-default", "parallel-off"])
@pytest.mark.parametrize("choice", [FORCED, "required"], ids=["named", "required"])
def test_non_stream_forced_call_stops(client: OpenAI, choice: Any, parallel: bool | None) -> None:
    extra = {} if parallel is None else {"parallel_tool_calls": parallel}
    r = client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=ASK,
        tools=[WEATHER],
        tool_choice=choice,
        temperature=0,
        **extra,
    )
    choice0 = r.choices[0]
    calls = [(c.function.name, c.function.arguments) for c in choice0.message.tool_calls or []]
    assert choice0.finish_reason == "tool_calls"
    assert_only_calls(choice0.message.content, calls)
    assert r.usage is not None and r.usage.completion_tokens < 100
    if parallel is False:
        assert len(calls) == 1


@pytest.mark.parametrize("choice", [FORCED, "required"], ids=["named", "required"])
def test_stream_forced_call_stops_and_carries_each_call_once(client: OpenAI, choice: Any) -> None:
    stream = client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=ASK,
        tools=[WEATHER],
        tool_choice=choice,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    content, finish, usage = "", None, None
    ids: dict[int, str] = {}
    names: dict[int, str] = {}
    arguments: dict[int, str] = {}
    for chunk in stream:
        usage = chunk.usage or usage
        for c in chunk.choices:
            content += c.delta.content or ""
            finish = c.finish_reason or finish
            for call in c.delta.tool_calls or []:
                if call.id is not None:
                    assert call.index not in ids, "a call index started twice"
                    ids[call.index] = call.id
                if call.function is not None and call.function.name:
                    names[call.index] = call.function.name
                if call.function is not None and call.function.arguments:
                    arguments[call.index] = arguments.get(call.index, "") + call.function.arguments
    assert finish == "tool_calls"
    assert sorted(ids) == list(range(len(ids))) and len(set(ids.values())) == len(ids)
    assert_only_calls(content, [(names[i], arguments[i]) for i in sorted(ids)])
    assert usage is not None and usage.completion_tokens < 100


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_ollama_chat_forced_call_stops(server: RunningServer, stream: bool) -> None:
    body = {
        "model": DEFAULT_MODEL,
        "messages": ASK,
        "tools": [WEATHER],
        "tool_choice": "required",
        "stream": stream,
        "options": {"temperature": 0},
    }
    r = httpx.post(f"{server.url}/api/chat", json=body, timeout=120)
    assert r.status_code == 200, r.text
    objects = [json.loads(line) for line in r.text.splitlines()] if stream else [r.json()]
    final = ollama.ChatResponse(**objects[-1])  # the official client's own model parses it
    text = "".join(o["message"].get("content", "") for o in objects)
    assert not any(piece in text for piece in SYNTAX), text
    calls = [
        (c.function.name, json.dumps(c.function.arguments)) for c in final.message.tool_calls or []
    ]
    assert_only_calls(text, calls)
    assert final.done and final.done_reason == "stop"
    assert final.eval_count is not None and final.eval_count < 100


def test_ollama_client_chat_with_tools_auto_ends_or_answers(server: RunningServer) -> None:
    client = ollama.Client(host=server.url, timeout=120)
    r = client.chat(
        model=DEFAULT_MODEL,
        messages=[
            {"role": "user", "content": "Weather in Rome?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"function": {"name": "get_weather", "arguments": {"city": "Rome"}}}
                ],
            },
            {"role": "tool", "content": "24 degrees", "tool_name": "get_weather"},
            {"role": "user", "content": "And the weather in Paris?"},
        ],
        tools=[WEATHER],
        options={"temperature": 0, "num_predict": 300},
    )
    # auto: the model may call (then the answer is the call, once, and ends by itself) or
    # answer in prose (this small model, greedy, may ramble on: a prose answer's length is the
    # model's, so it is capped here); either way no call syntax leaks into the text.
    assert r.done
    assert "<tool_call>" not in (r.message.content or "")
    if r.message.tool_calls:
        assert not r.message.content and r.done_reason == "stop"
        assert r.eval_count is not None and r.eval_count < 100
        assert len({json.dumps(c.function.arguments) for c in r.message.tool_calls}) == len(
            r.message.tool_calls
        )
    else:
        assert r.message.content and r.done_reason in ("stop", "length")
