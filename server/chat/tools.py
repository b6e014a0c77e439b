"""Tools for chat: the plan for one request (format, grammar, triggers) and prompt rendering.

Engine-neutral: both API dialects build `Tool` / `ToolChoice` from their wire schemas, call
`plan_tools` and `render_chat`, and read calls back with `server.chat.tool_parser`.

Prompt: a template that renders `tools` itself gets them (and the history in the shape
Hugging Face templates expect). Any other template gets one generic system-prompt block
(documented in docs/openai-compatibility.md) and history rewritten into the same `<tool_call>`
/ `<tool_response>` text the model is asked to write.

Grammar: `required` and a named function force the output to be calls of the allowed
functions whose arguments match their JSON schemas; `auto` arms the same grammar lazily, on
the format's trigger text, so the model may answer in prose instead.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from server.chat.template import ChatTemplate
from server.chat.tool_calls import CallReader, CallWatch, read_calls
from server.chat.tool_format import HERMES, ToolFormat, format_for_template
from server.chat.tool_parser import ParsedToolCall
from server.engine.grammar import GrammarBuilder, literal
from server.errors import InvalidRequest

ToolMode = Literal["auto", "none", "required"]


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the model may call; `parameters` is a JSON schema for its arguments."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """OpenAI's function-tool shape, as chat templates and the generic prompt show it."""
        function: dict[str, Any] = {"name": self.name}
        if self.description:
            function["description"] = self.description
        function["parameters"] = self.parameters or {"type": "object", "properties": {}}
        return {"type": "function", "function": function}


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """auto / none / required; `names` limits calls to those functions (a named choice)."""

    mode: ToolMode = "auto"
    names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ToolPlan:
    """What one request with tools needs: how to prompt, constrain and parse."""

    tools: tuple[Tool, ...]
    choice: ToolChoice
    fmt: ToolFormat
    native: bool  # the model's own template renders the tools
    grammar: str
    triggers: tuple[str, ...]  # lazy-grammar trigger patterns; empty = the grammar applies at once
    max_calls: int = 1  # calls one answer may hold (the grammar allows no more)

    def reader(self) -> CallReader:
        """A reader of this plan's answers: content and distinct calls, as clients get them."""
        return CallReader(self.fmt, self.max_calls)

    def read(self, text: str) -> tuple[str, list[ParsedToolCall]]:
        """The content and the distinct calls of a whole answer."""
        return read_calls(text, self.fmt, self.max_calls)

    def watch(self) -> CallWatch:
        """The engine's stop check for this plan: generation ends once the calls are complete."""
        return CallWatch(self.fmt, self.max_calls)


def plan_tools(
    tools: Sequence[Tool],
    choice: ToolChoice,
    template: ChatTemplate,
    *,
    parallel: bool = True,
    max_calls: int = 16,
    content_schema: dict[str, Any] | None = None,
    param: str = "tools",
    content_param: str = "response_format",
) -> ToolPlan | None:
    """The plan for `tools` under `choice`; None when no call can happen (no tools, `none`).

    With `parallel` an answer may hold up to `max_calls` calls, else one.
    `content_schema` (a response format) makes `auto` a choice between a call and content valid
    against it, decided by one grammar instead of a lazy trigger. `param` / `content_param` name
    the request fields that errors point at.
    Raises InvalidRequest for duplicate or unknown function names, UnsupportedFeature for a
    parameters schema the grammar cannot express.
    """
    if not tools or choice.mode == "none":
        return None
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        raise InvalidRequest("tools: function names must be unique", param=param)
    unknown = [n for n in choice.names if n not in names]
    if unknown:
        raise InvalidRequest(
            f"tool_choice names the function '{unknown[0]}', which is not in tools",
            param="tool_choice",
        )
    allowed = [(i, t) for i, t in enumerate(tools) if not choice.names or t.name in choice.names]
    native = template.supports_tools
    fmt = format_for_template(template.source, native)
    builder = GrammarBuilder()
    limit = max(1, max_calls) if parallel and fmt.parallel else 1
    calls = _calls_rule(builder, allowed, fmt, max_calls=limit, param=param)
    triggers: tuple[str, ...] = ()
    if choice.mode == "required":
        root = calls
    elif content_schema is not None:
        content = builder.add_schema(content_schema, "content", param=content_param)
        root = f"{content} | {calls}"
    else:
        root, triggers = calls, (fmt.trigger_pattern(),)
    return ToolPlan(
        tools=tuple(tools),
        choice=choice,
        fmt=fmt,
        native=native,
        grammar=builder.build(root),
        triggers=triggers,
        max_calls=limit,
    )


def _calls_rule(
    builder: GrammarBuilder,
    allowed: list[tuple[int, Tool]],
    fmt: ToolFormat,
    *,
    max_calls: int,
    param: str,
) -> str:
    """`calls`: one to `max_calls` calls; each call's arguments end in the converter's optional
    blank before the close (tool_parser reads exactly that layout)."""
    alternatives = []
    for i, tool in allowed:
        schema = tool.parameters or {"type": "object"}
        args = builder.add_schema(schema, f"args-{i}", param=f"{param}.{i}.function.parameters")
        head = literal(f"{fmt.call_open}{tool.name}{fmt.call_middle}")
        alternatives.append(
            builder.add_rule(f"call-{i}", f"{head} {args} {literal(fmt.call_close)}")
        )
    builder.add_rule("call", " | ".join(alternatives))
    more = max_calls - 1
    body = f"call ({literal(fmt.separator)} call){{0,{more}}}" if more else "call"
    return builder.add_rule("calls", body)


def render_chat(
    template: ChatTemplate,
    messages: list[dict[str, Any]],
    plan: ToolPlan | None = None,
    *,
    add_generation_prompt: bool = True,
) -> str:
    """The prompt for `messages` (OpenAI-shaped dicts: role, content, tool_calls, tool_call_id).

    Assistant `tool_calls` carry `{"id", "type": "function", "function": {"name",
    "arguments"}}` with arguments as JSON text or an object. Raises InvalidRequest when the
    template refuses the messages.
    """
    if template.supports_tools:
        tools = [t.as_dict() for t in plan.tools] if plan else None
        return template.render(
            _native_history(messages), add_generation_prompt=add_generation_prompt, tools=tools
        )
    fmt = plan.fmt if plan else HERMES
    history = _generic_history(messages, fmt)
    if plan is not None:
        history = _with_tool_prompt(history, plan)
    return template.render(history, add_generation_prompt=add_generation_prompt)


def generic_tool_prompt(plan: ToolPlan) -> str:
    """The system-prompt block that describes the tools to a template that cannot."""
    listing = "\n".join(json.dumps(t.as_dict(), ensure_ascii=False) for t in plan.tools)
    lines = [
        "# Tools",
        "",
        "You may call one or more functions to help with the user's request. The functions "
        "are described by JSON schemas inside <tools></tools>:",
        "<tools>",
        listing,
        "</tools>",
        "",
        "To call a function, answer with a JSON object holding the function's name and its "
        "arguments, inside <tool_call></tool_call> tags:",
        "<tool_call>",
        '{"name": <function-name>, "arguments": <arguments-json-object>}',
        "</tool_call>",
    ]
    if plan.choice.names and len(plan.choice.names) == 1:
        lines += ["", f"You must call the function {plan.choice.names[0]}."]
    elif plan.choice.mode == "required":
        lines += ["", "You must call at least one function."]
    return "\n".join(lines)


def _with_tool_prompt(history: list[dict[str, Any]], plan: ToolPlan) -> list[dict[str, Any]]:
    block = generic_tool_prompt(plan)
    if history and history[0]["role"] == "system":
        first = dict(history[0])
        first["content"] = f"{first['content']}\n\n{block}" if first["content"] else block
        return [first, *history[1:]]
    return [{"role": "system", "content": block}, *history]


def _arguments_text(arguments: Any) -> str:
    if isinstance(arguments, str):
        return arguments
    return json.dumps(arguments, ensure_ascii=False)


def _arguments_object(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            return arguments
    return arguments


def _generic_history(messages: list[dict[str, Any]], fmt: ToolFormat) -> list[dict[str, Any]]:
    """Tool calls become the text the model writes; tool results become one user turn each run."""
    out: list[dict[str, Any]] = []
    for message in messages:
        role = message["role"]
        if role == "assistant" and message.get("tool_calls"):
            calls = [
                fmt.render_call(c["function"]["name"], _arguments_text(c["function"]["arguments"]))
                for c in message["tool_calls"]
            ]
            text = (message.get("content") or "").strip()
            out.append(
                {"role": "assistant", "content": "\n".join([text, *calls] if text else calls)}
            )
        elif role == "tool":
            block = f"<tool_response>\n{message.get('content') or ''}\n</tool_response>"
            previous = out[-1] if out else None
            if previous is not None and previous.get("_tool_results"):
                previous["content"] += "\n" + block
            else:
                out.append({"role": "user", "content": block, "_tool_results": True})
        else:
            out.append({k: v for k, v in message.items() if k in ("role", "content", "name")})
    for message in out:
        message.pop("_tool_results", None)
    return out


def _native_history(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The shape Hugging Face chat templates expect: arguments as objects, tool names kept."""
    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for message in messages:
        message = dict(message)
        if message.get("tool_calls"):
            calls = []
            for call in message["tool_calls"]:
                function = call["function"]
                names[call.get("id") or ""] = function["name"]
                calls.append(
                    {
                        "id": call.get("id") or "",
                        "type": "function",
                        "function": {
                            "name": function["name"],
                            "arguments": _arguments_object(function["arguments"]),
                        },
                    }
                )
            message["tool_calls"] = calls
            message.setdefault("content", "")
            if message["content"] is None:
                message["content"] = ""
        elif message["role"] == "tool" and "name" not in message:
            name = names.get(message.get("tool_call_id") or "")
            if name:
                message["name"] = name
        out.append(message)
    return out
