"""Tool plans, prompt rendering and the tool-call parser (no model)."""

from __future__ import annotations

import json

import pytest

from server.chat.template import ChatTemplate
from server.chat.tool_format import HERMES, LLAMA3_JSON, format_for_template
from server.chat.tool_parser import (
    CallArguments,
    CallStart,
    Content,
    ToolCallParser,
    ToolEvent,
    parse_tool_calls,
)
from server.chat.tools import Tool, ToolChoice, plan_tools, render_chat
from server.errors import InvalidRequest, UnsupportedFeature

WEATHER = Tool(
    "get_weather",
    "Weather in a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
CLOCK = Tool("get_time", None, None)
CHATML = ChatTemplate(None)
NATIVE = ChatTemplate(
    "{% if tools %}TOOLS:{{ tools | tojson }}\n{% endif %}"
    "{% for m in messages %}[{{ m.role }}]"
    "{% if m.tool_calls %}{% for c in m.tool_calls %}CALL {{ c.function.name }} "
    "{{ c.function.arguments | tojson }}{% endfor %}{% endif %}"
    "{{ m.content }}{% if m.name %}({{ m.name }}){% endif %}\n{% endfor %}"
    "<tool_call>"
)
HISTORY = [
    {"role": "user", "content": "Weather in Paris and Rome?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            },
            {
                "id": "call_2",
                "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": "Rome"}},
            },
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
    {"role": "tool", "tool_call_id": "call_2", "content": "24C"},
]


def feed_all(parser: ToolCallParser, text: str, step: int) -> list[ToolEvent]:
    events: list[ToolEvent] = []
    for i in range(0, len(text), step):
        events += parser.feed(text[i : i + step])
    return events + parser.finish()


CALLS = (
    "Let me check.\n"
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Pa\\"ris}", "n": [1, {"a": 2}]}}'
    '\n</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'
)


@pytest.mark.parametrize("step", [1, 2, 3, 7, 1000])
def test_parser_splits_content_and_calls_whatever_the_chunking(step: int) -> None:
    events = feed_all(ToolCallParser(HERMES), CALLS, step)
    content = "".join(e.text for e in events if isinstance(e, Content))
    starts = [e for e in events if isinstance(e, CallStart)]
    args: dict[int, str] = {}
    for e in events:
        if isinstance(e, CallArguments):
            args[e.index] = args.get(e.index, "") + e.text
    assert content == "Let me check.\n"
    assert [(s.index, s.name) for s in starts] == [(0, "get_weather"), (1, "get_time")]
    assert json.loads(args[0]) == {"city": 'Pa"ris}', "n": [1, {"a": 2}]}
    assert json.loads(args[1]) == {}


def test_parse_tool_calls_whole_text() -> None:
    content, calls = parse_tool_calls(CALLS, HERMES)
    assert content == "Let me check.\n"
    assert [c.name for c in calls] == ["get_weather", "get_time"]
    assert all(c.complete for c in calls)


def test_text_that_only_looks_like_a_call_stays_content() -> None:
    for text in ["a < b", "x <tool", "<tool_call> oops, not JSON", "plain text"]:
        content, calls = parse_tool_calls(text, HERMES)
        assert content == text and not calls


def test_truncated_call_is_kept_incomplete() -> None:
    content, calls = parse_tool_calls('<tool_call>\n{"name": "f", "arguments": {"a": "x', HERMES)
    assert content == "" and calls[0].name == "f"
    assert calls[0].arguments == '{"a": "x' and not calls[0].complete


def test_llama3_json_calls_only_open_the_message() -> None:
    assert parse_tool_calls(' {"name": "f", "parameters": {"a": 1}}', LLAMA3_JSON)[1][0].name == "f"
    text = 'I would call {"name": "f", "parameters": {}}'
    assert parse_tool_calls(text, LLAMA3_JSON) == (text, [])


def test_format_detection() -> None:
    assert format_for_template(CHATML.source, False) is HERMES
    assert format_for_template("{{ tools }} <tool_call>", True) is HERMES
    llama = '{{ tools }} Respond with {"name": function name, "parameters": ...} <|python_tag|>'
    assert format_for_template(llama, True) is LLAMA3_JSON


def test_required_plan_forces_calls_of_allowed_functions() -> None:
    plan = plan_tools([WEATHER, CLOCK], ToolChoice("required", ("get_time",)), CHATML)
    assert plan is not None and plan.triggers == ()
    assert "get_time" in plan.grammar and '\\"get_weather' not in plan.grammar
    assert plan.grammar.splitlines()[-1] != ""  # a complete grammar text


def test_auto_plan_is_lazy_on_the_trigger() -> None:
    plan = plan_tools([WEATHER], ToolChoice("auto"), CHATML)
    assert plan is not None and plan.triggers == (HERMES.trigger_pattern(),)
    assert "(<tool_call>)" in plan.triggers[0]


def test_auto_with_a_response_format_chooses_by_grammar() -> None:
    plan = plan_tools([WEATHER], ToolChoice("auto"), CHATML, content_schema={"type": "object"})
    assert plan is not None and plan.triggers == ()
    root = next(line for line in plan.grammar.splitlines() if line.startswith("root ::="))
    assert "calls" in root and "|" in root


def test_parallel_false_allows_one_call() -> None:
    one = plan_tools([WEATHER], ToolChoice("required"), CHATML, parallel=False)
    many = plan_tools([WEATHER], ToolChoice("required"), CHATML)
    assert one is not None and many is not None
    assert "calls ::= call\n" in one.grammar
    assert "calls ::= call (" in many.grammar


def test_none_and_no_tools_make_no_plan() -> None:
    assert plan_tools([WEATHER], ToolChoice("none"), CHATML) is None
    assert plan_tools([], ToolChoice("auto"), CHATML) is None


def test_plan_errors_name_the_field() -> None:
    with pytest.raises(InvalidRequest) as info:
        plan_tools([WEATHER], ToolChoice("required", ("nope",)), CHATML)
    assert info.value.param == "tool_choice"
    with pytest.raises(InvalidRequest) as info:
        plan_tools([WEATHER, WEATHER], ToolChoice("auto"), CHATML)
    assert info.value.param == "tools"
    bad = Tool(
        "f", None, {"type": "object", "properties": {"n": {"type": "integer", "maximum": 3}}}
    )
    with pytest.raises(UnsupportedFeature) as unsupported:
        plan_tools([WEATHER, bad], ToolChoice("auto"), CHATML)
    assert unsupported.value.param == "tools.1.function.parameters"
    assert "'maximum'" in unsupported.value.message


def test_generic_prompt_describes_tools_and_rewrites_history() -> None:
    plan = plan_tools([WEATHER], ToolChoice("required", ("get_weather",)), CHATML)
    prompt = render_chat(CHATML, HISTORY, plan)
    assert prompt.startswith("<|im_start|>system\n# Tools")
    assert '"name": "get_weather"' in prompt and "You must call the function get_weather" in prompt
    assert (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
        in prompt
    )
    assert '{"name": "get_weather", "arguments": {"city": "Rome"}}' in prompt
    # both results in one user turn, in order
    assert (
        "<|im_start|>user\n<tool_response>\n18C\n</tool_response>\n<tool_response>\n24C" in prompt
    )
    assert prompt.endswith("<|im_start|>assistant\n")


def test_generic_prompt_joins_an_existing_system_message() -> None:
    plan = plan_tools([WEATHER], ToolChoice("auto"), CHATML)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    prompt = render_chat(CHATML, messages, plan)
    assert prompt.startswith("<|im_start|>system\nBe brief.\n\n# Tools")
    assert prompt.count("<|im_start|>system") == 1


def test_history_without_tools_still_renders_calls_for_plain_templates() -> None:
    prompt = render_chat(CHATML, HISTORY, None)
    assert "# Tools" not in prompt and "<tool_response>" in prompt


def test_native_template_gets_tools_and_objects() -> None:
    assert NATIVE.supports_tools
    plan = plan_tools([WEATHER], ToolChoice("auto"), NATIVE)
    prompt = render_chat(NATIVE, HISTORY, plan)
    assert prompt.startswith("TOOLS:[") and '"name": "get_weather"' in prompt
    assert 'CALL get_weather {"city": "Paris"}' in prompt  # arguments as an object
    assert "[tool]18C(get_weather)" in prompt  # the function name found from the call id
