"""create_app(settings): wiring, lifespan, error handlers; the only module that knows FastAPI."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from server import __version__
from server.api import insight, system
from server.api import plan as plan_routes
from server.api.edge import Edge
from server.api.errors import describe_validation, error_payload, headers_for, status_for
from server.api.lifecycle import Lifecycle
from server.api.metrics import Metrics
from server.api.metrics_http import HTTPMetrics, RouteRecorder, mark_rejection
from server.api.ollama import routes as ollama_routes
from server.api.ollama.embed import OllamaEmbeddings
from server.api.ollama.models import OllamaModels
from server.api.ollama.serving import OllamaGeneration
from server.api.openai import routes as openai_routes
from server.api.openai.completions import CompletionService
from server.api.openai.embeddings import EmbeddingService
from server.api.openai.models import ModelsService
from server.api.openai.serving import ChatService
from server.api.shutdown import Drain, GracefulServer
from server.api.text_guard import reject_untokenizable_text
from server.api.ui import UIFiles
from server.errors import GGUFServeError, ModelNotFound
from server.planning import DeviceLister, Planner
from server.registry import Registry
from server.rpc_planning import RpcDevices
from server.scheduler import EngineFactory, ModelManager
from server.settings import Settings

logger = logging.getLogger(__name__)

_HTTP_TYPES = {400: "invalid_request_error", 404: "not_found_error", 405: "invalid_request_error"}
# Served without an API key: the readiness probe, and the static chat page (it holds no data
# and asks the user for the key).
PUBLIC_PATHS = ("/health", "/ui")


def _error_response(
    request: Request,
    status: int,
    message: str,
    type_: str,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = error_payload(request.url.path, message, type_, param, code)
    return JSONResponse(body, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GGUFServeError)
    async def _domain(request: Request, exc: GGUFServeError) -> JSONResponse:
        mark_rejection(request, exc)
        status = status_for(exc)
        if status >= 500:
            logger.error("%s %s failed: %s", request.method, request.url.path, exc.message)
        return _error_response(
            request, status, exc.message, exc.type, exc.param, exc.code, headers_for(exc)
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = describe_validation(exc)
        return _error_response(
            request, 400, message, "invalid_request_error", param, "invalid_value"
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = _HTTP_TYPES.get(exc.status_code, "invalid_request_error")
        return _error_response(request, exc.status_code, str(exc.detail), type_)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error_response(request, 500, "internal server error", "server_error")


async def _preload(app: FastAPI, settings: Settings) -> None:
    """Warm the default model so the first request does not pay for loading; then mark ready."""
    manager: ModelManager = app.state.manager
    try:
        lease = await manager.acquire(settings.default_model)
        lease.release()
        logger.info("default model %s is loaded", settings.default_model)
    except ModelNotFound:
        logger.warning(
            "default model %s is not in the store; pull it with `gguf-serve pull %s`",
            settings.default_model,
            settings.default_model,
        )
    except GGUFServeError as exc:
        logger.error("could not preload %s: %s", settings.default_model, exc.message)
    finally:
        app.state.ready.set()


def create_app(
    settings: Settings,
    *,
    registry: Registry | None = None,
    engine_factory: EngineFactory | None = None,
    preload: bool = True,
    devices: DeviceLister | None = None,
    rpc: RpcDevices | None = None,
) -> FastAPI:
    """Build the application; state lives on app.state, created here (no globals).

    `devices` lists the memory devices to plan for (default: llama.cpp's, on first use);
    `rpc` describes rpc-servers for plans (default: llama.cpp asks them).
    """
    registry = registry or Registry(settings)
    planner = Planner(settings, registry, devices, rpc)
    metrics = Metrics() if settings.metrics else None
    drain = Drain(settings.shutdown_grace_seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        manager = ModelManager(
            settings, registry, engine_factory, planner=planner, reporter=metrics
        )
        if metrics is not None:
            metrics.watch(manager)
        app.state.manager = manager
        drain.attach(asyncio.get_running_loop())
        lifecycle = app.state.lifecycle = Lifecycle(
            manager, settings.default_model, metrics, drain=drain
        )
        app.state.chat_service = ChatService(lifecycle, max_tool_calls=settings.max_tool_calls)
        app.state.completion_service = CompletionService(lifecycle)
        app.state.embedding_service = EmbeddingService(lifecycle)
        app.state.models_service = ModelsService(registry)
        app.state.ollama_generation = OllamaGeneration(
            lifecycle, max_tool_calls=settings.max_tool_calls
        )
        app.state.ollama_models = OllamaModels(registry, manager, planner)
        app.state.ollama_embeddings = OllamaEmbeddings(lifecycle)
        app.state.ready = asyncio.Event()
        task = asyncio.create_task(_preload(app, settings)) if preload else None
        if task is None:
            app.state.ready.set()
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
            drain.cancel_timer()
            await manager.close()

    app = FastAPI(
        title="gguf-serve",
        version=__version__,
        lifespan=lifespan,
        dependencies=[Depends(reject_untokenizable_text)],
    )
    app.state.settings = settings
    app.state.registry = registry
    app.state.planner = planner
    app.state.metrics = metrics
    app.state.drain = drain
    if metrics is not None:
        app.add_middleware(RouteRecorder)  # innermost: next to the router
    public = PUBLIC_PATHS + (("/metrics",) if settings.metrics_public else ())
    app.add_middleware(Edge, settings=settings, public_paths=public)
    if metrics is not None:
        # outermost: it sees every refusal of the edge inside it
        app.add_middleware(HTTPMetrics, metrics=metrics)
    _install_error_handlers(app)
    app.include_router(system.router)
    app.include_router(plan_routes.router)
    app.include_router(insight.router)
    app.include_router(openai_routes.router)
    app.include_router(ollama_routes.router)
    if settings.ui:
        app.mount("/ui", UIFiles(), name="ui")
    return app


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def run_server(settings: Settings) -> None:
    """Serve until SIGINT/SIGTERM: stop accepting, let running requests finish for
    shutdown_grace_seconds, end the rest with a final event, unload, exit 0."""
    import uvicorn

    configure_logging(settings.log_level)
    app = create_app(settings)
    logger.info(
        "gguf-serve %s listening on http://%s:%d", __version__, settings.host, settings.port
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # The drain ends what still runs at shutdown_grace_seconds; uvicorn's own limit is a
        # backstop past that, for requests the drain does not know (loads, pulls, uploads).
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds) + 10,
        access_log=settings.log_level == "debug",
    )
    GracefulServer(config, app.state.drain).run()
