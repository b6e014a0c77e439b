"""/api/chat and /api/generate: Ollama requests -> prompt + engine request -> NDJSON or one object."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from server.api.lifecycle import Lifecycle, Prepared, Run, tokenize
from server.api.ollama.ndjson import SpliceTemplate, timestamp
from server.api.ollama.options import keep_alive_seconds, split_options
from server.api.ollama.prompts import ModelPrompting, ToolSupport, format_grammar
from server.api.ollama.protocol import (
    ChatRequest,
    ChatResponse,
    GenerateRequest,
    GenerateResponse,
    GenerationResponse,
    OutMessage,
    ToolCall,
)
from server.api.streams import Collected
from server.chat.template import ChatTemplate
from server.engine.types import GenerationRequest, Usage, check_token_ids
from server.errors import GGUFServeError, InvalidRequest, ServerShuttingDown, UnsupportedFeature
from server.scheduler import LoadedModel

_NS = 1_000_000_000

R = TypeVar("R", bound=GenerationResponse)
Render = Callable[[ModelPrompting, ChatTemplate, ToolSupport | None], str]


@dataclass
class OllamaRun:
    """What the encoders of one chat/generate answer need besides the engine's events."""

    prompt_tokens: list[int]
    tools: ToolSupport | None = None
    created_at: str = field(default_factory=timestamp)


def _timings(run: Run[OllamaRun], usage: Usage | None) -> dict[str, int]:
    """The statistics of the final object (nanoseconds), as Ollama reports them."""
    u = usage or Usage(prompt_tokens=len(run.info.prompt_tokens), completion_tokens=0)
    return {
        "total_duration": int(run.elapsed * _NS),
        "load_duration": int(run.load_seconds * _NS),
        "prompt_eval_count": u.prompt_tokens,
        "prompt_eval_duration": int(u.prompt_seconds * _NS),
        "eval_count": u.completion_tokens,
        "eval_duration": int(u.generation_seconds * _NS),
    }


class OllamaGeneration:
    """Ollama's chat and generate: prepare the engine request, encode NDJSON or one object."""

    def __init__(self, lifecycle: Lifecycle, *, max_tool_calls: int) -> None:
        self.lifecycle = lifecycle
        self.max_tool_calls = max_tool_calls

    async def load_only(
        self,
        model: str,
        options: dict[str, Any] | None,
        keep_alive: Any,
        answer: type[R],
    ) -> R:
        """Ollama's empty-prompt request: load the model, or unload it when keep_alive is 0."""
        seconds = keep_alive_seconds(keep_alive)
        if seconds == 0:
            await self.lifecycle.manager.unload(model)
            name, reason = model, "unload"
        else:
            prompting = await ModelPrompting.of(self.lifecycle.manager, model)
            split = split_options(options, prompting.params)
            async with self.lifecycle.hold(model, overrides=split.load, keep_alive=seconds) as (
                lease,
                _,
            ):
                name, reason = lease.model.name, "load"
        return answer(model=name, created_at=timestamp(), done=True, done_reason=reason)

    async def _start(
        self,
        model: str,
        render: Render,
        options: dict[str, Any] | None,
        keep_alive: Any,
        fmt: Any,
        context: list[int] | None = None,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] = "auto",
    ) -> Run[OllamaRun]:
        seconds = keep_alive_seconds(keep_alive)
        prompting = await ModelPrompting.of(self.lifecycle.manager, model)
        split = split_options(options, prompting.params)
        grammar = format_grammar(fmt)

        async def prepare(loaded: LoadedModel) -> Prepared[OllamaRun]:
            tool_support = prompting.tool_support(
                tools, loaded.template, fmt, tool_choice, max_calls=self.max_tool_calls
            )
            triggers: tuple[str, ...] = ()
            constraint = grammar
            if tool_support is not None:
                constraint, triggers = tool_support.grammar, tool_support.triggers
            # Off the event loop: a template is code (the model's or the request's) that runs
            # until its budget (template_timeout_seconds) ends it.
            text = await asyncio.to_thread(render, prompting, loaded.template, tool_support)
            tokens = await tokenize(loaded.engine, text)
            if context:
                check_token_ids(context, loaded.engine.n_vocab, param="context")
                tokens = [*context, *tokens]
            request = GenerationRequest(
                prompt_tokens=tokens,
                sampling=split.runtime.sampling(grammar=constraint, triggers=triggers),
                max_tokens=split.runtime.max_tokens(),
                stop=tuple(split.runtime.stop) or prompting.stops,
                watch=tool_support.plan.watch if tool_support is not None else None,
            )
            return Prepared([request], OllamaRun(tokens, tool_support))

        return await self.lifecycle.start(
            model, prepare, api="ollama", overrides=split.load, keep_alive=seconds
        )

    # ---- /api/chat --------------------------------------------------------------------------

    async def prepare_chat(self, body: ChatRequest) -> Run[OllamaRun]:
        """Raises every 4xx/5xx before the first byte: unknown model, bad options, long prompt."""
        if body.think:
            raise UnsupportedFeature(f"'{body.model}' does not support thinking", param="think")
        messages = body.messages or []
        if any(m.images for m in messages):
            raise UnsupportedFeature(f"'{body.model}' does not support images", param="images")

        def render(prompting: ModelPrompting, template: Any, tools: ToolSupport | None) -> str:
            return prompting.render_chat(template, messages, tools)

        return await self._start(
            body.model,
            render,
            body.options,
            body.keep_alive,
            body.format,
            tools=body.tools,
            tool_choice=body.tool_choice,
        )

    async def chat_once(self, run: Run[OllamaRun]) -> ChatResponse:
        result = await _result(run)
        text, calls = result.text, list[ToolCall]()
        if run.info.tools is not None:
            text, calls = run.info.tools.parse(text)
        return ChatResponse(
            model=run.model,
            created_at=timestamp(),
            message=OutMessage(content=text, tool_calls=calls or None),
            done=True,
            done_reason=result.finish_reason or "stop",
            **_timings(run, result.usage),
        )

    def chat_stream(self, run: Run[OllamaRun]) -> AsyncIterator[str]:
        return run.stream(_chat_lines(run), _error_line)

    # ---- /api/generate ----------------------------------------------------------------------

    async def prepare_generate(self, body: GenerateRequest) -> Run[OllamaRun]:
        if body.think:
            raise UnsupportedFeature(f"'{body.model}' does not support thinking", param="think")
        if body.images:
            raise UnsupportedFeature(f"'{body.model}' does not support images", param="images")
        if body.suffix:
            raise UnsupportedFeature(f"'{body.model}' does not support insert", param="suffix")

        def render(prompting: ModelPrompting, template: Any, _tools: ToolSupport | None) -> str:
            return prompting.render_generate(
                template,
                body.prompt or "",
                system=body.system,
                template_override=body.template,
                raw=body.raw,
            )

        return await self._start(
            body.model, render, body.options, body.keep_alive, body.format, context=body.context
        )

    async def generate_once(self, run: Run[OllamaRun]) -> GenerateResponse:
        result = await _result(run)
        return GenerateResponse(
            model=run.model,
            created_at=timestamp(),
            response=result.text,
            done=True,
            done_reason=result.finish_reason or "stop",
            context=[*run.info.prompt_tokens, *result.completion_ids],
            **_timings(run, result.usage),
        )

    def generate_stream(self, run: Run[OllamaRun]) -> AsyncIterator[str]:
        return run.stream(_generate_lines(run), _error_line)


async def _chat_lines(run: Run[OllamaRun]) -> AsyncIterator[str]:
    tools = run.info.tools
    piece = SpliceTemplate(
        ChatResponse(
            model=run.model,
            created_at=run.info.created_at,
            message=OutMessage(content=SpliceTemplate.marker()),
            done=False,
        )
    )
    buffered: list[str] = []  # with tools the text is held back: it may be a call
    async for _, event in run.events():
        if event.text:
            if tools is not None:
                buffered.append(event.text)
            else:
                yield piece.render(event.text)
        if event.finish_reason is not None:
            calls: list[ToolCall] = []
            if tools is not None:
                text, calls = tools.parse("".join(buffered))
                if text:
                    yield piece.render(text)
            final = ChatResponse(
                model=run.model,
                created_at=timestamp(),
                message=OutMessage(content="", tool_calls=calls or None),
                done=True,
                done_reason=event.finish_reason,
                **_timings(run, event.usage),
            )
            yield final.model_dump_json(exclude_none=True)


async def _generate_lines(run: Run[OllamaRun]) -> AsyncIterator[str]:
    piece = SpliceTemplate(
        GenerateResponse(
            model=run.model,
            created_at=run.info.created_at,
            response=SpliceTemplate.marker(),
            done=False,
        )
    )
    async for _, event in run.events():
        if event.text:
            yield piece.render(event.text)
        if event.finish_reason is not None:
            final = GenerateResponse(
                model=run.model,
                created_at=timestamp(),
                response="",
                done=True,
                done_reason=event.finish_reason,
                context=[*run.info.prompt_tokens, *event.completion_ids],
                **_timings(run, event.usage),
            )
            yield final.model_dump_json(exclude_none=True)


async def _result(run: Run[OllamaRun]) -> Collected:
    (result,) = await run.results()
    if result.finish_reason is None:
        raise InvalidRequest("generation produced no result")
    return result


def _error_line(exc: GGUFServeError) -> str:
    if isinstance(exc, ServerShuttingDown):  # the last line: tell line readers it is done
        return json.dumps({"error": exc.message, "done": True, "done_reason": "shutdown"})
    return json.dumps({"error": exc.message})
