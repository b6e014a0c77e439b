"""Structured output on the real default model: every answer parses and matches its schema."""

from __future__ import annotations

import json
from typing import Any, Literal

import jsonschema
import openai
import pytest
from openai import OpenAI
from pydantic import BaseModel, Field

from tests.integration.conftest import DEFAULT_MODEL

ASK = [
    {
        "role": "user",
        "content": "Give the name and country of the capital of France as a JSON object.",
    }
]
CITY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 30},
        "country": {"type": "string", "enum": ["France", "Italy", "Other"]},
        "population": {"type": "integer"},
        "capital": {"type": "boolean"},
        "founded": {"type": "string", "format": "date"},
        "code": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "districts": {"type": "array", "items": {"$ref": "#/$defs/District"}, "maxItems": 2},
        "mayor": {"anyOf": [{"type": "string", "maxLength": 20}, {"type": "null"}]},
    },
    "required": ["name", "country", "population", "capital", "founded", "code", "districts"],
    "additionalProperties": False,
    "$defs": {
        "District": {
            "type": "object",
            "properties": {"n": {"type": "integer"}, "name": {"type": "string", "maxLength": 12}},
            "required": ["n", "name"],
            "additionalProperties": False,
        }
    },
}


@pytest.fixture(scope="module")
def client(base_url: str) -> OpenAI:
    return OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)


def answer(client: OpenAI, stream: bool, **kw: Any) -> list[tuple[str, str | None]]:
    """[(content, finish_reason)] per choice."""
    kw = {"model": DEFAULT_MODEL, "messages": ASK, "temperature": 0, "max_tokens": 200, **kw}
    if not stream:
        r = client.chat.completions.create(**kw)
        return [(c.message.content or "", c.finish_reason) for c in r.choices]
    n = kw.get("n", 1)
    text, finish = [""] * n, [None] * n
    for chunk in client.chat.completions.create(stream=True, **kw):
        for c in chunk.choices:
            text[c.index] += c.delta.content or ""
            finish[c.index] = c.finish_reason or finish[c.index]  # type: ignore[call-overload]
    return list(zip(text, finish, strict=True))


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_json_object_is_valid_json(client: OpenAI, stream: bool) -> None:
    ((content, finish),) = answer(client, stream, response_format={"type": "json_object"})
    assert finish == "stop"
    assert isinstance(json.loads(content), dict)


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_json_schema_output_matches_the_schema(client: OpenAI, stream: bool) -> None:
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "city", "schema": CITY_SCHEMA, "strict": True},
    }
    ((content, finish),) = answer(client, stream, response_format=fmt, max_tokens=300)
    assert finish == "stop", content
    jsonschema.validate(json.loads(content), CITY_SCHEMA)


def test_every_choice_of_n_matches(client: OpenAI) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "city", "schema": CITY_SCHEMA}}
    results = answer(
        client, False, response_format=fmt, n=2, temperature=1.0, seed=3, max_tokens=300
    )
    assert len(results) == 2
    for content, finish in results:
        assert finish == "stop", content
        jsonschema.validate(json.loads(content), CITY_SCHEMA)


class Landmark(BaseModel):
    name: str = Field(max_length=40)
    kind: Literal["museum", "tower", "park", "church"]
    visitors_per_year: int


class Guide(BaseModel):
    city: str = Field(max_length=30)
    landmarks: list[Landmark] = Field(max_length=2)


def test_sdk_parse_with_a_pydantic_model(client: OpenAI) -> None:
    r = client.chat.completions.parse(
        model=DEFAULT_MODEL,
        messages=[{"role": "user", "content": "Give a short guide to Paris."}],
        response_format=Guide,
        temperature=0,
        max_tokens=300,
    )
    assert isinstance(r.choices[0].message.parsed, Guide)


@pytest.mark.parametrize(
    ("schema", "named"),
    [
        ({"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}}}, "minimum"),
        ({"type": "object", "properties": {"e": {"type": "string", "format": "email"}}}, "email"),
        ({"type": "array", "items": {"type": "string"}, "uniqueItems": True}, "uniqueItems"),
    ],
)
def test_unsupported_schema_features_are_400_naming_them(
    client: OpenAI, schema: dict[str, Any], named: str
) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=DEFAULT_MODEL, messages=ASK, response_format=fmt)  # type: ignore[arg-type, call-overload]
    assert named in info.value.message
    assert info.value.param == "response_format.json_schema.schema"  # type: ignore[attr-defined]
    assert info.value.code == "unsupported_parameter"


def test_tools_auto_with_a_format_answers_json_or_calls(client: OpenAI) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {
                "type": "object",
                "properties": {"q": {"type": "string", "maxLength": 30}},
                "required": ["q"],
            },
        },
    }
    r = client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=ASK,  # type: ignore[arg-type]
        tools=[tool],  # type: ignore[list-item]
        response_format={"type": "json_object"},
        temperature=0,
        max_tokens=200,
        parallel_tool_calls=False,
    )
    message = r.choices[0].message
    if message.tool_calls:  # one call and nothing else
        assert r.choices[0].finish_reason == "tool_calls" and not message.content
        (call,) = message.tool_calls
        assert set(json.loads(call.function.arguments)) == {"q"}  # type: ignore[union-attr]
    else:  # or content valid against the format, ended by the model
        assert r.choices[0].finish_reason == "stop"
        assert isinstance(json.loads(message.content or ""), dict)
