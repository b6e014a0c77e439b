"""Keeping a failed decode step to the requests whose tokens caused it.

One llama_decode evaluates a token (or a prompt chunk) of every active slot at once. When it
fails (a token id llama.cpp refuses, no room in the KV cache, a backend error), failing every
request in the batch would let one bad request end everybody's stream. Instead the step is
rolled back (each slot's KV cells from this step removed, its bookkeeping restored) and run
again in halves, down to the single request that fails on its own: only that one fails, and
the others get the answer they would have got anyway (a slot's tokens do not attend to other
sequences, so splitting a step changes no result).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from server.engine.jobs import Slot
from server.engine.types import GenerationRequest

logger = logging.getLogger(__name__)

# Test hook: whether a request's tokens are to be replaced by an id outside the vocabulary in
# every batch they are in, so that llama_decode really fails on them (llama.cpp checks each id).
# The request itself passed the engine's own id checks; this stands for a failure those checks
# could not foresee. None in production.
FaultHook = Callable[[GenerationRequest], bool]


@dataclass(slots=True)
class Part:
    """One slot's tokens in a decode step, and how to undo adding them."""

    slot: Slot
    start: int  # KV position of the first token (len(slot.tokens) before the step)
    tokens: list[int]
    generating: bool  # a sampled token (slot.pending) rather than a prompt chunk
    output: bool  # whether logits are wanted for the last token
    index: int = field(default=-1)  # where the last token sits in the batch, once filled


Decode = Callable[[Sequence[Part]], int]


def run_isolated(
    parts: Sequence[Part],
    decode: Decode,
    succeeded: Callable[[Sequence[Part]], None],
    rollback: Callable[[Part], None],
    failed: Callable[[Part, int], None],
) -> None:
    """Decode `parts`; on failure bisect until each failing part stands alone.

    `decode` fills the batch, applies the parts to their slots and returns llama_decode's code
    (an exception counts as a failure); `succeeded` samples the parts of a decoded batch before
    the next decode overwrites the logits; `rollback` undoes one part; `failed` ends the
    request of a part that fails on its own.
    """
    try:
        rc = decode(parts)
    except Exception:
        logger.exception("llama_decode raised")
        rc = -1000
    if rc == 0:
        succeeded(parts)
        return
    for part in parts:
        rollback(part)
    if len(parts) == 1:
        failed(parts[0], rc)
        return
    logger.warning(
        "decode of %d slots failed (%d); running them apart to find the failing request",
        len(parts),
        rc,
    )
    mid = len(parts) // 2
    run_isolated(parts[:mid], decode, succeeded, rollback, failed)
    run_isolated(parts[mid:], decode, succeeded, rollback, failed)
