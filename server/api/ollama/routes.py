"""Ollama-compatible routes under /api (plus `/`): translate, call the services, nothing more."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import PlainTextResponse

from server.api.disconnect import until_disconnect
from server.api.edge_rules import is_loopback
from server.api.ollama.embed import OllamaEmbeddings
from server.api.ollama.models import OllamaModels
from server.api.ollama.ndjson import NDJSONResponse
from server.api.ollama.options import split_options
from server.api.ollama.protocol import (
    ChatRequest,
    ChatResponse,
    CopyRequest,
    CreateRequest,
    EmbeddingsRequest,
    EmbeddingsResponse,
    EmbedRequest,
    EmbedResponse,
    GenerateRequest,
    GenerateResponse,
    ModelRequest,
    ProgressResponse,
    PsResponse,
    PullRequest,
    ShowResponse,
    TagsResponse,
    VersionResponse,
)
from server.api.ollama.serving import OllamaGeneration
from server.api.services import from_state
from server.errors import Forbidden, GGUFServeError, InvalidRequest
from server.settings import Settings

# The Ollama version whose API this server follows (clients gate features on it).
OLLAMA_API_VERSION = "0.6.0"

router = APIRouter(tags=["ollama"])


Gen = Annotated[OllamaGeneration, Depends(from_state("ollama_generation", OllamaGeneration))]
Models = Annotated[OllamaModels, Depends(from_state("ollama_models", OllamaModels))]
Embeds = Annotated[OllamaEmbeddings, Depends(from_state("ollama_embeddings", OllamaEmbeddings))]


@router.get("/", response_class=PlainTextResponse)
@router.head("/", response_class=PlainTextResponse)
async def root() -> str:
    return "Ollama is running"


@router.get("/api/version")
async def version() -> VersionResponse:
    return VersionResponse(version=OLLAMA_API_VERSION)


@router.post("/api/chat", response_model=None)
async def chat(body: ChatRequest, service: Gen, request: Request) -> ChatResponse | NDJSONResponse:
    if not body.messages:
        return await service.load_only(body.model, body.options, body.keep_alive, ChatResponse)
    run = await service.prepare_chat(body)
    if body.stream:
        return NDJSONResponse(service.chat_stream(run))
    return await until_disconnect(request, service.chat_once(run))


@router.post("/api/generate", response_model=None)
async def generate(
    body: GenerateRequest, service: Gen, request: Request
) -> GenerateResponse | NDJSONResponse:
    if not body.prompt and not body.context:
        return await service.load_only(body.model, body.options, body.keep_alive, GenerateResponse)
    run = await service.prepare_generate(body)
    if body.stream:
        return NDJSONResponse(service.generate_stream(run))
    return await until_disconnect(request, service.generate_once(run))


@router.post("/api/embed")
async def embed(body: EmbedRequest, service: Embeds) -> EmbedResponse:
    return await service.embed(body)


@router.post("/api/embeddings")
async def embeddings_legacy(body: EmbeddingsRequest, service: Embeds) -> EmbeddingsResponse:
    return await service.embeddings(body)


@router.get("/api/tags")
async def tags(service: Models) -> TagsResponse:
    return await service.tags()


@router.post("/api/show")
async def show(body: ModelRequest, service: Models) -> ShowResponse:
    if not body.target():
        raise InvalidRequest("model is required", param="model")
    return await service.show(body.target())


@router.get("/api/ps")
async def ps(service: Models) -> PsResponse:
    return service.ps()


@router.delete("/api/delete")
async def delete(body: ModelRequest, service: Models) -> Response:
    if not body.target():
        raise InvalidRequest("model is required", param="model")
    await service.delete(body.target())
    return Response(status_code=200)


@router.post("/api/copy")
async def copy(body: CopyRequest, service: Models) -> Response:
    await service.copy(body.source, body.destination)
    return Response(status_code=200)


async def _progress_lines(
    first: ProgressResponse | None, rest: AsyncIterator[ProgressResponse]
) -> AsyncIterator[str]:
    try:
        if first is not None:
            yield first.model_dump_json(exclude_none=True)
        async for item in rest:
            yield item.model_dump_json(exclude_none=True)
    except GGUFServeError as exc:  # after the first line the status is sent: report in-band
        yield json.dumps({"error": exc.message})


async def _progress(
    items: AsyncIterator[ProgressResponse], stream: bool
) -> ProgressResponse | NDJSONResponse:
    """Errors before the first progress line get a proper status; later ones go in-band."""
    first = await anext(items, None)
    if stream:
        return NDJSONResponse(_progress_lines(first, items))
    last = first
    async for item in items:
        last = item
    return last or ProgressResponse(status="success")


@router.post("/api/pull", response_model=None)
async def pull(
    body: PullRequest, service: Models, request: Request
) -> ProgressResponse | NDJSONResponse:
    if not body.target():
        raise InvalidRequest("model is required", param="model")
    if body.insecure:
        check_insecure_allowed(request)
    return await _progress(service.pull(body.target(), insecure=body.insecure), body.stream)


def check_insecure_allowed(request: Request) -> None:
    """Plain-http pulls are for the person at this machine (a local test registry), not for
    any client on the network, unless the operator allows them (allow_insecure_pulls).

    Raises Forbidden.
    """
    settings: Settings = request.app.state.settings
    client = request.client.host if request.client else ""
    if not settings.allow_insecure_pulls and not is_loopback(client):
        raise Forbidden(
            "insecure pulls are accepted only from this machine; the operator can set "
            "allow_insecure_pulls",
            param="insecure",
        )


@router.post("/api/create", response_model=None)
async def create(body: CreateRequest, service: Models) -> ProgressResponse | NDJSONResponse:
    if body.parameters:
        split_options(body.parameters)  # a bad value is a 400 now, not in every later request
    return await _progress(service.create(body), body.stream)


@router.head("/api/blobs/{digest}")
async def blob_exists(digest: str, service: Models) -> Response:
    return Response(status_code=200 if await service.has_blob(digest) else 404)


@router.post("/api/blobs/{digest}")
async def blob_upload(digest: str, request: Request, service: Models) -> Response:
    if await service.has_blob(digest):
        return Response(status_code=200)
    await service.put_blob(digest, request.stream())
    return Response(status_code=201)
