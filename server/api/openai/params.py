"""Wire request fields -> engine settings, and engine usage -> wire usage (chat and completions)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from server import __version__
from server.api.openai.protocol import CompletionUsage, PromptTokensDetails, SamplingFields
from server.engine.types import SamplingParams, Usage
from server.errors import UnsupportedFeature

FINGERPRINT = f"gguf-serve-{__version__}"


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def sampling_from(
    body: SamplingFields,
    choice: int,
    *,
    grammar: str | None = None,
    triggers: tuple[str, ...] = (),
) -> SamplingParams:
    """Engine sampling settings; unset fields keep llama.cpp's defaults (as llama-server does).

    With a seed, choice i samples with seed + i: distinct but reproducible choices.
    """
    base = SamplingParams()
    seed = body.seed
    if seed is not None and choice:
        seed += choice
    grammar = grammar or body.grammar
    if grammar and body.ignore_eos:
        raise UnsupportedFeature(
            "ignore_eos cannot be combined with a grammar, tools or a response format",
            param="ignore_eos",
        )
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
        grammar=grammar,
        grammar_triggers=triggers if grammar else (),
    )


def usage_of(
    usages: Sequence[Usage | None], prompt_counts: Sequence[int] | None = None
) -> CompletionUsage:
    """Sum the usage of every choice; each prompt counts once (as OpenAI counts it).

    `prompt_counts` gives the prompt sizes when several prompts ran (legacy completions);
    otherwise all choices share the first choice's prompt.
    """
    done = [u for u in usages if u is not None]
    first = done[0].prompt_tokens if done else 0
    prompt = first if prompt_counts is None else sum(prompt_counts)
    completion = sum(u.completion_tokens for u in done)
    cached = done[0].cached_tokens if done else 0
    return CompletionUsage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=cached),
    )
