"""A model that repeats its call, over the fake engine: the wire shows each call once, the
answer ends at the repeat (the fake honours the request's watch as the real engine does).

The real model's behaviour is tested in tests/integration/test_tool_calls_end.py.
"""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from tests.fakes import FakeEngine
from tests.unit.conftest import chat, sse_chunks

# The grammar's optional blank after the arguments, then the same call again and again.
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"} }\n</tool_call>'
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
FORCED = {"type": "function", "function": {"name": "get_weather"}}


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(n_ctx_slot=4096, reply="\n".join([CALL] * 6))


@pytest.mark.parametrize("parallel", [True, False])
def test_non_stream_answer_ends_at_the_repeat(
    client: TestClient, engine: FakeEngine, parallel: bool
) -> None:
    body = chat(tools=[WEATHER], tool_choice=FORCED, parallel_tool_calls=parallel, temperature=0)
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    words_per_call = len(CALL.split(" "))
    # one call (parallel off), or one call and its repeat (parallel on): never all six
    assert r.json()["usage"]["completion_tokens"] <= 2 * words_per_call


def test_stream_carries_the_call_once(client: TestClient) -> None:
    body = chat(tools=[WEATHER], tool_choice="required", stream=True)
    chunks = sse_chunks(client, "/v1/chat/completions", body)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    calls = [call for d in deltas for call in d.get("tool_calls", [])]
    assert {c["index"] for c in calls} == {0}
    assert [c.get("id") is not None for c in calls].count(True) == 1
    assert json.loads("".join(c["function"]["arguments"] for c in calls)) == {"city": "Paris"}
    assert "".join(d.get("content") or "" for d in deltas) == ""
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert [f for f in finishes if f] == ["tool_calls"]
