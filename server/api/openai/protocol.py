"""Wire schemas shared by the OpenAI-compatible endpoints (what clients send and receive)."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    Strict,
    field_validator,
    model_serializer,
)

from server.api.limits import MAX_GRAMMAR_CHARS, MAX_STOP, MAX_STOP_CHARS


class Lenient(BaseModel):
    """Request models accept unknown fields (SDKs send extras); `fields.py` decides what they mean.

    Types are strict: `"stream": "yes"` or `"max_tokens": "5"` is a 400, not a guess.
    """

    model_config = ConfigDict(extra="allow", strict=True)


# JSON object keys are strings: a token id key is the one place a numeric string is an int.
TokenIdKey = Annotated[int, Strict(False)]


class DropNone(BaseModel):
    """Serialises without the fields that are None (stream deltas carry only what changed)."""

    @model_serializer(mode="wrap")
    def _drop_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}


class StreamOptions(Lenient):
    include_usage: bool = False


class SamplingFields(Lenient):
    """Generation fields that chat and legacy completions share."""

    model: str = ""
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    seed: int | None = None
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    n: int = Field(1, ge=1, le=16)
    logit_bias: dict[TokenIdKey, float] | None = Field(
        None, description="Token id -> bias added to its logit (-100..100; -100 bans it)."
    )
    # llama-server extensions (the same names its OpenAI endpoints accept)
    top_k: int | None = Field(None, ge=0, description="Keep the k most likely tokens; 0 = off.")
    min_p: float | None = Field(None, ge=0.0, le=1.0, description="Drop tokens below p * p_max.")
    typical_p: float | None = Field(None, gt=0.0, le=1.0, description="Locally typical sampling.")
    repeat_penalty: float | None = Field(None, gt=0.0, le=10.0, description="1.0 = off.")
    repeat_last_n: int | None = Field(
        None, ge=-1, description="Penalty window; -1 = whole context."
    )
    ignore_eos: bool = Field(False, description="Never stop at end-of-text (benchmarks).")
    grammar: str | None = Field(
        None, max_length=MAX_GRAMMAR_CHARS, description="A GBNF grammar (start rule `root`)."
    )

    @field_validator("logit_bias")
    @classmethod
    def _bias_range(cls, value: dict[int, float] | None) -> dict[int, float] | None:
        if value and any(t < 0 for t in value):
            raise ValueError("logit_bias token ids must not be negative")
        if value and any(not -100.0 <= b <= 100.0 for b in value.values()):
            raise ValueError("logit_bias values must be between -100 and 100")
        if value and len(value) > 1024:
            raise ValueError("at most 1024 logit_bias entries")
        return value

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences")
        if any(len(stop) > MAX_STOP_CHARS for stop in stops):
            raise ValueError(f"a stop sequence has at most {MAX_STOP_CHARS} characters")
        return value

    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails = Field(default_factory=PromptTokensDetails)


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(BaseModel):
    """One sampled token of chat logprobs, with its top alternatives."""

    token: str
    logprob: float
    bytes: list[int] | None
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None = None
    refusal: list[TokenLogprob] | None = None


def now() -> int:
    return int(time.time())


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
