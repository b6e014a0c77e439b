"""Chat completions: wire request -> prompt + engine requests -> wire response or SSE chunks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

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
from server.api.streams import Collected, collect, merge_streams, submit_all
from server.chat.tools import ToolPlan
from server.engine.types import GenerationRequest, GenerationStream, Usage
from server.errors import GGUFServeError
from server.scheduler import Lease, ModelManager

_LONG_PROMPT_CHARS = 8192  # tokenize longer prompts off the event loop


@dataclass
class PreparedChat:
    """Everything decided before the first byte is sent: errors are raised before this exists."""

    id: str
    created: int
    model: str
    streams: list[GenerationStream]
    lease: Lease
    include_usage: bool
    plan: ToolPlan | None
    top_logprobs: int | None

    async def close(self) -> None:
        for stream in self.streams:
            await stream.aclose()
        self.lease.release()


class ChatService:
    """Runs chat completions against the models the manager loads."""

    def __init__(self, manager: ModelManager, default_model: str) -> None:
        self.manager = manager
        self.default_model = default_model

    async def prepare(self, body: ChatCompletionRequest) -> PreparedChat:
        """Validate, acquire the model, render, tokenize and queue; raises any 4xx/5xx before
        streaming."""
        check_extra_fields(body, CHAT_REJECTED, "chat.completions")
        inputs = read_chat(body)
        lease = await self.manager.acquire(body.model or self.default_model)
        try:
            model = lease.model
            prompt = build_prompt(inputs, model.template)
            engine = model.engine
            if len(prompt.text) > _LONG_PROMPT_CHARS:
                tokens = await asyncio.to_thread(engine.tokenize, prompt.text)
            else:
                tokens = engine.tokenize(prompt.text)
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
                )
                for choice in range(body.n)
            ]
            streams = await submit_all(engine, requests, grammar_param=_grammar_param(body))
        except BaseException:
            lease.release()
            raise
        return PreparedChat(
            id=new_id("chatcmpl"),
            created=now(),
            model=lease.model.name,
            streams=streams,
            lease=lease,
            include_usage=body.include_usage,
            plan=prompt.plan,
            top_logprobs=inputs.top_logprobs,
        )

    async def complete(self, prep: PreparedChat) -> ChatCompletion:
        """Run every choice to the end and build one response."""
        try:
            results: list[Collected] = await asyncio.gather(*(collect(s) for s in prep.streams))
        finally:
            await prep.close()
        choices = []
        for i, result in enumerate(results):
            message, n_calls = whole_message(result.text, prep.plan)
            logprobs = None
            if prep.top_logprobs is not None:
                logprobs = chat_logprobs(all_logprobs(result.logprobs), prep.top_logprobs)
            choices.append(
                Choice(
                    index=i,
                    message=message,
                    finish_reason=finish_reason(result.finish_reason, n_calls),
                    logprobs=logprobs,
                )
            )
        return ChatCompletion(
            id=prep.id,
            created=prep.created,
            model=prep.model,
            system_fingerprint=FINGERPRINT,
            choices=choices,
            usage=usage_of([r.usage for r in results]),
        )

    async def stream(self, prep: PreparedChat) -> AsyncIterator[str]:
        """SSE `data:` payloads: role chunk, deltas, finish chunks, usage, [DONE]."""
        usages: list[Usage | None] = [None] * len(prep.streams)
        encoder = ChunkEncoder(prep.id, prep.created, prep.model, FINGERPRINT)
        chunk = encoder.chunk
        outputs = [ChoiceStream(i, prep.plan, prep.top_logprobs) for i in range(len(prep.streams))]
        try:
            yield chunk(
                [
                    ChunkChoice(index=i, delta=Delta(role="assistant", content=""))
                    for i in range(len(prep.streams))
                ]
            )
            async for index, event in merge_streams(prep.streams):
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
            if prep.include_usage:
                yield chunk([], usage=usage_of(usages))
            yield "[DONE]"
        except GGUFServeError as exc:
            yield error_json(exc)
        finally:
            await prep.close()


def _grammar_param(body: ChatCompletionRequest) -> str:
    if body.tools and body.tool_choice != "none":
        return "tools"
    return "response_format" if body.response_format else "grammar"
