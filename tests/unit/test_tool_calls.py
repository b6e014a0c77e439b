"""Reading an answer's calls as clients get them: the grammar's layout, each call once, and when
generation may end (no model; the real model's answers are in tests/integration)."""

from __future__ import annotations

import json

import pytest

from server.chat.template import ChatTemplate
from server.chat.tool_calls import CallReader, CallWatch, read_calls
from server.chat.tool_format import HERMES, LLAMA3_JSON
from server.chat.tool_parser import CallArguments, CallEnd, CallStart, Content, ToolEvent
from server.chat.tools import Tool, ToolChoice, plan_tools

WEATHER = Tool(
    "get_weather",
    None,
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
PARIS = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
ROME = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>'
# What SchemaConverter's grammar lets the model write: the arguments object may end in a blank.
PARIS_SPACED = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"} }\n</tool_call>'


def stream(reader: CallReader, text: str, step: int) -> list[ToolEvent]:
    events: list[ToolEvent] = []
    for i in range(0, len(text), step):
        events += reader.feed(text[i : i + step])
    return events + reader.finish()


def calls_of(events: list[ToolEvent]) -> dict[int, tuple[str, str]]:
    """index -> (name, arguments) rebuilt from the events, as a streaming client does."""
    out: dict[int, tuple[str, str]] = {}
    for e in events:
        if isinstance(e, CallStart):
            assert e.index not in out, "a call started twice under one index"
            out[e.index] = (e.name, "")
        elif isinstance(e, CallArguments):
            name, args = out[e.index]
            out[e.index] = (name, args + e.text)
    return out


def content_of(events: list[ToolEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, Content))


@pytest.mark.parametrize("step", [1, 3, 1000])
def test_the_blank_the_grammar_allows_after_the_arguments_is_not_content(step: int) -> None:
    events = stream(CallReader(HERMES, max_calls=1), PARIS_SPACED, step)
    assert content_of(events) == ""
    assert calls_of(events) == {0: ("get_weather", '{"city": "Paris"}')}
    assert [e for e in events if isinstance(e, CallEnd)] == [CallEnd(0)]
    # Only the one blank of the grammar's `space` rule: two blanks are off the layout.
    content, calls = read_calls(PARIS_SPACED.replace("} }", "}  }"), HERMES, 1)
    assert not calls[0].complete and "</tool_call>" in content


def test_llama3_json_calls_may_end_in_the_blank_too() -> None:
    content, calls = read_calls('{"name": "f", "parameters": {"a": 1} }', LLAMA3_JSON, 1)
    assert content == "" and [(c.name, c.arguments, c.complete) for c in calls] == [
        ("f", '{"a": 1}', True)
    ]


@pytest.mark.parametrize("step", [1, 2, 5, 1000])
def test_a_repeated_call_is_dropped_and_completes_the_answer(step: int) -> None:
    text = "\n".join([PARIS, ROME, PARIS, ROME, ROME])
    reader = CallReader(HERMES, max_calls=16)
    events = stream(reader, text, step)
    assert calls_of(events) == {
        0: ("get_weather", '{"city": "Paris"}'),
        1: ("get_weather", '{"city": "Rome"}'),
    }
    assert content_of(events) == ""
    assert reader.complete and reader.repeated
    assert [(c.name, c.arguments) for c in reader.calls] == [
        ("get_weather", '{"city": "Paris"}'),
        ("get_weather", '{"city": "Rome"}'),
    ]


@pytest.mark.parametrize("step", [1, 4, 1000])
def test_a_repeat_with_other_json_whitespace_is_still_a_repeat(step: int) -> None:
    # What the default model wrote, greedy, for a forced call with parallel calls on.
    text = (
        '<tool_call>\n{"name": "get_weather", "arguments": { "city": "Paris" } }\n</tool_call>\n'
        + PARIS
    )
    reader = CallReader(HERMES, max_calls=16)
    events = stream(reader, text, step)
    assert calls_of(events) == {0: ("get_weather", '{ "city": "Paris" }')}
    assert content_of(events) == "" and reader.repeated
    # a space inside a string is not JSON whitespace: that is another call
    other = PARIS.replace('"Paris"', '"Par is"')
    assert len(read_calls(PARIS + "\n" + other, HERMES, 16)[1]) == 2


def test_a_new_call_of_the_same_function_streams_once_it_differs() -> None:
    reader = CallReader(HERMES, max_calls=16)
    reader.feed(PARIS + "\n")
    held = reader.feed('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Pa')
    assert held == []  # still the start of the Paris call: it may be a repeat
    released = reader.feed("lermo")
    assert released == [
        CallStart(1, "get_weather"),
        CallArguments(1, '{"city": "Pa'),
        CallArguments(1, "lermo"),
    ]
    assert reader.feed('"}') == [CallArguments(1, '"}')]
    assert not reader.complete


def test_the_cap_completes_the_answer_and_drops_what_follows() -> None:
    reader = CallReader(HERMES, max_calls=2)
    events = stream(reader, "\n".join([PARIS, ROME, PARIS.replace("Paris", "Oslo")]), 7)
    assert [name_args[1] for name_args in calls_of(events).values()] == [
        '{"city": "Paris"}',
        '{"city": "Rome"}',
    ]
    assert reader.complete and not reader.repeated


def test_one_call_without_parallel_calls() -> None:
    reader = CallReader(HERMES, max_calls=1)
    reader.feed(PARIS)
    assert reader.complete
    assert reader.feed("\n" + ROME) == []


def test_a_cut_off_call_is_kept_and_no_separator_leaks() -> None:
    content, calls = read_calls(PARIS + "\n", HERMES, 16)
    assert content == "" and len(calls) == 1  # the separator of a call that never came
    content, calls = read_calls(PARIS + '\n<tool_call>\n{"name": "get_weather", "argu', HERMES, 16)
    assert content == "" and len(calls) == 2 and not calls[1].complete


def test_prose_and_then_a_call() -> None:
    text = "Let me look.\n" + PARIS
    events = stream(CallReader(HERMES, max_calls=16), text, 4)
    assert content_of(events) == "Let me look.\n"
    assert json.loads(calls_of(events)[0][1]) == {"city": "Paris"}


def test_the_watch_says_stop_when_the_calls_are_complete() -> None:
    watch = CallWatch(HERMES, max_calls=16)
    said = [watch.complete(piece) for piece in [PARIS, "\n", ROME, "\n", PARIS[:20], PARIS[20:]]]
    assert said == [False, False, False, False, False, True]
    single = CallWatch(HERMES, max_calls=1)
    assert [single.complete(p) for p in ["Sure. ", PARIS[:-1], PARIS[-1:]]] == [False, False, True]


def test_the_grammar_allows_exactly_max_calls() -> None:
    template = ChatTemplate(None)
    capped = plan_tools([WEATHER], ToolChoice("required"), template, max_calls=3)
    single = plan_tools([WEATHER], ToolChoice("required"), template, parallel=False)
    assert capped is not None and single is not None
    assert 'calls ::= call ("\\x0A" call){0,2}' in capped.grammar and capped.max_calls == 3
    assert "calls ::= call\n" in single.grammar and single.max_calls == 1
    assert capped.read("\n".join([PARIS, ROME]))[1][1].arguments == '{"city": "Rome"}'
