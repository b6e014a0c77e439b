"""Engine log-probabilities in OpenAI's two wire shapes (chat and legacy completions).

The engine reports one entry per sampled token (the end-of-generation token excluded). Text
deltas may lag behind tokens (UTF-8 completion, stop-string hold-back), so a chunk's entries
are the tokens sampled since the previous chunk, not necessarily exactly its text.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pydantic import BaseModel

from server.api.openai.protocol import ChoiceLogprobs, TokenLogprob, TopLogprob
from server.engine import types as engine


def chat_logprobs(entries: Iterable[engine.TokenLogprob], top_n: int) -> ChoiceLogprobs:
    """`choices[].logprobs` of chat: {"content": [{token, logprob, bytes, top_logprobs}]}."""
    return ChoiceLogprobs(
        content=[
            TokenLogprob(
                token=e.token,
                logprob=e.logprob,
                bytes=list(e.bytes),
                top_logprobs=[
                    TopLogprob(token=t, logprob=lp, bytes=list(raw)) for t, lp, raw in e.top[:top_n]
                ],
            )
            for e in entries
        ]
    )


class LegacyLogprobs(BaseModel):
    """`choices[].logprobs` of /v1/completions."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


def legacy_logprobs(
    entries: Sequence[engine.TokenLogprob], top_n: int, start_offset: int
) -> LegacyLogprobs:
    """Tokens, their log-probabilities, top-N maps and character offsets into the choice text."""
    offsets = []
    at = start_offset
    for e in entries:
        offsets.append(at)
        at += len(e.token)
    return LegacyLogprobs(
        tokens=[e.token for e in entries],
        token_logprobs=[e.logprob for e in entries],
        top_logprobs=[{t: lp for t, lp, _ in e.top[:top_n]} for e in entries],
        text_offset=offsets,
    )
