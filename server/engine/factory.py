"""Build a running engine for one model file: validate options, load, start the worker."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from server.engine.batch import BatchEngine
from server.engine.fault import FaultHook
from server.engine.loader import LlamaHandles, ModelFacts, resolve_options
from server.engine.options import LoadOptions
from server.engine.types import EngineReporter

if TYPE_CHECKING:
    from server.engine.plan_types import Device
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
    reporter: EngineReporter | None = None,
) -> BatchEngine | SupervisedEngine:
    """Load `path` with `options` (validated against `facts`) and start its worker thread.

    A model with `rpc_servers` runs in a supervised child process (llama.cpp aborts the whole
    process when an rpc-server goes away). `n_gpu_layers: auto` is planned here from the file's
    header and llama.cpp's devices when the caller has not planned it (the scheduler does).
    Raises InvalidLoadOptions for option combinations that cannot work, ModelLoadError when
    llama.cpp refuses the file or the context.
    """
    if options.rpc_servers:
        from server.engine.supervised import SupervisedEngine

        effective = resolve_options(options, facts, n_ctx_cap=n_ctx_cap)
        return SupervisedEngine(
            path, effective, max_queue=max_queue, label=label or path.name, facts=facts
        )
    return start_batch_engine(
        path,
        options,
        facts,
        n_ctx_cap=n_ctx_cap,
        max_queue=max_queue,
        label=label,
        reporter=reporter,
    )


def start_batch_engine(
    path: Path,
    options: LoadOptions,
    facts: ModelFacts,
    *,
    n_ctx_cap: int,
    max_queue: int,
    label: str | None = None,
    reporter: EngineReporter | None = None,
    fault: FaultHook | None = None,
) -> BatchEngine:
    """Load `path` in this process and start the batch engine's worker thread (`fault`: a
    test hook, see engine.fault)."""
    effective = resolve_options(options, facts, n_ctx_cap=n_ctx_cap)
    effective = with_gpu_layers(path, effective, n_ctx_cap=n_ctx_cap)
    started = time.perf_counter()
    # The engine samples one token per slot per step, so llama.cpp need not reserve logits
    # (n_vocab floats each) for every token of a batch: see docs/MEMORY.md.
    handles = LlamaHandles(path, effective, n_outputs_max=effective.n_parallel)
    logger.info(
        "loaded %s in %.2fs: n_ctx=%d per slot x %d slots, kv %s/%s, flash_attn=%s, gpu layers=%s",
        label or path.name,
        time.perf_counter() - started,
        handles.n_ctx_seq,
        effective.n_parallel,
        effective.type_k,
        effective.type_v,
        effective.flash_attn,
        effective.n_gpu_layers,
    )
    return BatchEngine(handles, max_queue=max_queue, reporter=reporter, fault=fault)


def with_gpu_layers(path: Path, options: LoadOptions, *, n_ctx_cap: int) -> LoadOptions:
    """`options` with `n_gpu_layers: auto` planned into a count (llama.cpp takes only counts)."""
    if options.n_gpu_layers != "auto":
        return options
    layers = auto_gpu_layers(path, options, n_ctx_cap=n_ctx_cap)
    return options.model_copy(update={"n_gpu_layers": layers})


def auto_gpu_layers(
    path: Path, options: LoadOptions, *, n_ctx_cap: int, extra: Sequence[Device] = ()
) -> int:
    """The most layers of the model at `path` that fit the free memory of llama.cpp's offload
    devices and the `extra` ones (registered rpc-servers), split by the options'
    `tensor_split` (0, without reading the file, when there is none)."""
    from server.engine.devices import list_devices
    from server.engine.memory import plan_memory
    from server.registry.gguf_info import read_split_gguf_info
    from server.registry.splits import SPLIT_NAME

    devices = [*list_devices(), *extra]
    if all(device.is_host for device in devices):
        return 0
    match = SPLIT_NAME.match(path.name)
    parts = [path]
    if match is not None:
        count = int(match.group("count"))
        stem = match.group("prefix")
        parts = [path.with_name(f"{stem}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]
    info = read_split_gguf_info(parts)
    plan = plan_memory(
        info,
        options,
        devices,
        n_ctx_cap=n_ctx_cap,
        tensor_split=options.tensor_split or None,
        find_max_ctx=False,
    )
    return plan.n_gpu_layers
