"""Wire schemas of POST /v1/embeddings."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator

from server.api.limits import MAX_EMBED_INPUTS
from server.api.openai.protocol import Lenient

EmbeddingInput = str | list[str] | list[int] | list[list[int]]


class EmbeddingRequest(Lenient):
    """POST /v1/embeddings."""

    input: EmbeddingInput
    model: str = ""
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)

    @field_validator("input")
    @classmethod
    def _not_empty(cls, value: EmbeddingInput) -> EmbeddingInput:
        if isinstance(value, list) and not value:
            raise ValueError("the input list is empty")
        if (
            isinstance(value, list)
            and len(value) > MAX_EMBED_INPUTS
            and isinstance(value[0], (str, list))
        ):
            raise ValueError(f"at most {MAX_EMBED_INPUTS} inputs per request")
        return value


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str  # str: base64 of little-endian float32


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
