"""Measuring a model: perplexity on a text and KL divergence against a reference, cached.

A KLD measurement takes two passes: the reference model's, which keeps its top-k
log-probabilities per scored position (cached on disk, and its own perplexity with them), then
the model's, scored against them. Results are cached by file digest, text digest and every
option that changes the numbers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from server.engine.logit_math import TopK
from server.engine.measure_types import ScoringOptions
from server.errors import InvalidRequest
from server.insight.cache import InsightCache, ReferenceLogits, cache_key
from server.insight.family import reference_for
from server.insight.results import PerplexityResult, TextInfo
from server.insight.stats import kld_stats, perplexity
from server.insight.texts import Text
from server.registry import Registry, ResolvedModel

logger = logging.getLogger(__name__)

# Reference log-probabilities kept per position (docs/QUANTIZATION.md measures the effect).
DEFAULT_TOP_K = 1024
AUTO = "auto"


@dataclass(frozen=True)
class ChunkProgress:
    """Progress of one pass: windows done of total, and the perplexity so far."""

    label: str
    done: int
    total: int
    ppl: float | None = None


ProgressFn = Callable[[ChunkProgress], None]


def _ignore(_: ChunkProgress) -> None:
    pass


@dataclass(frozen=True)
class _Subject:
    model: ResolvedModel
    file_digest: str  # sha256 of the GGUF file: what caches are keyed by


@dataclass
class _Pass:
    """What one pass over the windows produced."""

    tokens: np.ndarray[Any, np.dtype[np.int32]]
    n_tokens: int
    chunks: int
    total_chunks: int
    nll: np.ndarray[Any, np.dtype[np.float64]]
    kld: np.ndarray[Any, np.dtype[np.float64]] | None
    same_top: np.ndarray[Any, np.dtype[np.bool_]] | None
    top: TopK | None
    seconds: float


class Measurer:
    """Perplexity / KLD of stored models on one text with one set of scoring options."""

    def __init__(
        self,
        registry: Registry,
        cache: InsightCache,
        text: Text,
        options: ScoringOptions,
        *,
        chunks: int = 16,
        top_k: int = DEFAULT_TOP_K,
        refresh: bool = False,
        progress: ProgressFn = _ignore,
    ) -> None:
        self.registry = registry
        self.cache = cache
        self.text = text
        self.options = options
        self.chunks = chunks  # 0 = every window of the text
        self.top_k = top_k
        self.refresh = refresh
        self.progress = progress
        self._refreshed: set[str] = set()  # references remade in this run (--refresh: once)

    def _subject(self, name: str) -> _Subject:
        model = self.registry.resolve(name)
        return _Subject(model, self.registry.record(name).model_digest)

    def _reference_options(self) -> ScoringOptions:
        """The reference runs with an f16 KV cache and flash attention on auto (the defaults):
        the baseline every setting is compared to."""
        return self.options.model_copy(
            update={"type_k": "f16", "type_v": "f16", "flash_attn": "auto"}
        )

    def _key(self, subject: _Subject, options: ScoringOptions, reference: _Subject | None) -> str:
        ref = None
        if reference is not None:
            ref = [reference.file_digest, self._reference_options().numbers_key(), self.top_k]
        return cache_key(
            kind="perplexity",
            model=subject.file_digest,
            text=self.text.sha256,
            chunks=self.chunks,
            options=options.numbers_key(),
            reference=ref,
        )

    def perplexity(self, name: str, reference: str | None = AUTO) -> PerplexityResult:
        """Measure `name` (or read the cache); KLD against `reference` ("auto": the
        highest-precision model of its family with an f16 KV cache; none when that is exactly
        what is being measured).

        Raises InvalidName, ModelNotFound, InvalidRequest (text too short, reference with another
        vocabulary), InvalidLoadOptions, ModelLoadError, EngineError.
        """
        subject = self._subject(name)
        ref: _Subject | None = None
        if reference == AUTO:
            best = self._subject(reference_for(self.registry, subject.model).model_name.full)
            # The reference itself measured with a quantized KV cache is compared to itself
            # with an f16 one.
            if best.file_digest != subject.file_digest or self.options != self._reference_options():
                ref = best
        elif reference:
            ref = self._subject(reference)
        key = self._key(subject, self.options, ref)
        cached = None if self.refresh else self.cache.load_model("results", key, PerplexityResult)
        if cached is not None:
            return cached.model_copy(update={"cached": True, "model": subject.model.name})
        if ref is None and reference == AUTO:
            # The family's reference itself: keep its top-k for the others while at it.
            return self._reference_pass(subject, label="")[1]
        ref_logits = self._reference(ref) if ref is not None else None
        done = self._pass(subject, self.options, ref_logits, keep_top=0)
        result = self._result(subject, self.options, done, ref, ref_logits)
        self.cache.save_model("results", key, result)
        return result

    def _reference_key(self, ref: _Subject) -> str:
        return cache_key(
            kind="reference",
            model=ref.file_digest,
            text=self.text.sha256,
            top_k=self.top_k,
            options=self._reference_options().numbers_key(),
        )

    def _reference(self, ref: _Subject) -> ReferenceLogits:
        """The reference's top-k log-probabilities, from the cache or from a pass over it."""
        key = self._reference_key(ref)
        fresh = not self.refresh or key in self._refreshed
        cached = self.cache.load_reference(key) if fresh else None
        if cached is not None:
            wanted = min(self.chunks or cached.total_chunks, cached.total_chunks)
            if cached.chunks >= wanted:
                return cached
        return self._reference_pass(ref, label="reference ")[0]

    def _reference_pass(
        self, ref: _Subject, *, label: str
    ) -> tuple[ReferenceLogits, PerplexityResult]:
        """Score the reference keeping its top-k; cache both that and its own perplexity."""
        options = self._reference_options()
        key = self._reference_key(ref)
        done = self._pass(ref, options, None, keep_top=self.top_k, label=label)
        assert done.top is not None
        logits = ReferenceLogits(
            model_digest=ref.file_digest,
            tokens=done.tokens,
            chunks=done.chunks,
            total_chunks=done.total_chunks,
            per_chunk=len(done.nll) // done.chunks,
            top=done.top,
            nll=done.nll,
        )
        self.cache.save_reference(key, logits)
        self._refreshed.add(key)
        # The pass measured the reference's own perplexity too: keep it.
        own = self._result(ref, options, done, None, None)
        self.cache.save_model("results", self._key(ref, options, None), own)
        return logits, own

    def _pass(
        self,
        subject: _Subject,
        options: ScoringOptions,
        reference: ReferenceLogits | None,
        *,
        keep_top: int,
        label: str = "",
    ) -> _Pass:
        from server.engine.loader import ModelFacts
        from server.engine.scoring import Scorer

        info = subject.model.info
        facts = ModelFacts(info.context_length or 0, info.block_count or 0)
        label = f"{label}{subject.model.name}"
        self.progress(ChunkProgress(label, 0, 0))
        started = time.monotonic()
        with Scorer(subject.model.path, options, facts) as scorer:
            tokens = scorer.tokenize(self.text.content)
            total = scorer.chunks_in(len(tokens))
            chunks = min(self.chunks or total, total)
            used = tokens[: chunks * scorer.n_ctx]
            lookup = None
            if reference is not None:
                _check_reference(reference, used, chunks, subject.model.name)
                lookup = reference.chunk
            self.progress(ChunkProgress(label, 0, chunks))
            nll: list[np.ndarray[Any, Any]] = []
            kld: list[np.ndarray[Any, Any]] = []
            same: list[np.ndarray[Any, Any]] = []
            ids: list[np.ndarray[Any, Any]] = []
            lps: list[np.ndarray[Any, Any]] = []
            for chunk in scorer.run(tokens, chunks, keep_top=keep_top, reference=lookup):
                scores = chunk.scores
                nll.append(scores.nll)
                if scores.kld is not None and scores.same_top is not None:
                    kld.append(scores.kld)
                    same.append(scores.same_top)
                if scores.top is not None:
                    ids.append(scores.top.ids)
                    lps.append(scores.top.logprobs)
                running = float(np.exp(np.mean(np.concatenate(nll))))
                self.progress(ChunkProgress(label, chunk.index + 1, chunks, running))
        return _Pass(
            tokens=used,
            n_tokens=len(tokens),
            chunks=chunks,
            total_chunks=total,
            nll=np.concatenate(nll),
            kld=np.concatenate(kld) if kld else None,
            same_top=np.concatenate(same) if same else None,
            top=TopK(np.concatenate(ids), np.concatenate(lps)) if ids else None,
            seconds=time.monotonic() - started,
        )

    def _result(
        self,
        subject: _Subject,
        options: ScoringOptions,
        done: _Pass,
        ref: _Subject | None,
        ref_logits: ReferenceLogits | None,
    ) -> PerplexityResult:
        ppl, error = perplexity(done.nll)
        kld = None
        if ref is not None and ref_logits is not None and done.kld is not None:
            assert done.same_top is not None
            kld = kld_stats(
                done.kld,
                done.same_top,
                done.nll,
                ref_logits.nll[: len(done.nll)],
                reference=ref.model.name,
                top_k=self.top_k,
            )
        return PerplexityResult(
            model=subject.model.name,
            model_digest=subject.file_digest,
            quant=subject.model.info.quant,
            text=TextInfo(name=self.text.name, sha256=self.text.sha256, tokens=done.n_tokens),
            n_ctx=options.n_ctx,
            chunks=done.chunks,
            tokens_scored=len(done.nll),
            type_k=options.type_k,
            type_v=options.type_v,
            flash_attn=options.flash_attn,
            ppl=ppl,
            ppl_error=error,
            kld=kld,
            seconds=round(done.seconds, 3),
            measured_at=datetime.now(UTC),
        )


def _check_reference(
    reference: ReferenceLogits, tokens: np.ndarray[Any, Any], chunks: int, name: str
) -> None:
    """Raises InvalidRequest when the reference did not score the same tokens."""
    theirs = reference.tokens[: len(tokens)]
    if reference.chunks < chunks or not np.array_equal(theirs, tokens):
        raise InvalidRequest(
            f"{name} and the reference model tokenize the text differently; KL divergence "
            "needs the same vocabulary (choose another --reference, or --no-kld)"
        )
