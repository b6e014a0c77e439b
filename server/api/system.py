"""Operator endpoints: /health (readiness), /version, /slots, /metrics."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel

from server import __version__
from server.api.metrics import Metrics
from server.scheduler import ModelManager

router = APIRouter(tags=["system"])


class Health(BaseModel):
    status: Literal["ok", "starting"]
    models_loaded: int


class Version(BaseModel):
    version: str


class Slot(BaseModel):
    id: int
    state: str
    prompt_tokens: int
    cached_tokens: int
    generated_tokens: int
    kv_tokens: int


class ModelSlots(BaseModel):
    model: str
    n_ctx_slot: int
    slots: list[Slot]


def _manager(request: Request) -> ModelManager:
    manager: ModelManager = request.app.state.manager
    return manager


@router.get("/health")
async def health(request: Request, response: Response) -> Health:
    """200 once the server is ready (the default model preloaded), 503 while starting."""
    ready: bool = request.app.state.ready.is_set()
    if not ready:
        response.status_code = 503
    return Health(
        status="ok" if ready else "starting", models_loaded=len(_manager(request).loaded())
    )


@router.get("/version")
async def version() -> Version:
    return Version(version=__version__)


@router.get("/slots")
async def slots(request: Request) -> list[ModelSlots]:
    """Each loaded model's slots: state and prompt / cached / generated token counts."""
    out = []
    for model in _manager(request).loaded():
        out.append(
            ModelSlots(
                model=model.name,
                n_ctx_slot=model.engine.n_ctx_slot,
                slots=[Slot(**vars_of(s)) for s in model.engine.slots()],
            )
        )
    return out


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus text format (OpenMetrics when the scraper asks for it)."""
    registry: Metrics | None = request.app.state.metrics
    if registry is None:
        raise HTTPException(404, "metrics are turned off (setting `metrics`)")
    body, content_type = registry.exposition(request.headers.get("accept"))
    return Response(body, media_type=content_type)


def vars_of(slot: object) -> dict[str, object]:
    fields = ("id", "state", "prompt_tokens", "cached_tokens", "generated_tokens", "kv_tokens")
    return {f: getattr(slot, f) for f in fields}
