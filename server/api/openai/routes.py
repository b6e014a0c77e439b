"""OpenAI-compatible routes under /v1: translate wire schemas, call the services, nothing more."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from server.api.disconnect import until_disconnect
from server.api.openai.chat_protocol import ChatCompletion, ChatCompletionRequest
from server.api.openai.completions import CompletionService
from server.api.openai.completions_protocol import Completion, CompletionRequest
from server.api.openai.embeddings import EmbeddingService
from server.api.openai.embeddings_protocol import EmbeddingList, EmbeddingRequest
from server.api.openai.models import ModelsService
from server.api.openai.protocol import ModelCard, ModelList
from server.api.openai.serving import ChatService
from server.api.services import from_state
from server.api.sse import EventStreamResponse

router = APIRouter(prefix="/v1", tags=["openai"])


Chat = Annotated[ChatService, Depends(from_state("chat_service", ChatService))]
Completions = Annotated[
    CompletionService, Depends(from_state("completion_service", CompletionService))
]
Embeddings = Annotated[EmbeddingService, Depends(from_state("embedding_service", EmbeddingService))]
Models = Annotated[ModelsService, Depends(from_state("models_service", ModelsService))]


def _ping(request: Request) -> float:
    return float(request.app.state.settings.sse_ping_seconds)


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest, service: Chat, request: Request
) -> ChatCompletion | EventStreamResponse:
    run = await service.prepare(body)
    if body.stream:
        return EventStreamResponse(service.stream(run), ping_seconds=_ping(request))
    return await until_disconnect(request, service.complete(run))


@router.post("/completions", response_model=None)
async def completions(
    body: CompletionRequest, service: Completions, request: Request
) -> Completion | EventStreamResponse:
    run = await service.prepare(body)
    if body.stream:
        return EventStreamResponse(service.stream(run), ping_seconds=_ping(request))
    return await until_disconnect(request, service.complete(run))


@router.post("/embeddings")
async def embeddings(body: EmbeddingRequest, service: Embeddings) -> EmbeddingList:
    return await service.embed(body)


@router.get("/models")
async def list_models(service: Models) -> ModelList:
    return await service.list()


@router.get("/models/{model_id:path}")
async def get_model(model_id: str, service: Models) -> ModelCard:
    return await service.get(model_id)
