"""Chat completions: wire request -> prompt + engine request -> wire response or SSE chunks."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from server import __version__
from server.api.openai.chunks import ChunkEncoder
from server.api.openai.errors import error_body
from server.api.openai.protocol import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionRequest,
    ChatMessage,
    Choice,
    ChunkChoice,
    CompletionUsage,
    Delta,
    ImagePart,
    PromptTokensDetails,
)
from server.api.streams import merge_streams
from server.engine.types import GenerationRequest, GenerationStream, SamplingParams, Usage
from server.errors import GGUFServeError, UnsupportedFeature
from server.scheduler import Lease, ModelManager

FINGERPRINT = f"gguf-serve-{__version__}"
_LONG_PROMPT_CHARS = 8192  # tokenize longer prompts off the event loop


def usage_of(usages: Sequence[Usage | None]) -> CompletionUsage:
    """Sum the usage of every choice (the prompt counts once, as OpenAI does)."""
    done = [u for u in usages if u is not None]
    prompt = done[0].prompt_tokens if done else 0
    completion = sum(u.completion_tokens for u in done)
    cached = done[0].cached_tokens if done else 0
    return CompletionUsage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=cached),
    )


def _message_dict(message: ChatMessage) -> dict[str, Any]:
    if isinstance(message.content, list) and any(isinstance(p, ImagePart) for p in message.content):
        raise UnsupportedFeature(
            "only text content parts are supported by this server", param="messages"
        )
    role = "system" if message.role == "developer" else message.role
    out: dict[str, Any] = {"role": role, "content": message.text()}
    if message.name:
        out["name"] = message.name
    return out


def sampling_from(body: ChatCompletionRequest, choice: int) -> SamplingParams:
    """Engine sampling settings; unset fields keep llama.cpp's defaults (as llama-server does)."""
    base = SamplingParams()
    seed = body.seed
    if seed is not None and choice:
        seed += choice  # n > 1 with a seed: distinct but reproducible choices
    return SamplingParams(
        temperature=base.temperature if body.temperature is None else body.temperature,
        top_p=base.top_p if body.top_p is None else body.top_p,
        top_k=base.top_k if body.top_k is None else body.top_k,
        min_p=base.min_p if body.min_p is None else body.min_p,
        typical_p=base.typical_p if body.typical_p is None else body.typical_p,
        repeat_penalty=base.repeat_penalty if body.repeat_penalty is None else body.repeat_penalty,
        repeat_last_n=base.repeat_last_n if body.repeat_last_n is None else body.repeat_last_n,
        presence_penalty=body.presence_penalty or 0.0,
        frequency_penalty=body.frequency_penalty or 0.0,
        logit_bias=tuple(sorted((body.logit_bias or {}).items())),
        seed=seed,
    )


@dataclass
class PreparedChat:
    """Everything decided before the first byte is sent: errors are raised before this exists."""

    id: str
    created: int
    model: str
    streams: list[GenerationStream]
    lease: Lease
    include_usage: bool

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
        """Acquire the model, render, tokenize and queue; raises any 4xx/5xx before streaming."""
        messages = [_message_dict(m) for m in body.messages]
        lease = await self.manager.acquire(body.model or self.default_model)
        streams: list[GenerationStream] = []
        try:
            model = lease.model
            prompt = model.template.render(messages, add_generation_prompt=True)
            engine = model.engine
            if len(prompt) > _LONG_PROMPT_CHARS:
                tokens = await asyncio.to_thread(engine.tokenize, prompt)
            else:
                tokens = engine.tokenize(prompt)
            max_tokens = body.max_completion_tokens or body.max_tokens
            for choice in range(body.n):
                request = GenerationRequest(
                    prompt_tokens=tokens,
                    sampling=sampling_from(body, choice),
                    max_tokens=max_tokens,
                    stop=body.stop_list(),
                    ignore_eos=body.ignore_eos,
                )
                streams.append(engine.submit(request))
        except BaseException:
            for stream in streams:
                await stream.aclose()
            lease.release()
            raise
        return PreparedChat(
            id=f"chatcmpl-{uuid.uuid4().hex}",
            created=int(time.time()),
            model=lease.model.name,
            streams=streams,
            lease=lease,
            include_usage=bool(body.stream_options and body.stream_options.include_usage),
        )

    async def complete(self, prep: PreparedChat) -> ChatCompletion:
        """Run every choice to the end and build one response."""
        try:
            results = await asyncio.gather(*(_collect(s) for s in prep.streams))
        finally:
            await prep.close()
        choices = [
            Choice(index=i, message=AssistantMessage(content=text), finish_reason=finish)
            for i, (text, finish, _) in enumerate(results)
        ]
        return ChatCompletion(
            id=prep.id,
            created=prep.created,
            model=prep.model,
            system_fingerprint=FINGERPRINT,
            choices=choices,
            usage=usage_of([u for _, _, u in results]),
        )

    async def stream(self, prep: PreparedChat) -> AsyncIterator[str]:
        """SSE `data:` payloads: role chunk, content deltas, finish chunks, usage, [DONE]."""
        usages: list[Usage | None] = [None] * len(prep.streams)
        encoder = ChunkEncoder(prep.id, prep.created, prep.model, FINGERPRINT)
        chunk = encoder.chunk
        try:
            yield chunk(
                [
                    ChunkChoice(index=i, delta=Delta(role="assistant", content=""))
                    for i in range(len(prep.streams))
                ]
            )
            async for index, event in merge_streams(prep.streams):
                if event.text:
                    yield encoder.content(index, event.text)
                if event.finish_reason is not None:
                    usages[index] = event.usage
                    yield chunk(
                        [ChunkChoice(index=index, delta=Delta(), finish_reason=event.finish_reason)]
                    )
            if prep.include_usage:
                yield chunk([], usage=usage_of(usages))
            yield "[DONE]"
        except GGUFServeError as exc:
            yield _json_error(exc)
        finally:
            await prep.close()


def _json_error(exc: GGUFServeError) -> str:
    return json.dumps(error_body(exc.message, exc.type, exc.param, exc.code))


async def _collect(stream: GenerationStream) -> tuple[str, str | None, Usage | None]:
    parts: list[str] = []
    finish: str | None = None
    usage: Usage | None = None
    async for event in stream:
        parts.append(event.text)
        if event.finish_reason is not None:
            finish, usage = event.finish_reason, event.usage
    return "".join(parts), finish, usage
