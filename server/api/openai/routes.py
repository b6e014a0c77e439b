"""OpenAI-compatible routes under /v1: translate wire schemas, call the services, nothing more."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from server.api.openai.chat_protocol import ChatCompletion, ChatCompletionRequest
from server.api.openai.completions import CompletionService
from server.api.openai.completions_protocol import Completion, CompletionRequest
from server.api.openai.embeddings import EmbeddingService
from server.api.openai.embeddings_protocol import EmbeddingList, EmbeddingRequest
from server.api.openai.models import ModelsService
from server.api.openai.protocol import ModelCard, ModelList
from server.api.openai.serving import ChatService
from server.api.sse import EventStreamResponse

router = APIRouter(prefix="/v1", tags=["openai"])


def chat_service(request: Request) -> ChatService:
    service: ChatService = request.app.state.chat_service
    return service


def completion_service(request: Request) -> CompletionService:
    service: CompletionService = request.app.state.completion_service
    return service


def embedding_service(request: Request) -> EmbeddingService:
    service: EmbeddingService = request.app.state.embedding_service
    return service


def models_service(request: Request) -> ModelsService:
    service: ModelsService = request.app.state.models_service
    return service


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest, service: Annotated[ChatService, Depends(chat_service)]
) -> ChatCompletion | EventStreamResponse:
    prepared = await service.prepare(body)
    if body.stream:
        return EventStreamResponse(service.stream(prepared))
    return await service.complete(prepared)


@router.post("/completions", response_model=None)
async def completions(
    body: CompletionRequest, service: Annotated[CompletionService, Depends(completion_service)]
) -> Completion | EventStreamResponse:
    prepared = await service.prepare(body)
    if body.stream:
        return EventStreamResponse(service.stream(prepared))
    return await service.complete(prepared)


@router.post("/embeddings")
async def embeddings(
    body: EmbeddingRequest, service: Annotated[EmbeddingService, Depends(embedding_service)]
) -> EmbeddingList:
    return await service.embed(body)


@router.get("/models")
async def list_models(service: Annotated[ModelsService, Depends(models_service)]) -> ModelList:
    return await service.list()


@router.get("/models/{model_id:path}")
async def get_model(
    model_id: str, service: Annotated[ModelsService, Depends(models_service)]
) -> ModelCard:
    return await service.get(model_id)
