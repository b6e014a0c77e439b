"""Continuous-batching engine: one worker thread owns the llama context and its slots.

Each decode step batches one new token for every generating slot together with prompt chunks
of newly admitted requests (chunked prefill bounded by n_batch). Requests arrive on a FIFO
queue; results go back to each request's asyncio queue via call_soon_threadsafe.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

import llama_cpp

from server.engine.courier import Courier
from server.engine.embeddings import Embedder, normalized
from server.engine.fault import FaultHook, Part, run_isolated
from server.engine.jobs import (
    GenerationStreamImpl,
    Job,
    Slot,
    common_prefix,
    deliver,
    end_report,
)
from server.engine.loader import LlamaHandles
from server.engine.logprobs import token_logprobs
from server.engine.queue_stream import Item
from server.engine.sampling import Sampler
from server.engine.step import StepBatch
from server.engine.textstream import TextStream
from server.engine.tokenizer import Tokenizer
from server.engine.types import (
    EngineReporter,
    FinishReason,
    GenerationEvent,
    GenerationRequest,
    Outcome,
    SlotInfo,
    TokenLogprob,
    Usage,
    check_token_ids,
)
from server.errors import ContextLengthExceeded, EngineError, InvalidRequest, Overloaded

logger = logging.getLogger(__name__)

T = TypeVar("T")


class BatchEngine:
    """The Engine implementation on llama.cpp's batch API with `n_parallel` slots."""

    def __init__(
        self,
        handles: LlamaHandles,
        *,
        max_queue: int,
        reporter: EngineReporter | None = None,
        fault: FaultHook | None = None,  # tests only: see engine.fault
    ) -> None:
        self._h = handles
        self._reporter = reporter
        self._ctx = handles.ctx
        self._mem = handles.memory
        self.tokenizer = Tokenizer(handles.vocab)
        opts = handles.options
        self._n_batch = max(opts.n_batch, opts.n_parallel)
        self._n_ctx_slot = handles.n_ctx_seq
        self._max_queue = max_queue
        self._slots = [Slot(i) for i in range(opts.n_parallel)]
        self._pending: deque[Job] = deque()
        self._calls: deque[tuple[Callable[[], Any], Future[Any]]] = deque()
        self._cv = threading.Condition()
        self._closing = False
        self._embedder: Embedder | None = None  # created on the first embedding request
        self._use_counter = itertools.count(1)
        self._stepper = StepBatch(self._n_batch, self.tokenizer.n_vocab, fault)
        self._courier = Courier(deliver, lambda job: job.loop)
        self._thread = threading.Thread(target=self._run, name="gguf-serve-engine", daemon=True)
        self._thread.start()

    # ---- called from the event loop -------------------------------------------------------

    @property
    def n_ctx_slot(self) -> int:
        return self._n_ctx_slot

    @property
    def n_parallel(self) -> int:
        return len(self._slots)

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        return self.tokenizer.tokenize(text, add_special=add_special)

    def detokenize(self, tokens: list[int]) -> str:
        return self.tokenizer.detokenize(tokens)

    def submit(self, request: GenerationRequest) -> GenerationStreamImpl:
        n_prompt = len(request.prompt_tokens)
        if n_prompt == 0:
            raise InvalidRequest("the prompt is empty", param="prompt")
        check_token_ids(request.prompt_tokens, self.tokenizer.n_vocab, param="prompt")
        wanted = n_prompt + (request.max_tokens or 1)
        if wanted > self._n_ctx_slot:
            detail = (
                f"({n_prompt} in the prompt, {request.max_tokens} in the completion)"
                if request.max_tokens
                else f"({n_prompt} in the prompt)"
            )
            raise ContextLengthExceeded(
                f"This model's maximum context length is {self._n_ctx_slot} tokens. However, you "
                f"requested {wanted} tokens {detail}. Please reduce the length of the prompt or "
                "the completion.",
                param="messages",
            )
        loop = asyncio.get_running_loop()
        with self._cv:
            if self._closing:
                raise EngineError("the model is being unloaded")
            free = sum(1 for s in self._slots if s.job is None)
            if len(self._pending) - free >= self._max_queue:
                raise Overloaded(
                    f"all {len(self._slots)} slots are busy and {self._max_queue} requests are "
                    "already waiting; retry later",
                    retry_after=1,
                )
            sampling = request.sampling
            if request.ignore_eos:  # as llama-server does: end-of-generation tokens never win
                bias = tuple((t, float("-inf")) for t in self.tokenizer.eog_tokens())
                sampling = dataclasses.replace(sampling, logit_bias=sampling.logit_bias + bias)
            sampler = Sampler(sampling, self._h.vocab, self.tokenizer.n_vocab)
            job = Job(request, sampler, loop)
            self._pending.append(job)
            self._cv.notify()
        return GenerationStreamImpl(self, job)

    def cancel(self, job: Job) -> None:
        """Mark `job` cancelled; the worker frees its slot at its next step (keeping the KV it
        evaluated as the slot's reusable prefix)."""
        with self._cv:
            job.cancelled = True
            self._cv.notify()

    def slots(self) -> list[SlotInfo]:
        out = []
        for s in self._slots:
            job = s.job
            out.append(
                SlotInfo(
                    id=s.id,
                    state=s.state,  # type: ignore[arg-type]
                    prompt_tokens=len(job.req.prompt_tokens) if job else 0,
                    cached_tokens=s.cached if job else 0,
                    generated_tokens=s.generated if job else 0,
                    kv_tokens=len(s.tokens),
                )
            )
        return out

    async def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the worker thread between decode steps (the only thread that may touch
        the context) and return its result."""
        future: Future[T] = Future()
        with self._cv:
            if self._closing:
                raise EngineError("the model is being unloaded")
            self._calls.append((fn, future))
            self._cv.notify()
        return await asyncio.wrap_future(future)

    @property
    def n_vocab(self) -> int:
        return self.tokenizer.n_vocab

    @property
    def n_embd(self) -> int:
        """Length of the vectors `embed` returns."""
        return int(llama_cpp.llama_model_n_embd_out(self._h.model))

    @property
    def fim_tokens(self) -> tuple[int, int, int] | None:
        return self.tokenizer.fim

    async def embed(
        self, inputs: list[list[int]], *, normalize: bool = True, truncate: bool = False
    ) -> list[list[float]]:
        """One pooled (and, by default, L2-normalised) vector per token list.

        Runs on a second context over the same weights, one decode per group of inputs,
        between generation steps. Raises ContextLengthExceeded (param `input`) for an input
        longer than the context unless `truncate`, InvalidRequest for an empty input.
        """
        limit = self._n_ctx_slot
        if truncate:
            inputs = [tokens[:limit] for tokens in inputs]
        for i, tokens in enumerate(inputs):
            if not tokens:
                raise InvalidRequest(f"input {i} is empty", param="input")
            check_token_ids(tokens, self.tokenizer.n_vocab, param="input")
            if len(tokens) > limit:
                raise ContextLengthExceeded(
                    f"input {i} has {len(tokens)} tokens; this model embeds at most {limit}",
                    param="input",
                )
        embedder = await self.call(self._get_embedder)
        vectors: list[list[float]] = []
        for group in embedder.batches(inputs):
            chunk = [inputs[i] for i in group]
            pooled = await self.call(functools.partial(embedder.embed, chunk))
            vectors.extend(normalized(v) if normalize else v.astype(float).tolist() for v in pooled)
        return vectors

    def _get_embedder(self) -> Embedder:
        if self._embedder is None:
            opts = self._h.options
            self._embedder = Embedder(
                self._h.model,
                n_ctx=self._n_ctx_slot,
                n_ubatch=opts.n_ubatch,
                n_threads=opts.n_threads,
                flash_attn=opts.flash_attn,
            )
        return self._embedder

    async def kv_state_bytes(self) -> int:
        """Bytes of KV state the slots hold, as llama.cpp serialises it (K and V at their types)."""

        def measure() -> int:
            return sum(
                int(llama_cpp.llama_state_seq_get_size(self._ctx, s.id)) for s in self._slots
            )

        return await self.call(measure)

    def queued(self) -> int:
        """Requests submitted and waiting for a slot."""
        return len(self._pending)

    def busy(self) -> bool:
        """Whether any request is running or waiting."""
        return bool(self._pending) or any(s.job is not None for s in self._slots)

    def close(self) -> None:
        """Stop the worker, fail what is left, free llama.cpp objects."""
        with self._cv:
            if self._closing:
                return
            self._closing = True
            self._cv.notify()
        self._thread.join()
        leftovers: list[tuple[Job, Item]] = []
        for job in self._pending:
            leftovers.append((job, EngineError("the model was unloaded")))
            self._report_end("error", job)
            job.sampler.free()
        self._pending.clear()
        for slot in self._slots:
            if slot.job is not None:
                leftovers.append((slot.job, EngineError("the model was unloaded")))
                self._report_end("error", slot.job, slot)
                slot.job.sampler.free()
                slot.job = None
        self._courier.send(leftovers)
        self._courier.close()
        self._stepper.free()
        if self._embedder is not None:
            self._embedder.close()
        self._h.close()

    # ---- the worker -------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cv:
                while (
                    not self._closing
                    and not self._pending
                    and not self._calls
                    and all(s.job is None for s in self._slots)
                ):
                    self._cv.wait()
                if self._closing:
                    for _, future in self._calls:
                        future.set_exception(EngineError("the model was unloaded"))
                    return
                calls = list(self._calls)
                self._calls.clear()
                self._reap_cancelled()
                self._admit()
            out: list[tuple[Job, Item]] = []
            for fn, future in calls:
                try:
                    future.set_result(fn())
                except Exception as exc:
                    future.set_exception(exc)
            try:
                out.extend(self._step())
            except Exception as exc:  # a failure of the whole batch: fail its requests only
                logger.exception("decode step failed")
                out.extend(self._fail_active(exc))
            self._courier.send(out)

    def _reap_cancelled(self) -> None:
        if any(j.cancelled for j in self._pending):
            for job in [j for j in self._pending if j.cancelled]:
                self._pending.remove(job)
                self._report_end("cancelled", job)
                job.sampler.free()
        for slot in self._slots:
            if slot.job is not None and slot.job.cancelled:
                self._report_end("cancelled", slot.job, slot)
                # A stopped answer keeps what the slot evaluated (prompt and generated tokens,
                # all in the KV cache: `tokens` mirrors it) as its reusable prefix, exactly as a
                # finished one does: the next turn of that conversation starts from there.
                self._release(slot, clear_kv=False)

    def _admit(self) -> None:
        while self._pending:
            free = [s for s in self._slots if s.job is None]
            if not free:
                return
            job = self._pending.popleft()
            prompt = job.req.prompt_tokens
            best, best_lcp = _choose_slot(free, prompt)
            reuse = min(best_lcp, len(prompt) - 1)  # evaluate at least one token for logits
            if reuse < len(best.tokens) and not llama_cpp.llama_memory_seq_rm(
                self._mem, best.id, reuse, -1
            ):
                llama_cpp.llama_memory_seq_rm(self._mem, best.id, -1, -1)
                reuse = 0
            del best.tokens[reuse:]
            best.job = job
            best.n_done = reuse
            best.cached = reuse
            best.generated = 0
            best.pending = -1
            best.text = TextStream(job.req.stop)
            job.t_admit = time.perf_counter()
            job.sampler.prime(prompt, job.req.sampling.repeat_last_n)
            if self._reporter is not None:
                self._tell(self._reporter.admitted, job.t_admit - job.t_submit)

    def _release(self, slot: Slot, *, clear_kv: bool) -> None:
        job = slot.job
        if job is not None:
            job.sampler.free()
        slot.job = None
        slot.pending = -1
        slot.text = None
        slot.last_used = next(self._use_counter)
        if clear_kv:
            llama_cpp.llama_memory_seq_rm(self._mem, slot.id, -1, -1)
            slot.tokens.clear()

    def _fail_active(self, exc: Exception) -> list[tuple[Job, Item]]:
        out: list[tuple[Job, Item]] = []
        for slot in self._slots:
            if slot.job is not None:
                out.append((slot.job, EngineError(f"generation failed: {exc}")))
                self._report_end("error", slot.job, slot)
                self._release(slot, clear_kv=True)
        return out

    def _step(self) -> list[tuple[Job, Item]]:
        """One decode step; a failed decode fails only the requests that cause it (fault.py)."""
        parts = self._stepper.plan(self._slots)
        out: list[tuple[Job, Item]] = []
        if parts:
            run_isolated(
                parts,
                functools.partial(self._stepper.decode, self._ctx),
                lambda done: out.extend(self._sample(done)),
                functools.partial(self._stepper.rollback, self._mem),
                lambda part, rc: out.extend(self._fail_part(part, rc)),
            )
        return out

    def _fail_part(self, part: Part, rc: int) -> list[tuple[Job, Item]]:
        slot, job = part.slot, part.slot.job
        if job is None:
            return []
        logger.error("slot %d: llama_decode failed (%d) on this request's tokens", slot.id, rc)
        self._report_end("error", job, slot)
        self._release(slot, clear_kv=True)
        return [(job, EngineError(f"generation failed: llama_decode returned {rc}"))]

    def _sample(self, parts: Sequence[Part]) -> list[tuple[Job, Item]]:
        out: list[tuple[Job, Item]] = []
        now = time.perf_counter()
        for part in parts:
            slot, job = part.slot, part.slot.job
            if not part.output or job is None:
                continue
            try:
                event = self._after_sample(slot, job, part.index, now)
            except Exception as exc:
                logger.exception("request failed in slot %d", slot.id)
                out.append((job, EngineError(f"generation failed: {exc}")))
                self._report_end("error", job, slot)
                self._release(slot, clear_kv=True)
                continue
            if event is not None:
                out.append((job, event))
        return out

    def _after_sample(self, slot: Slot, job: Job, idx: int, now: float) -> GenerationEvent | None:
        token = job.sampler.sample(self._ctx, idx)
        if not job.t_first:
            job.t_first = now
            if self._reporter is not None:
                self._tell(self._reporter.first_token, now - job.t_submit)
        slot.generated += 1
        req = job.req
        lps: tuple[TokenLogprob, ...] = ()
        text_stream = slot.text
        assert text_stream is not None
        finish: FinishReason | None = None
        if self.tokenizer.is_eog(token):
            text = text_stream.flush()
            finish = "stop"
        else:
            if req.logprobs is not None:
                lps = (token_logprobs(self._ctx, idx, token, req.logprobs, self.tokenizer),)
            text = text_stream.push(self.tokenizer.piece(token))
            if text_stream.stopped:
                finish = "stop"
            elif job.watch is not None and text and job.watch.complete(text):
                finish = "stop"  # e.g. the tool calls are complete: nothing more is wanted
                text += text_stream.flush()
            elif (req.max_tokens is not None and slot.generated >= req.max_tokens) or len(
                slot.tokens
            ) + 1 >= self._n_ctx_slot:
                finish = "length"
                text += text_stream.flush()
            else:
                slot.pending = token
        if finish is None:
            return GenerationEvent(text=text, logprobs=lps) if text or lps else None
        end = time.perf_counter()
        usage = Usage(
            prompt_tokens=len(req.prompt_tokens),
            completion_tokens=slot.generated,
            cached_tokens=slot.cached,
            queue_seconds=job.t_admit - job.t_submit,
            prompt_seconds=job.t_first - job.t_admit,
            generation_seconds=end - job.t_first,
        )
        generated = slot.tokens[len(req.prompt_tokens) :]
        if not self.tokenizer.is_eog(token):
            generated.append(token)
        self._report_end(finish, job, slot, end)
        self._release(slot, clear_kv=False)
        return GenerationEvent(
            text=text,
            finish_reason=finish,
            usage=usage,
            logprobs=lps,
            completion_ids=tuple(generated),
        )

    # ---- reporting (metrics) ------------------------------------------------------------------

    def _report_end(
        self, outcome: Outcome, job: Job, slot: Slot | None = None, end: float | None = None
    ) -> None:
        """Tell the reporter how `job` ended; `slot` is where it ran (None: it never got one)."""
        if self._reporter is not None:
            self._tell(self._reporter.finished, end_report(outcome, job, slot, end))

    def _tell(self, method: Callable[[Any], None], value: Any) -> None:
        try:
            method(value)
        except Exception:  # metrics must never take a request (or the worker) down
            logger.exception("the engine's reporter failed")


def _choose_slot(free: list[Slot], prompt: list[int]) -> tuple[Slot, int]:
    """The free slot for `prompt` and how many of its cached tokens the prompt shares.

    The slot whose cache the prompt continues most, if it continues at least half of that
    cache (llama-server's slot-similarity rule); otherwise the least recently used slot, so a
    short shared start (a chat template's first tokens) does not throw away another
    conversation's cache while an older or empty slot is free.
    """
    shared = [(common_prefix(slot.tokens, prompt), slot) for slot in free]
    lcp, best = max(shared, key=lambda item: (item[0], -item[1].last_used))
    if lcp and 2 * lcp >= len(best.tokens):
        return best, lcp
    lru = min(free, key=lambda slot: slot.last_used)
    return lru, next(n for n, slot in shared if slot is lru)
