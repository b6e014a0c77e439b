"""Build a running engine for one model file: validate options, load, start the worker."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from server.engine.batch import BatchEngine
from server.engine.loader import LlamaHandles, ModelFacts, resolve_options
from server.engine.options import LoadOptions

if TYPE_CHECKING:
    from server.engine.supervised import SupervisedEngine

logger = logging.getLogger(__name__)


def start_engine(
    path: Path,
    options: LoadOptions,
    facts: ModelFacts,
    *,
    n_ctx_cap: int,
    max_queue: int,
    label: str | None = None,
) -> BatchEngine | SupervisedEngine:
    """Load `path` with `options` (validated against `facts`) and start its worker thread.

    A model with `rpc_servers` runs in a supervised child process (llama.cpp aborts the whole
    process when an rpc-server goes away). Raises InvalidLoadOptions for option combinations
    that cannot work, ModelLoadError when llama.cpp refuses the file or the context.
    """
    if options.rpc_servers:
        from server.engine.supervised import SupervisedEngine

        effective = resolve_options(options, facts, n_ctx_cap=n_ctx_cap)
        return SupervisedEngine(path, effective, max_queue=max_queue, label=label or path.name)
    return start_batch_engine(
        path, options, facts, n_ctx_cap=n_ctx_cap, max_queue=max_queue, label=label
    )


def start_batch_engine(
    path: Path,
    options: LoadOptions,
    facts: ModelFacts,
    *,
    n_ctx_cap: int,
    max_queue: int,
    label: str | None = None,
) -> BatchEngine:
    """Load `path` in this process and start the batch engine's worker thread."""
    effective = resolve_options(options, facts, n_ctx_cap=n_ctx_cap)
    started = time.perf_counter()
    handles = LlamaHandles(path, effective)
    logger.info(
        "loaded %s in %.2fs: n_ctx=%d per slot x %d slots, kv %s/%s, flash_attn=%s, gpu layers=%d",
        label or path.name,
        time.perf_counter() - started,
        handles.n_ctx_seq,
        effective.n_parallel,
        effective.type_k,
        effective.type_v,
        effective.flash_attn,
        effective.n_gpu_layers,
    )
    return BatchEngine(handles, max_queue=max_queue)
