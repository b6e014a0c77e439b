"""Engine types: what the HTTP layer hands the engine and what comes back.

These are not wire schemas; routes convert between the two.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from server.errors import InvalidRequest

FinishReason = Literal["stop", "length"]
SlotStateName = Literal["idle", "prompt", "generating"]


def check_token_ids(tokens: list[int], n_vocab: int, *, param: str) -> None:
    """Every id must name a vocabulary entry before it can reach llama_decode (an id outside
    it reads past the embedding table: a failed decode for every request in the batch).

    Raises InvalidRequest naming `param`.
    """
    if tokens and (min(tokens) < 0 or max(tokens) >= n_vocab):
        bad = next(t for t in tokens if not 0 <= t < n_vocab)
        raise InvalidRequest(
            f"{param}: token id {bad} is outside the vocabulary (0..{n_vocab - 1})", param=param
        )


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """llama.cpp sampler-chain settings; temperature <= 0 means greedy."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    typical_p: float = 1.0
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()
    seed: int | None = None
    grammar: str | None = None  # GBNF, start rule `root`
    # Regex patterns that arm `grammar` lazily: free text until one matches, then the grammar
    # constrains from the pattern's first group on (tool_choice=auto). Empty: from the start.
    grammar_triggers: tuple[str, ...] = ()


class OutputWatch(Protocol):
    """Reads a request's text as it is generated and says when the answer is complete (e.g. its
    tool calls are done), so generation ends there with finish "stop". Runs on the engine's
    worker thread, once per text piece: it must be quick and never block."""

    def complete(self, text: str) -> bool: ...


@dataclass(slots=True)
class GenerationRequest:
    """One completion to run: token ids in, text out."""

    prompt_tokens: list[int]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: int | None = None  # None: off; N: also return the top-N alternatives
    ignore_eos: bool = False  # keep generating past end-of-generation tokens (benchmarks)
    watch: Callable[[], OutputWatch] | None = None  # makes this request's watch when it starts


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One sampled token with its log-probability and the top alternatives."""

    token: str
    logprob: float
    bytes: tuple[int, ...]
    top: tuple[tuple[str, float, tuple[int, ...]], ...] = ()


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts and timings of one finished request (durations in seconds)."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    queue_seconds: float = 0.0
    prompt_seconds: float = 0.0
    generation_seconds: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class GenerationEvent:
    """A piece of output: new text, and on the last event the finish reason and usage."""

    text: str
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    logprobs: tuple[TokenLogprob, ...] = ()
    completion_ids: tuple[int, ...] = ()  # on the last event: every generated token id


@dataclass(frozen=True, slots=True)
class SlotInfo:
    """Operator view of one slot (sequence) of a loaded model."""

    id: int
    state: SlotStateName
    prompt_tokens: int
    cached_tokens: int
    generated_tokens: int
    kv_tokens: int


Outcome = Literal["stop", "length", "cancelled", "error"]


@dataclass(frozen=True, slots=True)
class RequestReport:
    """What one request cost, as the engine saw it when the request ended (however it ended).

    Token counts are what was really processed: a request cancelled mid-answer reports the
    prompt tokens it evaluated and the tokens it generated until then.
    """

    outcome: Outcome
    prompt_tokens: int  # evaluated or reused from the cache
    cached_tokens: int  # reused from the slot's cache
    generated_tokens: int
    generation_seconds: float  # first token to the end


class EngineReporter(Protocol):
    """Where an engine reports its requests (metrics). Called on the engine's worker thread, a
    few times per request and never per token, so an implementation must be thread-safe and
    quick; the engine never waits on anything else for it."""

    def admitted(self, queue_seconds: float) -> None:
        """A request got a slot after waiting `queue_seconds` since it was submitted."""
        ...

    def first_token(self, seconds: float) -> None:
        """A request's first token came `seconds` after it was submitted (queue + prefill)."""
        ...

    def finished(self, report: RequestReport) -> None: ...


class GenerationStream(Protocol):
    """Async iterator of events; leaving the loop early (aclose) cancels the request."""

    def __aiter__(self) -> AsyncIterator[GenerationEvent]: ...

    async def aclose(self) -> None: ...

    def interrupt(self, exc: BaseException) -> None:
        """Cancel the request and make the reader's next step raise `exc` (after the events
        already delivered): how a server that is shutting down ends a running answer."""
        ...


class Engine(Protocol):
    """What the HTTP layer needs from a loaded model; a fake can stand in for HTTP tests."""

    @property
    def n_ctx_slot(self) -> int:
        """Context length (tokens) available to one request."""
        ...

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        """Token ids for `text`; special-token text (e.g. `<|im_start|>`) is parsed."""
        ...

    def detokenize(self, tokens: list[int]) -> str: ...

    def submit(self, request: GenerationRequest) -> GenerationStream:
        """Queue `request`; call from the event loop.

        Raises ContextLengthExceeded if it cannot fit a slot, Overloaded if the queue is full,
        InvalidRequest for sampling settings llama.cpp rejects (e.g. a bad grammar).
        """
        ...

    @property
    def n_vocab(self) -> int:
        """Token ids are 0 .. n_vocab - 1."""
        ...

    @property
    def n_embd(self) -> int:
        """Length of the vectors `embed` returns."""
        ...

    @property
    def fim_tokens(self) -> tuple[int, int, int] | None:
        """Fill-in-the-middle prefix, suffix and middle token ids; None if the model has none."""
        ...

    async def embed(
        self, inputs: list[list[int]], *, normalize: bool = True, truncate: bool = False
    ) -> list[list[float]]:
        """One pooled vector per token list (L2-normalised unless `normalize` is False).

        Raises ContextLengthExceeded (param `input`) for an input longer than the context unless
        `truncate` cuts it, InvalidRequest for an empty input.
        """
        ...

    def slots(self) -> list[SlotInfo]: ...

    def queued(self) -> int:
        """Requests submitted and waiting for a slot."""
        ...

    def close(self) -> None: ...
