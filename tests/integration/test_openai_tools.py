"""Tool calling on the real default model through the official SDK.

The default model's template does not know tools, so these run the generic prompt format.
Assertions are about validity (the JSON parses, matches the function's schema, names the
forced function), never about the model's prose.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import jsonschema
import openai
import pytest
from openai import OpenAI
from pydantic import BaseModel

from tests.integration.conftest import DEFAULT_MODEL

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 40},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TIME_SCHEMA = {
    "type": "object",
    "properties": {"timezone": {"type": "string", "maxLength": 40}},
    "required": ["timezone"],
}
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather in a city.",
            "parameters": WEATHER_SCHEMA,
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "Get the current time in a timezone.",
            "parameters": TIME_SCHEMA,
        },
    },
]
SCHEMAS = {"get_weather": WEATHER_SCHEMA, "get_time": TIME_SCHEMA}
ASK = [{"role": "user", "content": "What is the weather like in Paris right now?"}]


@pytest.fixture(scope="module")
def client(base_url: str) -> OpenAI:
    return OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=300)


@dataclass
class Answer:
    """One choice, streamed or not."""

    content: str | None
    calls: list[tuple[str, str, str]]  # (id, name, arguments)
    finish: str | None
    completion_tokens: int


def run(client: OpenAI, stream: bool, **kw: Any) -> Answer:
    """The answer of one choice, streamed or not; no `max_tokens` unless given (a tool-call
    answer has to end by itself).

    The stream is put back together with the SDK's own accumulator, which checks the shape
    of each delta (index, then id/type/name, then argument fragments).
    """
    kw = {"model": DEFAULT_MODEL, "temperature": 0, **kw}
    if not stream:
        r = client.chat.completions.create(**kw)
        final = r
    else:
        kw["stream_options"] = {"include_usage": True}
        with client.chat.completions.stream(**kw) as events:
            try:
                final = events.get_final_completion()
            except openai.LengthFinishReasonError as exc:  # the SDK refuses cut-off output
                final = exc.completion  # type: ignore[assignment]
    message = final.choices[0].message
    calls = [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or []]  # type: ignore[union-attr]
    tokens = final.usage.completion_tokens if final.usage else -1
    return Answer(message.content, calls, final.choices[0].finish_reason, tokens)


def assert_valid_calls(calls: list[tuple[str, str, str]], names: set[str]) -> None:
    assert calls
    assert len({c[0] for c in calls}) == len(calls)  # unique ids
    distinct = {(name, json.dumps(json.loads(args), sort_keys=True)) for _, name, args in calls}
    assert len(distinct) == len(calls), f"a call repeats: {calls}"
    for call_id, name, arguments in calls:
        assert call_id.startswith("call_")
        assert name in names
        jsonschema.validate(json.loads(arguments), SCHEMAS[name])


def assert_no_call_syntax(content: str | None) -> None:
    for piece in ("<tool_call>", "</tool_call>", '"arguments"'):
        assert piece not in (content or ""), content


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_required_gives_valid_calls(client: OpenAI, stream: bool) -> None:
    a = run(
        client, stream, messages=ASK, tools=TOOLS, tool_choice="required", parallel_tool_calls=False
    )
    assert a.finish == "tool_calls"
    assert len(a.calls) == 1
    assert_valid_calls(a.calls, {"get_weather", "get_time"})
    assert not a.content
    assert 0 < a.completion_tokens < 100


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_named_function_is_forced(client: OpenAI, stream: bool) -> None:
    # The question is about weather; the forced function is the other one.
    a = run(
        client,
        stream,
        messages=ASK,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        parallel_tool_calls=False,
    )
    assert a.finish == "tool_calls" and not a.content
    assert [c[1] for c in a.calls] == ["get_time"]
    assert_valid_calls(a.calls, {"get_time"})
    assert 0 < a.completion_tokens < 100


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_parallel_calls_are_each_valid(client: OpenAI, stream: bool) -> None:
    ask = [{"role": "user", "content": "What is the weather in Paris, in Rome and in Oslo?"}]
    a = run(client, stream, messages=ask, tools=TOOLS, tool_choice="required")
    assert a.finish == "tool_calls" and not a.content  # ended by itself: no max_tokens
    assert_valid_calls(a.calls, {"get_weather", "get_time"})  # each one once
    assert 0 < a.completion_tokens < 400


def test_allowed_tools_limit_the_calls(client: OpenAI) -> None:
    choice = {
        "type": "allowed_tools",
        "allowed_tools": {
            "mode": "required",
            "tools": [{"type": "function", "function": {"name": "get_time"}}],
        },
    }
    a = run(client, False, messages=ASK, tools=TOOLS, tool_choice=choice, parallel_tool_calls=False)
    assert a.finish == "tool_calls" and [c[1] for c in a.calls] == ["get_time"]
    assert not a.content


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_auto_gives_text_or_valid_calls(client: OpenAI, stream: bool, seed: int) -> None:
    a = run(client, stream, messages=ASK, tools=TOOLS, temperature=1.0, seed=seed, max_tokens=80)
    assert_no_call_syntax(a.content)  # whichever the model chose, no call leaks into text
    if a.finish == "tool_calls":
        assert_valid_calls(a.calls, {"get_weather", "get_time"})
    elif a.calls:  # cut off by max_tokens inside a call: the ones before it are complete
        assert a.finish == "length"
        if len(a.calls) > 1:
            assert_valid_calls(a.calls[:-1], {"get_weather", "get_time"})
    else:
        assert a.finish in ("stop", "length") and a.content


def weather_call(i: int, city: str) -> dict[str, Any]:
    arguments = json.dumps({"city": city, "unit": "celsius"})
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": f"call_{i}",
                "type": "function",
                "function": {"name": "get_weather", "arguments": arguments},
            }
        ],
    }


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_auto_can_choose_a_call(client: OpenAI, stream: bool) -> None:
    # A history of calls makes even this small model answer with one (greedy, so repeatable).
    history = [
        {"role": "user", "content": "Weather in Rome?"},
        weather_call(1, "Rome"),
        {"role": "user", "content": "Weather in Oslo?"},
        weather_call(2, "Oslo"),
        {"role": "user", "content": "Weather in Paris?"},
    ]
    a = run(client, stream, messages=history, tools=TOOLS)
    assert a.finish == "tool_calls" and not a.content
    assert_valid_calls(a.calls, {"get_weather", "get_time"})
    assert 0 < a.completion_tokens < 200


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_none_answers_in_text(client: OpenAI, stream: bool) -> None:
    a = run(client, stream, messages=ASK, tools=TOOLS, tool_choice="none", max_tokens=30)
    assert a.content and not a.calls and a.finish in ("stop", "length")
    assert_no_call_syntax(a.content)


def test_history_with_tool_calls_and_results(client: OpenAI) -> None:
    first = client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=ASK,  # type: ignore[arg-type]
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
        temperature=0,
        max_tokens=80,
    )
    message = first.choices[0].message
    assert message.tool_calls
    call = message.tool_calls[0]
    history: list[Any] = [
        *ASK,
        message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 18, "sky": "clear"}'},
    ]
    answers = [run(client, stream, messages=history, tools=TOOLS) for stream in (False, True)]
    for a in answers:  # auto: the model answers from the result, or calls again; never both
        assert_no_call_syntax(a.content)
        if a.finish == "tool_calls":
            assert not a.content
            assert_valid_calls(a.calls, {"get_weather", "get_time"})
        else:
            assert a.finish == "stop" and a.content and not a.calls
        assert 0 < a.completion_tokens < 300
    plain, streamed = answers  # greedy: the stream says the same as the plain answer
    assert (plain.content, [c[1:] for c in plain.calls], plain.finish) == (
        streamed.content,
        [c[1:] for c in streamed.calls],
        streamed.finish,
    )


class LookupCity(BaseModel):
    """Look up a city by name."""

    name: str
    country_code: str


def test_sdk_parse_with_a_strict_pydantic_tool(client: OpenAI) -> None:
    tool = openai.pydantic_function_tool(LookupCity)
    r = client.chat.completions.parse(
        model=DEFAULT_MODEL,
        messages=[{"role": "user", "content": "Find the city of Lyon."}],
        tools=[tool],
        tool_choice={"type": "function", "function": {"name": "LookupCity"}},
        parallel_tool_calls=False,
        temperature=0,
    )
    assert r.choices[0].finish_reason == "tool_calls" and not r.choices[0].message.content
    (call,) = r.choices[0].message.tool_calls or []
    assert isinstance(call.function.parsed_arguments, LookupCity)  # type: ignore[union-attr]
    assert r.usage is not None and r.usage.completion_tokens < 100


@pytest.mark.parametrize(
    ("kw", "param"),
    [
        ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "f",
                            "parameters": {
                                "type": "object",
                                "properties": {"n": {"type": "integer", "minimum": 1}},
                            },
                        },
                    }
                ]
            },
            "tools.0.function.parameters",
        ),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools.0.type"),
    ],
)
def test_bad_tool_requests_are_400(client: OpenAI, kw: dict[str, Any], param: str) -> None:
    kw = {"tools": TOOLS, **kw}
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=DEFAULT_MODEL, messages=ASK, max_tokens=8, **kw)  # type: ignore[arg-type]
    assert info.value.param == param  # type: ignore[attr-defined]
    # and the server keeps serving
    assert client.chat.completions.create(model=DEFAULT_MODEL, messages=ASK, max_tokens=2).choices
