"""A chat request's wire fields -> engine-neutral messages, tools, output constraints and prompt."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server.api.openai.chat_protocol import ChatCompletionRequest, ChatMessage, MediaPart
from server.chat.template import ChatTemplate
from server.chat.tools import Tool, ToolChoice, ToolPlan, plan_tools, render_chat
from server.engine.grammar import json_grammar, schema_grammar
from server.errors import InvalidRequest, UnsupportedFeature

_ANY_OBJECT: dict[str, Any] = {"type": "object"}
_SCHEMA_PARAM = "response_format.json_schema.schema"


@dataclass(frozen=True)
class ChatInputs:
    """What a chat request asks for, validated before any model is touched."""

    messages: list[dict[str, Any]]
    tools: list[Tool]
    choice: ToolChoice
    parallel: bool
    content_schema: dict[str, Any] | None  # response_format: what the content must match
    top_logprobs: int | None  # None: no logprobs


@dataclass(frozen=True)
class ChatPrompt:
    """The rendered prompt and the output constraints for one model's template."""

    text: str
    plan: ToolPlan | None
    grammar: str | None
    triggers: tuple[str, ...]


def read_chat(body: ChatCompletionRequest) -> ChatInputs:
    """Raises InvalidRequest / UnsupportedFeature naming the offending field."""
    tools, choice = _tools(body)
    if body.top_logprobs is not None and not body.logprobs:
        raise InvalidRequest("top_logprobs needs logprobs to be true", param="top_logprobs")
    return ChatInputs(
        messages=[_message(m, i) for i, m in enumerate(body.messages)],
        tools=tools,
        choice=choice,
        parallel=body.parallel_tool_calls is not False,
        content_schema=_content_schema(body),
        top_logprobs=(body.top_logprobs or 0) if body.logprobs else None,
    )


def build_prompt(inputs: ChatInputs, template: ChatTemplate, *, max_calls: int) -> ChatPrompt:
    """Render for `template` and pick the grammar (at most `max_calls` parallel tool calls);
    raises UnsupportedFeature for a schema the grammar cannot express, InvalidRequest when the
    template refuses the messages."""
    plan = plan_tools(
        inputs.tools,
        inputs.choice,
        template,
        parallel=inputs.parallel,
        max_calls=max_calls,
        content_schema=inputs.content_schema,
        content_param=_SCHEMA_PARAM,
    )
    text = render_chat(template, inputs.messages, plan)
    if plan is not None:
        return ChatPrompt(text, plan, plan.grammar, plan.triggers)
    schema = inputs.content_schema
    if schema is None:
        return ChatPrompt(text, None, None, ())
    grammar = (
        json_grammar() if schema is _ANY_OBJECT else schema_grammar(schema, param=_SCHEMA_PARAM)
    )
    return ChatPrompt(text, None, grammar, ())


def _message(message: ChatMessage, index: int) -> dict[str, Any]:
    if isinstance(message.content, list) and any(isinstance(p, MediaPart) for p in message.content):
        raise UnsupportedFeature(
            "only text content parts are supported by this server", param=f"messages.{index}"
        )
    role = "system" if message.role == "developer" else message.role
    out: dict[str, Any] = {"role": role, "content": message.text()}
    if message.name:
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.function.name, "arguments": call.function.arguments},
            }
            for call in message.tool_calls
        ]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out


def _tools(body: ChatCompletionRequest) -> tuple[list[Tool], ToolChoice]:
    tools: list[Tool] = []
    for i, tool in enumerate(body.tools or []):
        if tool.type != "function" or tool.function is None:
            raise UnsupportedFeature(
                f"tools.{i}: only function tools are supported (not {tool.type!r})",
                param=f"tools.{i}.type",
            )
        f = tool.function
        tools.append(Tool(f.name, f.description, f.parameters))
    raw = body.tool_choice
    if raw is None:
        choice = ToolChoice("auto" if tools else "none")
    elif isinstance(raw, str):
        choice = ToolChoice(raw)
    elif raw.type == "function" and raw.function is not None:
        choice = ToolChoice("required", (raw.function.name,))
    elif raw.type == "allowed_tools" and raw.allowed_tools is not None:
        allowed = raw.allowed_tools
        names = tuple(t.function.name for t in allowed.tools if t.function is not None)
        choice = ToolChoice(allowed.mode, names)
    else:
        raise UnsupportedFeature(
            f"tool_choice of type {raw.type!r} is not supported", param="tool_choice"
        )
    if choice.mode != "none" and (choice.mode == "required" or choice.names) and not tools:
        raise InvalidRequest("tool_choice names tools, but the request has none", param="tools")
    return tools, choice


def _content_schema(body: ChatCompletionRequest) -> dict[str, Any] | None:
    fmt = body.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return _ANY_OBJECT
    if fmt.json_schema is None:
        raise InvalidRequest(
            "response_format of type json_schema needs a json_schema object",
            param="response_format.json_schema",
        )
    return fmt.json_schema.schema_ or _ANY_OBJECT
