"""One generating request's life: resolve -> lease -> prepare -> submit -> stream -> release.

OpenAI chat and completions and Ollama chat and generate all run through `Lifecycle.start` and
the `Run` it returns; an API only says how to turn its request into engine requests for the
loaded model (its `prepare`) and how to encode the events (its encoder, streamed through
`Run.stream` or collected with `Run.results`). What a request costs and how it ends (time to
load, queue time, time to first token, tokens, status) is therefore seen in one place: each
run tells the lifecycle's observer (metrics) how it ended.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar

from server.api.shutdown import Drain
from server.api.streams import Collected, collect, merge_streams, submit_all
from server.engine.types import Engine, GenerationEvent, GenerationRequest, GenerationStream
from server.errors import GGUFServeError, ServerShuttingDown
from server.scheduler import Lease, LoadedModel, ModelManager

T = TypeVar("T")

_LONG_PROMPT_CHARS = 8192  # tokenize longer prompts off the event loop


async def tokenize(engine: Engine, text: str) -> list[int]:
    """The prompt's token ids (special-token text parsed), off the event loop when long."""
    if len(text) > _LONG_PROMPT_CHARS:
        return await asyncio.to_thread(engine.tokenize, text)
    return engine.tokenize(text)


@dataclass
class Prepared(Generic[T]):
    """An API's engine requests for the loaded model, and what its encoder needs later.

    `grammar_param` names the request field a grammar came from, for the 400 when llama.cpp
    rejects it.
    """

    requests: list[GenerationRequest]
    info: T
    grammar_param: str = "grammar"


Prepare = Callable[[LoadedModel], Awaitable[Prepared[T]]]
RunOutcome = Literal["completed", "cancelled", "failed"]


class RunObserver(Protocol):
    """Told once per run how it ended (metrics); called on the event loop, must be quick."""

    def run_ended(self, api: str, model: str, outcome: RunOutcome) -> None:
        """`completed`: every choice reached its end; `cancelled`: the client left first;
        `failed`: an error ended it after it started."""
        ...


@dataclass(eq=False)
class Run(Generic[T]):
    """A submitted request: its hold on the model, one engine stream per choice, its clock."""

    model: str  # the loaded model's name, as answers report it
    lease: Lease
    streams: list[GenerationStream]
    info: T
    started: float  # perf_counter() when the request arrived
    load_seconds: float  # resolving and (if needed) loading the model
    api: str = ""  # the API that runs it (openai, ollama), for the observer
    observer: RunObserver | None = None
    drain: Drain | None = None  # told when the run ends (graceful shutdown)
    _closed: bool = False
    _ended: int = 0  # choices that reached their final event
    _failed: bool = False

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    async def events(self) -> AsyncIterator[tuple[int, GenerationEvent]]:
        """(choice index, event) as the engine produces them; the run is released at the end."""
        try:
            async for item in merge_streams(self.streams):
                if item[1].finish_reason is not None:
                    self._ended += 1
                yield item
        except GGUFServeError:
            self._failed = True
            raise
        finally:
            await self.close()

    async def stream(
        self, lines: AsyncIterator[str], error: Callable[[GGUFServeError], str]
    ) -> AsyncIterator[str]:
        """A streamed body: the encoder's `lines`, then an in-band error line for a failure after
        the status was sent; the run is released however the stream ends (disconnects too)."""
        try:
            async for line in lines:
                yield line
        except GGUFServeError as exc:
            self._failed = True
            yield error(exc)
        finally:
            await self.close()

    async def results(self) -> list[Collected]:
        """Every choice run to its end (a non-stream answer); the run is released afterwards."""
        try:
            results = list(await asyncio.gather(*(collect(s) for s in self.streams)))
            self._ended = sum(1 for r in results if r.finish_reason is not None)
            return results
        except GGUFServeError:
            self._failed = True
            raise
        finally:
            await self.close()

    async def close(self) -> None:
        """Cancel what still runs and let the model go (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self.drain is not None:
            self.drain.untrack(self)
        try:
            for stream in self.streams:
                await stream.aclose()
        finally:
            self.lease.release()
            self._report()

    def _report(self) -> None:
        if self.observer is None:
            return
        outcome: RunOutcome
        if self._failed:
            outcome = "failed"
        elif self._ended >= len(self.streams):
            outcome = "completed"
        else:
            outcome = "cancelled"
        self.observer.run_ended(self.api, self.model, outcome)
        self.observer = None  # once

    def interrupt(self, exc: ServerShuttingDown) -> None:
        """End the answer now (shutdown): each stream's reader gets `exc` after what it has."""
        for stream in self.streams:
            stream.interrupt(exc)


class Lifecycle:
    """Leases models from the manager and runs generation requests on them."""

    def __init__(
        self,
        manager: ModelManager,
        default_model: str,
        observer: RunObserver | None = None,
        drain: Drain | None = None,
    ) -> None:
        self.manager = manager
        self.default_model = default_model
        self.observer = observer
        self.drain = drain

    @asynccontextmanager
    async def hold(
        self,
        model: str | None,
        *,
        overrides: dict[str, Any] | None = None,
        keep_alive: float | None = None,
    ) -> AsyncIterator[tuple[Lease, float]]:
        """(lease, seconds it took to get it) on `model` (the default when None) for the block.

        Raises ModelNotFound, InvalidName, InvalidRequest (load options), ModelLoadError.
        """
        started = time.perf_counter()
        lease = await self.manager.acquire(
            model or self.default_model, overrides=overrides, keep_alive=keep_alive
        )
        try:
            yield lease, time.perf_counter() - started
        finally:
            lease.release()

    async def start(
        self,
        model: str | None,
        prepare: Prepare[T],
        *,
        api: str,
        overrides: dict[str, Any] | None = None,
        keep_alive: float | None = None,
    ) -> Run[T]:
        """Lease `model`, let `prepare` render and tokenize for it, and queue its requests.

        Every 4xx/5xx is raised here, before a byte of the answer is sent: the model's lookup
        and load, the prompt, the context length, a full queue, a grammar llama.cpp rejects,
        a server that is shutting down (503).
        """
        if self.drain is not None and self.drain.draining:
            raise ServerShuttingDown("the server is shutting down", retry_after=5)
        started = time.perf_counter()
        lease = await self.manager.acquire(
            model or self.default_model, overrides=overrides, keep_alive=keep_alive
        )
        load_seconds = time.perf_counter() - started
        try:
            prepared = await prepare(lease.model)
            streams = await submit_all(
                lease.model.engine, prepared.requests, grammar_param=prepared.grammar_param
            )
        except BaseException:
            lease.release()
            raise
        run = Run(
            model=lease.model.name,
            lease=lease,
            streams=streams,
            info=prepared.info,
            started=started,
            load_seconds=load_seconds,
            api=api,
            observer=self.observer,
            drain=self.drain,
        )
        if self.drain is not None:
            self.drain.track(run)
        return run
