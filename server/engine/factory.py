"""Build a running engine for one model file: validate options, load, start the worker."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from server.engine.batch import BatchEngine
from server.engine.loader import LlamaHandles, ModelFacts, resolve_options
from server.engine.options import LoadOptions
from server.engine.types import EngineReporter

logger = logging.getLogger(__name__)


def start_engine(
    path: Path,
    options: LoadOptions,
    facts: ModelFacts,
    *,
    n_ctx_cap: int,
    max_queue: int,
    label: str | None = None,
    reporter: EngineReporter | None = None,
) -> BatchEngine:
    """Load `path` with `options` (validated against `facts`) and start its worker thread.

    Raises InvalidLoadOptions for option combinations that cannot work, ModelLoadError when
    llama.cpp refuses the file or the context.
    """
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
    return BatchEngine(handles, max_queue=max_queue, reporter=reporter)
