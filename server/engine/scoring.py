"""Scoring a text the way llama.cpp's perplexity tool does (tools/perplexity/perplexity.cpp).

The whole text is tokenized once with the vocabulary's special tokens added (BOS where the
model wants one). It is cut into windows of `n_ctx` tokens; each window starts from an empty
KV cache with its first token replaced by BOS (when the vocabulary adds one), and only the
second half is scored (the tokens after position n_ctx/2 each see at least n_ctx/2 tokens of
context). `n_batch // n_ctx` windows share one decode as separate sequences. Same context
parameters as the tool (n_batch 2048, n_ubatch 512, flash attention auto), same numbers.

This is the only module that reads logits for scoring; the arithmetic is in `logit_math`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np

from server.engine.factory import with_gpu_layers
from server.engine.loader import LlamaHandles, ModelFacts, resolve_options
from server.engine.logit_math import TokenScores, TopK, score_rows
from server.engine.measure_types import ScoringOptions
from server.engine.options import LoadOptions
from server.engine.tokenizer import Tokenizer
from server.errors import EngineError, InvalidRequest

logger = logging.getLogger(__name__)

ReferenceLookup = Callable[[int], TopK]


@dataclass(frozen=True)
class ChunkResult:
    """The scored second half of one window."""

    index: int
    scores: TokenScores


class TextTooShort(InvalidRequest):
    """The text has fewer tokens than two windows."""

    code = "text_too_short"


class Scorer:
    """One model loaded with a context shaped like llama.cpp's perplexity tool's."""

    def __init__(self, path: Path, options: ScoringOptions, facts: ModelFacts) -> None:
        """Raises InvalidLoadOptions (bad KV / context choice), ModelLoadError."""
        n_ctx = options.n_ctx
        self.n_seq = max(1, options.n_batch // n_ctx)
        n_batch = self.n_seq * n_ctx if options.n_batch >= n_ctx else options.n_batch
        load = LoadOptions(
            n_ctx=n_ctx,
            n_parallel=self.n_seq,
            n_batch=n_batch,
            n_ubatch=min(512, n_batch),
            n_threads=options.n_threads,
            type_k=options.type_k,
            type_v=options.type_v,
            flash_attn=options.flash_attn,
        )
        cap = max(n_ctx, facts.n_ctx_train)
        effective = with_gpu_layers(
            path, resolve_options(load, facts, n_ctx_cap=cap), n_ctx_cap=cap
        )
        self.n_ctx = n_ctx
        self.n_batch = n_batch
        self._handles = LlamaHandles(path, effective)
        self.tokenizer = Tokenizer(self._handles.vocab)
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)

    def close(self) -> None:
        """Free the batch, context and model (idempotent)."""
        if self._batch is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None
        self._handles.close()

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def tokenize(self, text: str) -> np.ndarray[Any, np.dtype[np.int32]]:
        """The text's tokens as llama.cpp's tool makes them: special tokens added, not parsed."""
        ids = self.tokenizer.tokenize(text, add_special=True, parse_special=False)
        return np.asarray(ids, dtype=np.int32)

    def chunks_in(self, n_tokens: int) -> int:
        """How many whole windows a text of `n_tokens` holds. Raises TextTooShort below two."""
        if n_tokens < 2 * self.n_ctx:
            raise TextTooShort(
                f"the text is {n_tokens} tokens; scoring with a context of {self.n_ctx} needs "
                f"at least {2 * self.n_ctx} (give a longer text or a smaller --ctx)"
            )
        return n_tokens // self.n_ctx

    def run(
        self,
        tokens: np.ndarray[Any, np.dtype[np.int32]],
        n_chunks: int,
        *,
        keep_top: int = 0,
        reference: ReferenceLookup | None = None,
    ) -> Iterator[ChunkResult]:
        """Score the first `n_chunks` windows of `tokens`, yielding them in order.

        `keep_top` > 0 keeps this model's top-k log-probabilities (a reference for others);
        `reference(i)` gives window i's reference top-k for KL divergence. Raises EngineError.
        """
        n_ctx = self.n_ctx
        first = n_ctx // 2
        for i in range(0, n_chunks, self.n_seq):
            n_seq = min(self.n_seq, n_chunks - i)
            rows = self._decode_windows(tokens, i * n_ctx, n_seq)
            for seq in range(n_seq):
                start = (i + seq) * n_ctx
                logits = rows[seq * (n_ctx - first) : (seq + 1) * (n_ctx - first) - 1]
                targets = tokens[start + first + 1 : start + n_ctx]
                ref = reference(i + seq) if reference is not None else None
                yield ChunkResult(i + seq, score_rows(logits, targets, ref, keep_top))

    def _decode_windows(
        self, tokens: np.ndarray[Any, np.dtype[np.int32]], start: int, n_seq: int
    ) -> np.ndarray[Any, np.dtype[np.float32]]:
        """Decode `n_seq` windows from `start` on fresh sequences; logits of their second halves.

        Returns float32 [n_seq * (n_ctx - n_ctx/2), n_vocab], window after window.
        """
        n_ctx, n_batch = self.n_ctx, self.n_batch
        first = n_ctx // 2
        add_bos = self.tokenizer.add_bos
        n_vocab = self.tokenizer.n_vocab
        llama_cpp.llama_memory_clear(self._handles.memory, True)
        batch = self._batch
        pieces: list[np.ndarray[Any, np.dtype[np.float32]]] = []
        for j in range(0, n_ctx, n_batch):
            size = min(n_ctx - j, n_batch)
            n = 0
            n_out = 0
            for seq in range(n_seq):
                base = start + seq * n_ctx + j
                for k in range(size):
                    pos = j + k
                    token = self.tokenizer.bos if add_bos and pos == 0 else int(tokens[base + k])
                    batch.token[n] = token
                    batch.pos[n] = pos
                    batch.n_seq_id[n] = 1
                    batch.seq_id[n][0] = seq
                    batch.logits[n] = pos >= first
                    n_out += pos >= first
                    n += 1
            batch.n_tokens = n
            rc = llama_cpp.llama_decode(self._handles.ctx, batch)
            if rc != 0:
                raise EngineError(f"llama_decode returned {rc} while scoring")
            if n_out:
                ptr = llama_cpp.llama_get_logits(self._handles.ctx)
                view = np.ctypeslib.as_array(ptr, shape=(n_out, n_vocab))
                pieces.append(view if n_ctx <= n_batch else view.copy())
        if len(pieces) == 1:
            return pieces[0]
        return np.concatenate(pieces)
