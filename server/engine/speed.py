"""Prompt and decode speed of a model on this machine, measured as llama-bench does.

Prompt processing (pp): one batch of `n_prompt` tokens on an empty context. Token generation
(tg): `n_gen` single-token decodes on an empty context. Random token ids (the speed does not
depend on them), after one warm-up decode; each figure is the median of `repetitions` runs.
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np

from server.engine.factory import with_gpu_layers
from server.engine.loader import LlamaHandles, ModelFacts, resolve_options
from server.engine.measure_types import SpeedResult
from server.engine.options import CacheType, FlashAttn, LoadOptions
from server.errors import EngineError


def measure_speed(
    path: Path,
    facts: ModelFacts,
    *,
    n_prompt: int = 512,
    n_gen: int = 128,
    repetitions: int = 1,
    n_threads: int = 0,
    type_k: CacheType = "f16",
    type_v: CacheType = "f16",
    flash_attn: FlashAttn = "auto",
) -> SpeedResult:
    """Measure pp`n_prompt` and tg`n_gen` tokens per second. Raises ModelLoadError, EngineError."""
    load = LoadOptions(
        n_ctx=max(n_prompt, n_gen) + 1,
        n_parallel=1,
        n_batch=max(n_prompt, 1),
        n_ubatch=min(512, max(n_prompt, 1)),
        n_threads=n_threads,
        type_k=type_k,
        type_v=type_v,
        flash_attn=flash_attn,
    )
    cap = max(load.n_ctx, facts.n_ctx_train)
    options = with_gpu_layers(path, resolve_options(load, facts, n_ctx_cap=cap), n_ctx_cap=cap)
    handles = LlamaHandles(path, options)
    batch = llama_cpp.llama_batch_init(max(n_prompt, 1), 0, 1)
    try:
        n_vocab = int(llama_cpp.llama_vocab_n_tokens(handles.vocab))
        ids = np.random.default_rng(0).integers(0, n_vocab, size=max(n_prompt, n_gen))

        def decode(tokens: np.ndarray[Any, Any], first_pos: int) -> None:
            for i, token in enumerate(tokens):
                batch.token[i] = int(token)
                batch.pos[i] = first_pos + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = i == len(tokens) - 1
            batch.n_tokens = len(tokens)
            if llama_cpp.llama_decode(handles.ctx, batch) != 0:
                raise EngineError("llama_decode failed while measuring speed")
            llama_cpp.llama_synchronize(handles.ctx)

        def prompt_run() -> float:
            llama_cpp.llama_memory_clear(handles.memory, True)
            start = time.perf_counter()
            decode(ids[:n_prompt], 0)
            return n_prompt / (time.perf_counter() - start)

        def gen_run() -> float:
            llama_cpp.llama_memory_clear(handles.memory, True)
            start = time.perf_counter()
            for i in range(n_gen):
                decode(ids[i : i + 1], i)
            return n_gen / (time.perf_counter() - start)

        decode(ids[:1], 0)  # warm-up: first-use allocations and page faults
        prompt = statistics.median(prompt_run() for _ in range(repetitions))
        gen = statistics.median(gen_run() for _ in range(repetitions))
    finally:
        llama_cpp.llama_batch_free(batch)
        handles.close()
    return SpeedResult(
        prompt_tps=round(prompt, 2),
        decode_tps=round(gen, 2),
        n_prompt=n_prompt,
        n_gen=n_gen,
        n_threads=options.n_threads,
        measured_at=datetime.now(UTC),
    )
