"""Chat completions: wire request -> prompt + engine requests -> wire response or SSE chunks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from server.api.lifecycle import Lifecycle, Prepared, Run, tokenize
from server.api.openai.chat_inputs import build_prompt, read_chat
from server.api.openai.chat_output import ChoiceStream, all_logprobs, finish_reason, whole_message
from server.api.openai.chat_protocol import (
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    Delta,
)
from server.api.openai.chunks import ChunkEncoder
from server.api.openai.errors import error_json
from server.api.openai.fields import CHAT_REJECTED, check_extra_fields
from server.api.openai.logprobs import chat_logprobs
from server.api.openai.params import FINGERPRINT, new_id, sampling_from, usage_of
from server.api.openai.protocol import now
from server.chat.tools import ToolPlan
from server.engine.types import GenerationRequest, Usage
from server.scheduler import LoadedModel


@dataclass
class ChatRun:
    """What the encoders of one chat completion need besides the engine's events."""

    include_usage: bool
    plan: ToolPlan | None
    top_logprobs: int | None
    id: str = field(default_factory=lambda: new_id("chatcmpl"))
    created: int = field(default_factory=now)


class ChatService:
    """Chat completions: prepares the engine requests and encodes the answer (SSE or one body)."""

    def __init__(self, lifecycle: Lifecycle, *, max_tool_calls: int) -> None:
        self.lifecycle = lifecycle
        self.max_tool_calls = max_tool_calls

    async def prepare(self, body: ChatCompletionRequest) -> Run[ChatRun]:
        """Validate, acquire the model, render, tokenize and queue; raises any 4xx/5xx before
        streaming."""
        check_extra_fields(body, CHAT_REJECTED, "chat.completions")
        inputs = read_chat(body)

        async def prepare(model: LoadedModel) -> Prepared[ChatRun]:
            # Off the event loop: the chat template is code from the model file, run until its
            # budget (template_timeout_seconds) ends it.
            prompt = await asyncio.to_thread(
                build_prompt, inputs, model.template, max_calls=self.max_tool_calls
            )
            tokens = await tokenize(model.engine, prompt.text)
            requests = [
                GenerationRequest(
                    prompt_tokens=tokens,
                    sampling=sampling_from(
                        body, choice, grammar=prompt.grammar, triggers=prompt.triggers
                    ),
                    max_tokens=body.max_completion_tokens or body.max_tokens,
                    stop=body.stop_list(),
                    logprobs=inputs.top_logprobs,
                    ignore_eos=body.ignore_eos,
                    watch=prompt.plan.watch if prompt.plan is not None else None,
                )
                for choice in range(body.n)
            ]
            info = ChatRun(body.include_usage, prompt.plan, inputs.top_logprobs)
            return Prepared(requests, info, grammar_param=_grammar_param(body))

        return await self.lifecycle.start(body.model, prepare, api="openai")

    async def complete(self, run: Run[ChatRun]) -> ChatCompletion:
        """Run every choice to the end and build one response."""
        results = await run.results()
        info = run.info
        choices = []
        for i, result in enumerate(results):
            message, n_calls = whole_message(result.text, info.plan)
            logprobs = None
            if info.top_logprobs is not None:
                logprobs = chat_logprobs(all_logprobs(result.logprobs), info.top_logprobs)
            choices.append(
                Choice(
                    index=i,
                    message=message,
                    finish_reason=finish_reason(result.finish_reason, n_calls),
                    logprobs=logprobs,
                )
            )
        return ChatCompletion(
            id=info.id,
            created=info.created,
            model=run.model,
            system_fingerprint=FINGERPRINT,
            choices=choices,
            usage=usage_of([r.usage for r in results]),
        )

    def stream(self, run: Run[ChatRun]) -> AsyncIterator[str]:
        """SSE `data:` payloads: role chunk, deltas, finish chunks, usage, [DONE]."""
        return run.stream(_chunks(run), error_json)


async def _chunks(run: Run[ChatRun]) -> AsyncIterator[str]:
    info = run.info
    n = len(run.streams)
    usages: list[Usage | None] = [None] * n
    encoder = ChunkEncoder(info.id, info.created, run.model, FINGERPRINT)
    chunk = encoder.chunk
    outputs = [ChoiceStream(i, info.plan, info.top_logprobs) for i in range(n)]
    yield chunk([ChunkChoice(index=i, delta=Delta(role="assistant", content="")) for i in range(n)])
    async for index, event in run.events():
        out = outputs[index]
        if out.plain:
            if event.text:
                yield encoder.content(index, event.text)
        else:
            for choice in out.chunks(event):
                yield chunk([choice])
        if event.finish_reason is not None:
            usages[index] = event.usage
            for choice in out.final(event.finish_reason):
                yield chunk([choice])
    if info.include_usage:
        yield chunk([], usage=usage_of(usages))
    yield "[DONE]"


def _grammar_param(body: ChatCompletionRequest) -> str:
    if body.tools and body.tool_choice != "none":
        return "tools"
    return "response_format" if body.response_format else "grammar"
