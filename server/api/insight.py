"""`POST /recommend`: which quant of a family to run within a memory budget (as the CLI's
`gguf-serve recommend`). It reads the store and the measurement cache only: nothing is loaded."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from pydantic import BaseModel, ByteSize, ConfigDict, Field

from server.engine.options import CacheType
from server.errors import InvalidRequest
from server.insight.cache import InsightCache
from server.insight.memory_column import available_memory
from server.insight.recommend import Recommendation, recommend
from server.registry import Registry
from server.settings import Settings

router = APIRouter(tags=["insight"])


class RecommendRequest(BaseModel):
    """What to choose for: a family, a memory budget, a context and KV cache types."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, description="A model (`smollm2:135m`) or family (`smollm2`).")
    memory: Annotated[ByteSize, Field(gt=0)] | None = Field(
        None, description="Budget in bytes or as text (`8GiB`); default: the available RAM."
    )
    ctx: int | None = Field(
        None, ge=1, le=1 << 24, description="Context length; default: setting load.n_ctx."
    )
    kv_type: CacheType | None = Field(None, description="KV cache type for K and V.")
    type_k: CacheType | None = Field(None, description="KV cache type for K (beats kv_type).")
    type_v: CacheType | None = Field(None, description="KV cache type for V (beats kv_type).")


@router.post("/recommend")
def recommend_route(body: RecommendRequest, request: Request) -> Recommendation:
    """The best quant of `model`'s family that fits, and why (measured figures when `compare`
    has run, rules of thumb otherwise); `model` is null when nothing fits."""
    settings: Settings = request.app.state.settings
    registry: Registry = request.app.state.registry
    budget = int(body.memory) if body.memory is not None else available_memory()
    if budget is None:
        raise InvalidRequest(
            "cannot tell how much memory is free here; give `memory`", param="memory"
        )
    return recommend(
        registry,
        InsightCache(settings.cache_dir / "insight"),
        body.model,
        budget=budget,
        budget_source="given" if body.memory is not None else "detected",
        context=body.ctx or settings.load.n_ctx,
        type_k=body.type_k or body.kv_type or "f16",
        type_v=body.type_v or body.kv_type or "f16",
    )
