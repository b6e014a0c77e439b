"""Legacy completions: raw prompts (text or token ids, one or several) -> text choices."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from server.api.lifecycle import Lifecycle, Prepared, Run
from server.api.openai.completion_inputs import prompt_text, prompt_tokens, samples_per_prompt
from server.api.openai.completions_protocol import Completion, CompletionChoice, CompletionRequest
from server.api.openai.errors import error_json
from server.api.openai.fields import COMPLETIONS_REJECTED, check_extra_fields
from server.api.openai.logprobs import legacy_logprobs
from server.api.openai.params import FINGERPRINT, new_id, sampling_from, usage_of
from server.api.openai.protocol import CompletionUsage, now
from server.api.streams import Collected
from server.engine.types import GenerationRequest, TokenLogprob, Usage
from server.scheduler import LoadedModel


@dataclass
class CompletionRun:
    """What the encoders need: stream k is sample k % per_prompt of prompt k // per_prompt."""

    body: CompletionRequest
    per_prompt: int
    prompt_texts: list[str]
    prompt_counts: list[int]
    id: str = field(default_factory=lambda: new_id("cmpl"))
    created: int = field(default_factory=now)

    @property
    def n_choices(self) -> int:
        return len(self.prompt_texts) * self.per_prompt

    def chunk(
        self, model: str, choices: list[CompletionChoice], usage: CompletionUsage | None = None
    ) -> Completion:
        return Completion(
            id=self.id,
            created=self.created,
            model=model,
            system_fingerprint=FINGERPRINT,
            choices=choices,
            usage=usage,
        )


class CompletionService:
    """/v1/completions: prepares the engine requests and encodes the answer (SSE or one body)."""

    def __init__(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle

    async def prepare(self, body: CompletionRequest) -> Run[CompletionRun]:
        """Validate, tokenize and queue every prompt's samples; raises before any byte is sent."""
        check_extra_fields(body, COMPLETIONS_REJECTED, "completions")
        per_prompt = samples_per_prompt(body)

        async def prepare(model: LoadedModel) -> Prepared[CompletionRun]:
            engine = model.engine
            prompts = await asyncio.to_thread(prompt_tokens, engine, body)
            requests = [
                GenerationRequest(
                    prompt_tokens=tokens,
                    sampling=sampling_from(body, j),
                    max_tokens=body.max_tokens,
                    stop=body.stop_list(),
                    logprobs=body.logprobs if body.logprobs is not None else _ranking(body),
                    ignore_eos=body.ignore_eos,
                )
                for tokens in prompts
                for j in range(per_prompt)
            ]
            texts = [prompt_text(engine, body, i, tokens) for i, tokens in enumerate(prompts)]
            info = CompletionRun(body, per_prompt, texts, [len(t) for t in prompts])
            return Prepared([] if body.max_tokens == 0 else requests, info)

        return await self.lifecycle.start(body.model, prepare, api="openai")

    async def complete(self, run: Run[CompletionRun]) -> Completion:
        info, body = run.info, run.info.body
        results = await run.results()
        if not run.streams:  # max_tokens 0 with echo: the prompts themselves
            results = [Collected(finish_reason="length") for _ in range(info.n_choices)]
        choices: list[CompletionChoice] = []
        for p, text in enumerate(info.prompt_texts):
            group = results[p * info.per_prompt : (p + 1) * info.per_prompt]
            for result in _best(group, body):
                choices.append(_choice(len(choices), result, text if body.echo else "", body))
        usage = usage_of([r.usage for r in results], info.prompt_counts)
        return info.chunk(run.model, choices, usage)

    def stream(self, run: Run[CompletionRun]) -> AsyncIterator[str]:
        """SSE payloads: echoed prompts, text deltas, finish chunks, usage, [DONE]."""
        return run.stream(_chunks(run), error_json)


async def _chunks(run: Run[CompletionRun]) -> AsyncIterator[str]:
    info, body = run.info, run.info.body
    usages: list[Usage | None] = [None] * len(run.streams)
    offsets = [0] * info.n_choices

    def chunk(choices: list[CompletionChoice], usage: CompletionUsage | None = None) -> str:
        return info.chunk(run.model, choices, usage).model_dump_json()

    if body.echo:
        for k in range(info.n_choices):
            text = info.prompt_texts[k // info.per_prompt]
            offsets[k] = len(text)
            yield chunk([CompletionChoice(text=text, index=k)])
    if not run.streams:  # max_tokens 0 with echo: nothing to generate
        for k in range(info.n_choices):
            yield chunk([CompletionChoice(text="", index=k, finish_reason="length")])
    async for k, event in run.events():
        logprobs = None
        if body.logprobs is not None and event.logprobs:
            logprobs = legacy_logprobs(event.logprobs, body.logprobs, offsets[k])
            offsets[k] += sum(len(e.token) for e in event.logprobs)
        if event.text or logprobs is not None:
            yield chunk([CompletionChoice(text=event.text, index=k, logprobs=logprobs)])
        if event.finish_reason is not None:
            usages[k] = event.usage
            yield chunk([CompletionChoice(text="", index=k, finish_reason=event.finish_reason)])
    if body.include_usage:
        yield chunk([], usage=usage_of(usages, info.prompt_counts))
    yield "[DONE]"


def _ranking(body: CompletionRequest) -> int | None:
    """best_of ranks samples by their mean log-probability, so it needs logprobs on."""
    return 0 if (body.best_of or body.n) > body.n else None


def _best(group: list[Collected], body: CompletionRequest) -> list[Collected]:
    if len(group) <= body.n:
        return group

    def score(result: Collected) -> float:
        entries = [e for part in result.logprobs for e in part]
        return sum(e.logprob for e in entries) / len(entries) if entries else float("-inf")

    return sorted(group, key=score, reverse=True)[: body.n]


def _choice(index: int, result: Collected, echo: str, body: CompletionRequest) -> CompletionChoice:
    logprobs = None
    if body.logprobs is not None:
        entries: list[TokenLogprob] = [e for part in result.logprobs for e in part]
        logprobs = legacy_logprobs(entries, body.logprobs, len(echo))
    return CompletionChoice(
        text=echo + result.text,
        index=index,
        logprobs=logprobs,
        finish_reason=result.finish_reason,
    )
