"""One decode step's batch: which tokens of which slots go in, filling llama_batch, undoing it.

Each step takes the pending (just sampled) token of every generating slot, then prompt chunks of
prefilling slots in admission order up to n_batch tokens (chunked prefill). A step is a list of
`Part`s so that engine.fault can run a failed step again without the part that broke it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import llama_cpp
import numpy as np

from server.engine.fault import FaultHook, Part
from server.engine.jobs import Slot


class StepBatch:
    """The llama_batch the worker reuses every step (one sequence id per token)."""

    def __init__(self, n_batch: int, n_vocab: int, fault: FaultHook | None = None) -> None:
        self.n_batch = n_batch
        self._n_vocab = n_vocab
        self._fault = fault
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        b = self._batch
        self._token = np.ctypeslib.as_array(b.token, shape=(n_batch,))
        self._pos = np.ctypeslib.as_array(b.pos, shape=(n_batch,))
        self._logits = np.ctypeslib.as_array(b.logits, shape=(n_batch,))
        np.ctypeslib.as_array(b.n_seq_id, shape=(n_batch,))[:] = 1
        self._seq = [b.seq_id[i] for i in range(n_batch)]

    def plan(self, slots: Sequence[Slot]) -> list[Part]:
        """This step's parts: every generating slot's pending token, then prompt chunks."""
        parts: list[Part] = []
        for slot in slots:
            if slot.job is not None and slot.pending >= 0:
                parts.append(Part(slot, len(slot.tokens), [slot.pending], True, True))
        budget = self.n_batch - len(parts)
        prefilling = sorted(
            (s for s in slots if s.job is not None and s.n_done < len(s.job.req.prompt_tokens)),
            key=lambda s: s.job.t_admit if s.job else 0.0,
        )
        for slot in prefilling:
            if budget <= 0:
                break
            assert slot.job is not None
            prompt = slot.job.req.prompt_tokens
            start = slot.n_done
            end = start + min(budget, len(prompt) - start)
            parts.append(Part(slot, start, prompt[start:end], False, end == len(prompt)))
            budget -= end - start
        return parts

    def decode(self, ctx: Any, parts: Sequence[Part]) -> int:
        """Fill the batch with `parts`, add them to their slots, run llama_decode; its code."""
        n = 0
        tok, pos, logits, seq = self._token, self._pos, self._logits, self._seq
        for part in parts:
            slot = part.slot
            k = len(part.tokens)
            if k == 1:
                tok[n] = part.tokens[0]
                pos[n] = part.start
                logits[n] = 0
                seq[n][0] = slot.id
            else:
                tok[n : n + k] = part.tokens
                pos[n : n + k] = np.arange(part.start, part.start + k, dtype=np.int32)
                logits[n : n + k] = 0
                for i in range(n, n + k):
                    seq[i][0] = slot.id
            if self._fault is not None and slot.job is not None and self._fault(slot.job.req):
                tok[n : n + k] = self._n_vocab  # an id llama.cpp refuses: a real failed decode
            n += k
            if part.output:
                logits[n - 1] = 1
                part.index = n - 1
            slot.tokens.extend(part.tokens)
            if part.generating:
                slot.pending = -1
            else:
                slot.n_done += k
        self._batch.n_tokens = n
        return int(llama_cpp.llama_decode(ctx, self._batch))

    @staticmethod
    def rollback(memory: Any, part: Part) -> None:
        """Undo `part`: its KV cells from this step (if any were written) and its bookkeeping."""
        slot = part.slot
        llama_cpp.llama_memory_seq_rm(memory, slot.id, part.start, -1)
        del slot.tokens[part.start :]
        if part.generating:
            slot.pending = part.tokens[0]
        else:
            slot.n_done = part.start

    def free(self) -> None:
        llama_cpp.llama_batch_free(self._batch)
