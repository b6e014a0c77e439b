"""/api/embed and the legacy /api/embeddings."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from server.api.lifecycle import Lifecycle
from server.api.ollama.options import keep_alive_seconds, split_options
from server.api.ollama.protocol import (
    EmbeddingsRequest,
    EmbeddingsResponse,
    EmbedRequest,
    EmbedResponse,
    KeepAlive,
)
from server.errors import InvalidRequest

_NS = 1_000_000_000


def _truncate(vector: list[float], dimensions: int) -> list[float]:
    """Keep the first `dimensions` values and renormalise (Matryoshka-style)."""
    head = vector[:dimensions]
    norm = math.sqrt(sum(v * v for v in head)) or 1.0
    return [v / norm for v in head]


class OllamaEmbeddings:
    """Embeddings through the loaded model's embedding context."""

    def __init__(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle

    async def _embed(
        self,
        model: str,
        texts: list[str],
        options: dict[str, Any] | None,
        keep_alive: KeepAlive,
        truncate: bool,
    ) -> tuple[str, list[list[float]], int, float, float]:
        started = time.perf_counter()
        split = split_options(options)
        seconds = keep_alive_seconds(keep_alive)
        async with self.lifecycle.hold(model, overrides=split.load, keep_alive=seconds) as (
            lease,
            load_seconds,
        ):
            engine = lease.model.engine
            token_lists = [await asyncio.to_thread(engine.tokenize, text) for text in texts]
            vectors = await engine.embed(token_lists, truncate=truncate) if token_lists else []
            count = sum(min(len(t), engine.n_ctx_slot) for t in token_lists)
            return lease.model.name, vectors, count, started, load_seconds

    async def embed(self, body: EmbedRequest) -> EmbedResponse:
        texts = [body.input] if isinstance(body.input, str) else list(body.input)
        if any(not t for t in texts):
            raise InvalidRequest("input must not contain empty strings", param="input")
        name, vectors, count, started, load = await self._embed(
            body.model, texts, body.options, body.keep_alive, body.truncate
        )
        if body.dimensions is not None:
            if vectors and body.dimensions > len(vectors[0]):
                raise InvalidRequest(
                    f"dimensions {body.dimensions} is more than the model's {len(vectors[0])}",
                    param="dimensions",
                )
            vectors = [_truncate(v, body.dimensions) for v in vectors]
        return EmbedResponse(
            model=name,
            embeddings=vectors,
            total_duration=int((time.perf_counter() - started) * _NS),
            load_duration=int(load * _NS),
            prompt_eval_count=count,
        )

    async def embeddings(self, body: EmbeddingsRequest) -> EmbeddingsResponse:
        if not body.prompt:
            return EmbeddingsResponse(embedding=[])  # Ollama answers an empty prompt with []
        _, vectors, _, _, _ = await self._embed(
            body.model, [body.prompt], body.options, body.keep_alive, True
        )
        return EmbeddingsResponse(embedding=vectors[0])
