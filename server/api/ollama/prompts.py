"""How a model is prompted on the Ollama API: its Modelfile layers, templates, format and tools."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from server.api.ollama.protocol import Message, ToolCall, ToolCallFunction
from server.chat.gotemplate import GoTemplate
from server.chat.sandbox import RenderLimits
from server.chat.template import ChatTemplate
from server.chat.tools import Tool, ToolChoice, ToolPlan, plan_tools, render_chat
from server.engine import grammar
from server.errors import InvalidRequest
from server.registry.layers import ModelExtras, read_extras
from server.scheduler import ModelManager


def format_grammar(fmt: Any) -> str | None:
    """GBNF for Ollama's `format`: "json", a JSON schema object, or nothing.

    Raises InvalidRequest for any other value, UnsupportedFeature for a schema the converter
    cannot express.
    """
    if fmt is None or fmt == "":
        return None
    if fmt == "json":
        return grammar.json_grammar()
    if isinstance(fmt, dict):
        return grammar.schema_grammar(fmt)
    raise InvalidRequest('format must be "json" or a JSON schema object', param="format")


@dataclass(frozen=True)
class ToolSupport:
    """The request's tool plan: its grammar, and a parser splitting output into text and calls."""

    plan: ToolPlan

    @property
    def grammar(self) -> str:
        return self.plan.grammar

    @property
    def triggers(self) -> tuple[str, ...]:
        return self.plan.triggers

    def parse(self, text: str) -> tuple[str, list[ToolCall]]:
        content, calls = self.plan.read(text)
        return content, [
            ToolCall(function=ToolCallFunction(name=c.name, arguments=_as_dict(c.arguments)))
            for c in calls
        ]


def _tools_of(tools: list[dict[str, Any]]) -> list[Tool]:
    """Ollama sends OpenAI's function-tool shape; anything else is a 400 naming the entry."""
    out = []
    for i, item in enumerate(tools):
        function = item.get("function") if isinstance(item, dict) else None
        if (
            not isinstance(function, dict)
            or not isinstance(function.get("name"), str)
            or not function["name"]
        ):
            raise InvalidRequest(f"tools[{i}] needs a function with a name", param=f"tools.{i}")
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise InvalidRequest(
                f"tools[{i}].function.parameters must be an object", param=f"tools.{i}"
            )
        out.append(
            Tool(
                name=function["name"],
                description=function.get("description"),
                parameters=parameters,
            )
        )
    return out


def _message_dict(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "type": "function",
                "function": {"name": c.function.name, "arguments": c.function.arguments},
            }
            for c in message.tool_calls
        ]
    if message.tool_name:
        out["name"] = message.tool_name
    return out


@dataclass(frozen=True)
class ModelPrompting:
    """The Modelfile layers of one model (template, system, parameters) and how to use them."""

    name: str
    extras: ModelExtras
    limits: RenderLimits = field(default_factory=RenderLimits)

    @classmethod
    async def of(cls, manager: ModelManager, name: str) -> ModelPrompting:
        """Raises ModelNotFound, InvalidName."""
        resolved = await asyncio.to_thread(manager.registry.resolve, name)
        extras = await asyncio.to_thread(read_extras, manager.registry, resolved)
        s = manager.settings
        limits = RenderLimits(s.template_timeout_seconds, s.template_max_chars)
        return cls(name=resolved.name, extras=extras, limits=limits)

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.extras.params)

    @property
    def stops(self) -> tuple[str, ...]:
        stop = self.extras.params.get("stop")
        if isinstance(stop, str):
            return (stop,)
        return tuple(str(s) for s in stop) if isinstance(stop, list) else ()

    def _go_template(self, override: str | None) -> GoTemplate | None:
        source = override or self.extras.template
        if not source:
            return None
        return GoTemplate(source, limits=self.limits, from_request=bool(override))

    # render_chat and render_generate run a template: call them off the event loop.

    def render_chat(
        self,
        template: ChatTemplate,
        messages: Sequence[Message],
        tools: ToolSupport | None,
    ) -> str:
        """The prompt for a chat: the model's GGUF (Jinja) template, or its Modelfile template."""
        dicts = [_message_dict(m) for m in messages]
        if self.extras.system and not any(m.role == "system" for m in messages):
            dicts.insert(0, {"role": "system", "content": self.extras.system})
        go = self._go_template(None)
        if go is None:
            return render_chat(template, dicts, tools.plan if tools else None)
        return _render_go_chat(
            go, dicts, [t.as_dict() for t in tools.plan.tools] if tools else None
        )

    def render_generate(
        self,
        template: ChatTemplate,
        prompt: str,
        *,
        system: str | None,
        template_override: str | None,
        raw: bool,
    ) -> str:
        """The prompt for /api/generate: raw text, a Go template, or the model's chat template."""
        if raw:
            return prompt
        sys_text = system if system is not None else self.extras.system
        go = self._go_template(template_override)
        if go is not None:
            messages = ([{"role": "system", "content": sys_text}] if sys_text else []) + [
                {"role": "user", "content": prompt}
            ]
            return go.render(
                System=sys_text or "", Prompt=prompt, Response="", Messages=_go_messages(messages)
            )
        msgs = ([{"role": "system", "content": sys_text}] if sys_text else []) + [
            {"role": "user", "content": prompt}
        ]
        return template.render(msgs, add_generation_prompt=True)

    def tool_support(
        self,
        tools: list[dict[str, Any]] | None,
        template: ChatTemplate,
        fmt: Any,
        choice: str | dict[str, Any] = "auto",
        *,
        max_calls: int,
    ) -> ToolSupport | None:
        """The tool plan for this request (`auto`: the model chooses between text and calls).

        With a JSON-schema `format`, the answer is either a call or content valid against it.
        Raises InvalidRequest, UnsupportedFeature.
        """
        if not tools:
            return None
        schema = fmt if isinstance(fmt, dict) else None
        plan = plan_tools(
            _tools_of(tools),
            _choice_of(choice),
            template,
            max_calls=max_calls,
            content_schema=schema,
        )
        return ToolSupport(plan) if plan is not None else None


def _choice_of(choice: str | dict[str, Any]) -> ToolChoice:
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest("tool_choice needs function.name", param="tool_choice")
        return ToolChoice("required", (name,))
    return ToolChoice(choice)  # type: ignore[arg-type]


def _as_dict(arguments: Any) -> dict[str, Any]:
    if isinstance(arguments, dict):
        return arguments
    try:
        value = json.loads(arguments)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _go_messages(dicts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"Role": d["role"], "Content": d.get("content", ""), "ToolCalls": d.get("tool_calls")}
        for d in dicts
    ]


def _render_go_chat(
    go: GoTemplate, dicts: list[dict[str, Any]], tools: list[dict[str, Any]] | None
) -> str:
    """Messages-aware templates see every message; legacy ones render turn by turn, as Ollama does."""
    system = "\n".join(d["content"] for d in dicts if d["role"] == "system")
    if go.uses_messages:
        return go.render(
            System=system, Messages=_go_messages(dicts), Tools=tools or [], Prompt="", Response=""
        )
    turns: list[tuple[str, str]] = []
    prompt: str | None = None
    for d in dicts:
        if d["role"] == "user":
            if prompt is not None:
                turns.append((prompt, ""))
            prompt = d["content"]
        elif d["role"] == "assistant" and prompt is not None:
            turns.append((prompt, d["content"]))
            prompt = None
    out = []
    for i, (p, r) in enumerate(turns):
        out.append(go.render(System=system if i == 0 else "", Prompt=p, Response=r))
    out.append(go.render(System=system if not turns else "", Prompt=prompt or "", Response=""))
    return "".join(out)


__all__ = ["ModelPrompting", "ToolSupport", "format_grammar"]
