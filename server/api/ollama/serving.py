"""/api/chat and /api/generate: Ollama requests -> prompt + engine request -> NDJSON or one object."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from server.api.ollama.ndjson import SpliceTemplate, timestamp
from server.api.ollama.options import SplitOptions, keep_alive_seconds, split_options
from server.api.ollama.prompts import ModelPrompting, ToolSupport, format_grammar
from server.api.ollama.protocol import (
    ChatRequest,
    ChatResponse,
    GenerateRequest,
    GenerateResponse,
    OutMessage,
    ToolCall,
)
from server.engine.types import GenerationEvent, GenerationRequest, GenerationStream, Usage
from server.errors import GGUFServeError, InvalidRequest, UnsupportedFeature
from server.scheduler import Lease, ModelManager

_NS = 1_000_000_000
_LONG_PROMPT_CHARS = 8192


@dataclass
class Prepared:
    """A queued generation plus what the final object reports."""

    model: str
    created_at: str
    started: float
    load_seconds: float
    lease: Lease
    stream: GenerationStream
    prompt_tokens: list[int]
    tools: ToolSupport | None = None
    closed: bool = field(default=False)

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await self.stream.aclose()
            self.lease.release()

    def timings(self, usage: Usage | None) -> dict[str, int]:
        u = usage or Usage(prompt_tokens=len(self.prompt_tokens), completion_tokens=0)
        return {
            "total_duration": int((time.perf_counter() - self.started) * _NS),
            "load_duration": int(self.load_seconds * _NS),
            "prompt_eval_count": u.prompt_tokens,
            "prompt_eval_duration": int(u.prompt_seconds * _NS),
            "eval_count": u.completion_tokens,
            "eval_duration": int(u.generation_seconds * _NS),
        }


@dataclass
class LoadOnly:
    """A request with no prompt: it only loads (or, with keep_alive 0, unloads) the model."""

    model: str
    done_reason: str


class OllamaGeneration:
    """Runs chat and generate requests against the models the manager loads."""

    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager

    async def _acquire(
        self, model: str, split: SplitOptions, keep_alive: float | None
    ) -> tuple[Lease, float]:
        started = time.perf_counter()
        lease = await self.manager.acquire(model, overrides=split.load, keep_alive=keep_alive)
        return lease, time.perf_counter() - started

    async def load_only(
        self, model: str, options: dict[str, Any] | None, keep_alive: Any
    ) -> LoadOnly:
        """Ollama's empty-prompt request: load the model, or unload it when keep_alive is 0."""
        seconds = keep_alive_seconds(keep_alive)
        if seconds == 0:
            await self.manager.unload(model)
            return LoadOnly(model=model, done_reason="unload")
        prompting = await ModelPrompting.of(self.manager, model)
        split = split_options(options, prompting.params)
        lease, _ = await self._acquire(model, split, seconds)
        name = lease.model.name
        lease.release()
        return LoadOnly(model=name, done_reason="load")

    async def _submit(
        self,
        model: str,
        render: Callable[[ModelPrompting, Any, ToolSupport | None], str],
        options: dict[str, Any] | None,
        keep_alive: Any,
        fmt: Any,
        context: list[int] | None = None,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] = "auto",
    ) -> Prepared:
        started = time.perf_counter()
        seconds = keep_alive_seconds(keep_alive)
        prompting = await ModelPrompting.of(self.manager, model)
        split = split_options(options, prompting.params)
        grammar = format_grammar(fmt)
        lease, load_seconds = await self._acquire(model, split, seconds)
        try:
            loaded = lease.model
            tool_support = prompting.tool_support(tools, loaded.template, fmt, tool_choice)
            triggers: tuple[str, ...] = ()
            if tool_support is not None:
                grammar, triggers = tool_support.grammar, tool_support.triggers
            text = render(prompting, loaded.template, tool_support)
            engine = loaded.engine
            if len(text) > _LONG_PROMPT_CHARS:
                tokens = await asyncio.to_thread(engine.tokenize, text)
            else:
                tokens = engine.tokenize(text)
            if context:
                tokens = [*context, *tokens]
            request = GenerationRequest(
                prompt_tokens=tokens,
                sampling=split.runtime.sampling(grammar=grammar, triggers=triggers),
                max_tokens=split.runtime.max_tokens(),
                stop=tuple(split.runtime.stop) or prompting.stops,
            )
            stream = engine.submit(request)
        except BaseException:
            lease.release()
            raise
        return Prepared(
            model=loaded.name,
            created_at=timestamp(),
            started=started,
            load_seconds=load_seconds,
            lease=lease,
            stream=stream,
            prompt_tokens=tokens,
            tools=tool_support,
        )

    # ---- /api/chat --------------------------------------------------------------------------

    async def prepare_chat(self, body: ChatRequest) -> Prepared:
        """Raises every 4xx/5xx before the first byte: unknown model, bad options, long prompt."""
        if body.think:
            raise UnsupportedFeature(f"'{body.model}' does not support thinking", param="think")
        messages = body.messages or []
        if any(m.images for m in messages):
            raise UnsupportedFeature(f"'{body.model}' does not support images", param="images")

        def render(prompting: ModelPrompting, template: Any, tools: ToolSupport | None) -> str:
            return prompting.render_chat(template, messages, tools)

        return await self._submit(
            body.model,
            render,
            body.options,
            body.keep_alive,
            body.format,
            tools=body.tools,
            tool_choice=body.tool_choice,
        )

    async def chat_once(self, prep: Prepared) -> ChatResponse:
        text, last = await _collect(prep)
        calls: list[ToolCall] = []
        if prep.tools is not None:
            text, calls = prep.tools.parse(text)
        return ChatResponse(
            model=prep.model,
            created_at=timestamp(),
            message=OutMessage(content=text, tool_calls=calls or None),
            done=True,
            done_reason=last.finish_reason or "stop",
            **prep.timings(last.usage),
        )

    async def chat_stream(self, prep: Prepared) -> AsyncIterator[str]:
        piece = SpliceTemplate(
            ChatResponse(
                model=prep.model,
                created_at=prep.created_at,
                message=OutMessage(content=SpliceTemplate.marker()),
                done=False,
            )
        )
        buffered: list[str] = []  # with tools the text is held back: it may be a call
        try:
            async for event in prep.stream:
                if event.text:
                    if prep.tools is not None:
                        buffered.append(event.text)
                    else:
                        yield piece.render(event.text)
                if event.finish_reason is not None:
                    calls: list[ToolCall] = []
                    if prep.tools is not None:
                        text, calls = prep.tools.parse("".join(buffered))
                        if text:
                            yield piece.render(text)
                    final = ChatResponse(
                        model=prep.model,
                        created_at=timestamp(),
                        message=OutMessage(content="", tool_calls=calls or None),
                        done=True,
                        done_reason=event.finish_reason,
                        **prep.timings(event.usage),
                    )
                    yield final.model_dump_json(exclude_none=True)
        except GGUFServeError as exc:
            yield _error_line(exc)
        finally:
            await prep.close()

    # ---- /api/generate ----------------------------------------------------------------------

    async def prepare_generate(self, body: GenerateRequest) -> Prepared:
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

        return await self._submit(
            body.model, render, body.options, body.keep_alive, body.format, context=body.context
        )

    async def generate_once(self, prep: Prepared) -> GenerateResponse:
        text, last = await _collect(prep)
        return GenerateResponse(
            model=prep.model,
            created_at=timestamp(),
            response=text,
            done=True,
            done_reason=last.finish_reason or "stop",
            context=[*prep.prompt_tokens, *last.completion_ids],
            **prep.timings(last.usage),
        )

    async def generate_stream(self, prep: Prepared) -> AsyncIterator[str]:
        piece = SpliceTemplate(
            GenerateResponse(
                model=prep.model,
                created_at=prep.created_at,
                response=SpliceTemplate.marker(),
                done=False,
            )
        )
        try:
            async for event in prep.stream:
                if event.text:
                    yield piece.render(event.text)
                if event.finish_reason is not None:
                    final = GenerateResponse(
                        model=prep.model,
                        created_at=timestamp(),
                        response="",
                        done=True,
                        done_reason=event.finish_reason,
                        context=[*prep.prompt_tokens, *event.completion_ids],
                        **prep.timings(event.usage),
                    )
                    yield final.model_dump_json(exclude_none=True)
        except GGUFServeError as exc:
            yield _error_line(exc)
        finally:
            await prep.close()


async def _collect(prep: Prepared) -> tuple[str, GenerationEvent]:
    parts: list[str] = []
    last: GenerationEvent | None = None
    try:
        async for event in prep.stream:
            parts.append(event.text)
            last = event
    finally:
        await prep.close()
    if last is None:
        raise InvalidRequest("generation produced no result")
    return "".join(parts), last


def _error_line(exc: GGUFServeError) -> str:
    return json.dumps({"error": exc.message})
