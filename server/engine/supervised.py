"""An Engine whose model runs in a supervised child process.

llama.cpp aborts the whole process when an rpc-server it uses goes away. Running such a model
in a child (engine/child.py) keeps that to the child: its requests fail with 503 (ModelUnavailable),
the log says why, and a supervisor thread starts a new child once every rpc-server accepts
connections again, while the API and the other models keep serving.

The parent keeps a vocabulary-only copy of the model, so tokenizing, prompt checks and
grammar checks stay local and synchronous, as with the in-process engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from pathlib import Path
from typing import Any

import llama_cpp

from server.engine.child import ChildConfig, ReadyInfo
from server.engine.child_process import ChildProcess
from server.engine.loader import ModelFacts, ensure_backend
from server.engine.options import LoadOptions
from server.engine.remote import RemoteStream, settle
from server.engine.rpc import RpcDevice, reachable
from server.engine.sampling import Sampler
from server.engine.tokenizer import Tokenizer
from server.engine.types import GenerationEvent, GenerationRequest, SlotInfo
from server.errors import (
    ContextLengthExceeded,
    EngineError,
    GGUFServeError,
    InvalidRequest,
    ModelLoadError,
    ModelUnavailable,
)

logger = logging.getLogger(__name__)

PROBE_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 30.0


class SupervisedEngine:
    """The Engine protocol over a child process that holds the model (and its rpc-servers)."""

    def __init__(
        self,
        path: Path,
        options: LoadOptions,
        *,
        max_queue: int,
        label: str,
        facts: ModelFacts | None = None,
    ) -> None:
        self.label = label
        self._config = ChildConfig(
            path=path,
            options=options,
            # the child validates again: without the facts a layer count would read as "all"
            n_ctx_train=facts.n_ctx_train if facts else 0,
            n_layer=facts.n_layer if facts else 0,
            max_queue=max_queue,
            label=label,
            log_level=logging.getLogger().getEffectiveLevel(),
        )
        self._vocab_model = _load_vocab(path)
        self.tokenizer = Tokenizer(llama_cpp.llama_model_get_vocab(self._vocab_model))
        self._lock = threading.RLock()  # RemoteStream.__del__ may run while it is held
        self._ids = itertools.count(1)
        self._streams: dict[int, RemoteStream] = {}
        self._calls: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]]] = {}
        self._slots: list[SlotInfo] = []
        self._closing = threading.Event()
        self._down_reason = ""
        self._child: ChildProcess | None = None
        try:
            self._info = self._start_child()  # the first load's errors go to its request
        except GGUFServeError as exc:
            llama_cpp.llama_model_free(self._vocab_model)
            raise type(exc)(f"{label}: {exc.message}") from None
        except BaseException:
            llama_cpp.llama_model_free(self._vocab_model)
            raise
        self._supervisor = threading.Thread(
            target=self._supervise, name=f"gguf-serve-supervisor-{label}", daemon=True
        )
        self._supervisor.start()

    # ---- Engine protocol ---------------------------------------------------------------

    @property
    def n_ctx_slot(self) -> int:
        return self._info.n_ctx_slot

    @property
    def n_parallel(self) -> int:
        return self._info.n_parallel

    @property
    def n_vocab(self) -> int:
        return self.tokenizer.n_vocab

    @property
    def n_embd(self) -> int:
        return self._info.n_embd

    @property
    def fim_tokens(self) -> tuple[int, int, int] | None:
        return self.tokenizer.fim

    @property
    def placement(self) -> tuple[tuple[str, str, float], ...]:
        """(buffer, model|KV|compute|output, MiB) for each buffer llama.cpp allocated."""
        return self._info.placement

    @property
    def rpc_devices(self) -> tuple[RpcDevice, ...]:
        """The rpc-servers' devices and their free memory when the model loaded."""
        return self._info.devices

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        return self.tokenizer.tokenize(text, add_special=add_special)

    def detokenize(self, tokens: list[int]) -> str:
        return self.tokenizer.detokenize(tokens)

    def submit(self, request: GenerationRequest) -> RemoteStream:
        n_prompt = len(request.prompt_tokens)
        if n_prompt == 0:
            raise InvalidRequest("the prompt is empty", param="prompt")
        wanted = n_prompt + (request.max_tokens or 1)
        if wanted > self.n_ctx_slot:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {self.n_ctx_slot} tokens. However, you "
                f"requested {wanted} tokens ({n_prompt} in the prompt). Please reduce the length "
                "of the prompt or the completion.",
                param="messages",
            )
        # Grammar and logit-bias errors are the client's: find them here, before queueing.
        Sampler(request.sampling, self._vocab(), self.tokenizer.n_vocab).free()
        with self._lock:
            self._check_up()
            stream = RemoteStream(self, next(self._ids))
            self._streams[stream.rid] = stream
            child = self._child
        if child is None or not child.send(("submit", stream.rid, request)):
            self._streams.pop(stream.rid, None)
            raise ModelUnavailable(f"{self.label}: its engine process is not running")
        return stream

    async def embed(
        self, inputs: list[list[int]], *, normalize: bool = True, truncate: bool = False
    ) -> list[list[float]]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            self._check_up()
            rid = next(self._ids)
            self._calls[rid] = (loop, future)
            child = self._child
        if child is None or not child.send(("embed", rid, inputs, normalize, truncate)):
            self._calls.pop(rid, None)
            raise ModelUnavailable(f"{self.label}: its engine process is not running")
        result: list[list[float]] = await future
        return result

    def slots(self) -> list[SlotInfo]:
        return list(self._slots)

    def queued(self) -> int:
        """Requests sent to the child and not (as far as its last slot report says) in a slot."""
        with self._lock:
            running = len(self._streams)
        return max(0, running - sum(1 for slot in self._slots if slot.state != "idle"))

    def close(self) -> None:
        """Stop the child and fail what is still running (idempotent)."""
        if self._closing.is_set():
            return
        self._closing.set()
        with self._lock:
            child = self._child
        if child is not None:
            child.stop()
        self._supervisor.join(timeout=15)
        with self._lock:
            late, self._child = self._child, None
        if late is not None and late is not child:  # one the supervisor was starting
            late.stop()
        self._fail_all(EngineError("the model was unloaded"))
        llama_cpp.llama_model_free(self._vocab_model)

    # ---- the child ------------------------------------------------------------------------

    def _vocab(self) -> Any:
        return llama_cpp.llama_model_get_vocab(self._vocab_model)

    def _check_up(self) -> None:
        if self._closing.is_set():
            raise EngineError("the model is being unloaded")
        if self._down_reason or self._child is None:
            raise ModelUnavailable(
                f"{self.label} is unavailable ({self._down_reason or 'starting'}); retry later"
            )

    def cancel_remote(self, rid: int) -> None:
        with self._lock:
            known = self._streams.pop(rid, None) is not None
            child = self._child
        if known and child is not None:
            child.send(("cancel", rid))

    def _start_child(self) -> ReadyInfo:
        """Start a child and wait for its model to load.

        Raises ModelUnavailable when an rpc-server does not accept connections (llama.cpp would
        abort on it), ModelLoadError when the child could not load the model.
        """
        down = [e for e in self._config.options.rpc_servers if not reachable(e)]
        if down:
            raise ModelUnavailable(f"rpc-server {', '.join(down)} does not accept connections")
        started = time.perf_counter()
        child = ChildProcess(self.label)
        child.send(self._config)
        try:
            kind, payload = child.recv()
        except EOFError:
            reason = child.exit_reason()
            child.close_pipes()
            raise ModelLoadError(f"the engine process died loading the model ({reason})") from None
        if kind != "ready":
            child.stop()
            if isinstance(payload, GGUFServeError):
                raise payload
            raise ModelLoadError("the engine process failed to load the model")
        logger.info(
            "%s: engine process %d ready in %.2fs (rpc servers %s)",
            self.label,
            child.proc.pid,
            time.perf_counter() - started,
            ", ".join(self._config.options.rpc_servers),
        )
        with self._lock:
            self._child = child
            self._down_reason = ""
        info: ReadyInfo = payload
        return info

    def _supervise(self) -> None:
        """Relay the child's messages; when it dies, fail its requests and start another."""
        backoff = PROBE_SECONDS
        while not self._closing.is_set():
            child = self._child
            if child is not None:
                self._pump(child)
                reason = child.exit_reason()
                child.close_pipes()
                if self._closing.is_set():
                    return
                with self._lock:
                    self._child = None
                    self._down_reason = f"its engine process died ({reason})"
                self._slots = []
                logger.error(
                    "%s: engine process %d died (%s); failing its requests, restarting when "
                    "rpc servers %s accept connections",
                    self.label,
                    child.proc.pid,
                    reason,
                    ", ".join(self._config.options.rpc_servers),
                )
                self._fail_all(
                    ModelUnavailable(f"{self.label} is unavailable ({self._down_reason})")
                )
            down = [e for e in self._config.options.rpc_servers if not reachable(e)]
            if down:  # a cheap probe every second; loads only once every server answers
                with self._lock:
                    self._down_reason = f"rpc-server {', '.join(down)} does not accept connections"
                self._closing.wait(PROBE_SECONDS)
                continue
            try:
                self._info = self._start_child()
                backoff = PROBE_SECONDS
                if self._closing.is_set():
                    return  # close() stops the child it finds
                logger.info("%s: restored", self.label)
            except GGUFServeError as exc:  # the load failed: back off before the next one
                with self._lock:
                    self._down_reason = exc.message
                self._closing.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    def _pump(self, child: ChildProcess) -> None:
        while True:
            try:
                message = child.recv()
            except EOFError:
                return
            kind = message[0]
            if kind == "slots":
                self._slots = message[1]
            elif kind == "event":
                event: GenerationEvent = message[2]
                with self._lock:
                    stream = (
                        self._streams.pop(message[1], None)
                        if event.finish_reason is not None
                        else self._streams.get(message[1])
                    )
                if stream is not None:
                    stream.put(event)
            elif kind in ("error", "result"):
                self._resolve(message[1], message[2], failed=kind == "error")

    def _resolve(self, rid: int, value: Any, *, failed: bool) -> None:
        with self._lock:
            stream = self._streams.pop(rid, None)
            call = self._calls.pop(rid, None)
        if stream is not None:
            stream.put(value)
        elif call is not None:
            loop, future = call
            setter = future.set_exception if failed else future.set_result
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, future, setter, value)

    def _fail_all(self, error: GGUFServeError) -> None:
        with self._lock:
            streams, self._streams = list(self._streams.values()), {}
            calls, self._calls = list(self._calls.values()), {}
        for stream in streams:
            stream.put(error)
        for loop, future in calls:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, future, future.set_exception, error)


def _load_vocab(path: Path) -> Any:
    """The model's vocabulary alone (no weights, no devices): tokenizing in this process."""
    ensure_backend()
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    params.n_gpu_layers = 0
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise ModelLoadError(f"llama.cpp could not read the vocabulary of {path.name}")
    return model
