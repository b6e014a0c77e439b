"""Wire schemas of the legacy POST /v1/completions."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator

from server.api.limits import MAX_PROMPTS
from server.api.openai.logprobs import LegacyLogprobs
from server.api.openai.protocol import CompletionUsage, SamplingFields

Prompt = str | list[str] | list[int] | list[list[int]]


class CompletionRequest(SamplingFields):
    """POST /v1/completions."""

    prompt: Prompt
    suffix: str | None = None
    max_tokens: int | None = Field(16, ge=0, description="OpenAI's default: 16; null = no limit.")
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=20)
    best_of: int | None = Field(None, ge=1, le=16)

    @field_validator("prompt")
    @classmethod
    def _not_empty(cls, value: Prompt) -> Prompt:
        if isinstance(value, list) and not value:
            raise ValueError("the prompt list is empty")
        if (
            isinstance(value, list)
            and len(value) > MAX_PROMPTS
            and isinstance(value[0], (str, list))
        ):
            raise ValueError(f"at most {MAX_PROMPTS} prompts per request")
        return value


class CompletionChoice(BaseModel):
    text: str
    index: int
    logprobs: LegacyLogprobs | None = None
    finish_reason: str | None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[CompletionChoice]
    usage: CompletionUsage | None = None
