"""Legacy completions: raw prompts (text or token ids, one or several) -> text choices."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from server.api.openai.completion_inputs import prompt_text, prompt_tokens, samples_per_prompt
from server.api.openai.completions_protocol import Completion, CompletionChoice, CompletionRequest
from server.api.openai.errors import error_json
from server.api.openai.fields import COMPLETIONS_REJECTED, check_extra_fields
from server.api.openai.logprobs import legacy_logprobs
from server.api.openai.params import FINGERPRINT, new_id, sampling_from, usage_of
from server.api.openai.protocol import CompletionUsage, now
from server.api.streams import Collected, collect, merge_streams, submit_all
from server.engine.types import GenerationRequest, GenerationStream, TokenLogprob, Usage
from server.errors import GGUFServeError
from server.scheduler import Lease, ModelManager


@dataclass
class PreparedCompletion:
    """Queued work for one request: stream k is sample k % per_prompt of prompt k // per_prompt."""

    id: str
    created: int
    model: str
    lease: Lease
    streams: list[GenerationStream]
    prompt_texts: list[str]
    prompt_counts: list[int]
    body: CompletionRequest
    per_prompt: int

    async def close(self) -> None:
        for stream in self.streams:
            await stream.aclose()
        self.lease.release()


class CompletionService:
    """Runs /v1/completions against the models the manager loads."""

    def __init__(self, manager: ModelManager, default_model: str) -> None:
        self.manager = manager
        self.default_model = default_model

    async def prepare(self, body: CompletionRequest) -> PreparedCompletion:
        """Validate, tokenize and queue every prompt's samples; raises before any byte is sent."""
        check_extra_fields(body, COMPLETIONS_REJECTED, "completions")
        per_prompt = samples_per_prompt(body)
        lease = await self.manager.acquire(body.model or self.default_model)
        try:
            engine = lease.model.engine
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
            streams = [] if body.max_tokens == 0 else await submit_all(engine, requests)
            texts = [prompt_text(engine, body, i, tokens) for i, tokens in enumerate(prompts)]
        except BaseException:
            lease.release()
            raise
        return PreparedCompletion(
            id=new_id("cmpl"),
            created=now(),
            model=lease.model.name,
            lease=lease,
            streams=streams,
            prompt_texts=texts,
            prompt_counts=[len(t) for t in prompts],
            body=body,
            per_prompt=per_prompt,
        )

    async def complete(self, prep: PreparedCompletion) -> Completion:
        body = prep.body
        try:
            results = list(await asyncio.gather(*(collect(s) for s in prep.streams)))
        finally:
            await prep.close()
        if not prep.streams:  # max_tokens 0 with echo: the prompts themselves
            n = len(prep.prompt_texts) * prep.per_prompt
            results = [Collected(finish_reason="length") for _ in range(n)]
        choices: list[CompletionChoice] = []
        for p, text in enumerate(prep.prompt_texts):
            group = results[p * prep.per_prompt : (p + 1) * prep.per_prompt]
            for result in _best(group, body):
                choices.append(_choice(len(choices), result, text if body.echo else "", body))
        return Completion(
            id=prep.id,
            created=prep.created,
            model=prep.model,
            system_fingerprint=FINGERPRINT,
            choices=choices,
            usage=usage_of([r.usage for r in results], prep.prompt_counts),
        )

    async def stream(self, prep: PreparedCompletion) -> AsyncIterator[str]:
        """SSE payloads: echoed prompts, text deltas, finish chunks, usage, [DONE]."""
        body = prep.body
        usages: list[Usage | None] = [None] * len(prep.streams)
        offsets = [0] * len(prep.prompt_texts) * prep.per_prompt

        def chunk(choices: list[CompletionChoice], usage: CompletionUsage | None = None) -> str:
            return Completion(
                id=prep.id,
                created=prep.created,
                model=prep.model,
                system_fingerprint=FINGERPRINT,
                choices=choices,
                usage=usage,
            ).model_dump_json()

        n_choices = len(prep.prompt_texts) * prep.per_prompt
        try:
            if body.echo:
                for k in range(n_choices):
                    text = prep.prompt_texts[k // prep.per_prompt]
                    offsets[k] = len(text)
                    yield chunk([CompletionChoice(text=text, index=k)])
            if not prep.streams:  # max_tokens 0 with echo: nothing to generate
                for k in range(n_choices):
                    yield chunk([CompletionChoice(text="", index=k, finish_reason="length")])
            async for k, event in merge_streams(prep.streams):
                logprobs = None
                if body.logprobs is not None and event.logprobs:
                    logprobs = legacy_logprobs(event.logprobs, body.logprobs, offsets[k])
                    offsets[k] += sum(len(e.token) for e in event.logprobs)
                if event.text or logprobs is not None:
                    yield chunk([CompletionChoice(text=event.text, index=k, logprobs=logprobs)])
                if event.finish_reason is not None:
                    usages[k] = event.usage
                    choice = CompletionChoice(text="", index=k, finish_reason=event.finish_reason)
                    yield chunk([choice])
            if body.include_usage:
                yield chunk([], usage=usage_of(usages, prep.prompt_counts))
            yield "[DONE]"
        except GGUFServeError as exc:
            yield error_json(exc)
        finally:
            await prep.close()


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
