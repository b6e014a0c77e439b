"""Embeddings: text or token ids -> one pooled, L2-normalised vector per input."""

from __future__ import annotations

import asyncio
import base64

import numpy as np

from server.api.lifecycle import Lifecycle
from server.api.openai.embeddings_protocol import (
    Embedding,
    EmbeddingList,
    EmbeddingRequest,
    EmbeddingUsage,
)
from server.api.openai.fields import EMBEDDINGS_REJECTED, check_extra_fields
from server.engine.types import Engine, check_token_ids
from server.errors import UnsupportedFeature


class EmbeddingService:
    """Runs /v1/embeddings on the model's embedding context (see engine/embeddings.py)."""

    def __init__(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle

    async def embed(self, body: EmbeddingRequest) -> EmbeddingList:
        """Raises InvalidRequest / UnsupportedFeature naming the field, ContextLengthExceeded
        for an input longer than the model's context."""
        check_extra_fields(body, EMBEDDINGS_REJECTED, "embeddings")
        async with self.lifecycle.hold(body.model) as (lease, _):
            engine = lease.model.engine
            if body.dimensions is not None and body.dimensions != engine.n_embd:
                raise UnsupportedFeature(
                    f"dimensions: this model's embeddings have {engine.n_embd} dimensions and "
                    "cannot be shortened",
                    param="dimensions",
                )
            inputs = await asyncio.to_thread(_input_tokens, engine, body)
            vectors = await engine.embed(inputs)
        n_tokens = sum(len(t) for t in inputs)
        return EmbeddingList(
            data=[
                Embedding(index=i, embedding=_encode(v, body.encoding_format))
                for i, v in enumerate(vectors)
            ],
            model=lease.model.name,
            usage=EmbeddingUsage(prompt_tokens=n_tokens, total_tokens=n_tokens),
        )


def _encode(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "float":
        return vector
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def _input_tokens(engine: Engine, body: EmbeddingRequest) -> list[list[int]]:
    raw = body.input
    if isinstance(raw, str):
        return [engine.tokenize(raw)]
    if isinstance(raw[0], int):
        items: list[str | list[int]] = [list(raw)]  # type: ignore[arg-type]
    else:
        items = list(raw)  # type: ignore[arg-type]
    out = []
    for item in items:
        if isinstance(item, str):
            out.append(engine.tokenize(item))
            continue
        check_token_ids(item, engine.n_vocab, param="input")
        out.append(item)
    return out
