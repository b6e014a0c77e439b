"""What llama.cpp itself says it allocated, read from its log: to check plans against reality.

llama.cpp logs every buffer it allocates (`CPU_Mapped model buffer size = 92.10 MiB`, `CPU KV
buffer size`, `CPU compute buffer size`, `CPU output buffer size`, the KV cache's `size = ...`
line). `BufferLog` collects those lines while a model loads; `dry_run` loads a model the way
llama.cpp's own `--fit` does (`no_alloc`: sizes only, nothing allocated, the weights never read)
and reports the same figures for any GGUF, real or synthetic.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import llama_cpp

from server.engine.loader import GGML_TYPES, ensure_backend
from server.engine.options import LoadOptions
from server.errors import ModelLoadError

_LLAMA_LOGGER = logging.getLogger("server.engine.llama_cpp")
_BUFFER = re.compile(r"^\w+:\s+(\S+)\s+(model|KV|compute|output|RS) buffer size =\s+([\d.]+) MiB")
_KV_SIZE = re.compile(r"^llama_kv_cache: size =\s+([\d.]+) MiB")
_RS_SIZE = re.compile(r"^llama_memory_recurrent: size =\s+([\d.]+) MiB")
MiB = 1 << 20


@dataclass
class BufferReport:
    """Bytes per buffer kind and buffer type (`CPU`, `CUDA0`, `CPU_Mapped`, ...)."""

    model: dict[str, int] = field(default_factory=dict)
    kv: dict[str, int] = field(default_factory=dict)
    compute: dict[str, int] = field(default_factory=dict)
    output: dict[str, int] = field(default_factory=dict)
    kv_total: int = 0  # llama_kv_cache's own size line(s): exact even in a dry run
    recurrent_total: int = 0

    def total(self, kind: str) -> int:
        return sum(getattr(self, kind).values())


class BufferLog(logging.Handler):
    """Collects llama.cpp's buffer-size log lines while in use (`with BufferLog() as log:`)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.report = BufferReport()
        self._level = _LLAMA_LOGGER.level

    def __enter__(self) -> BufferLog:
        self._level = _LLAMA_LOGGER.level
        _LLAMA_LOGGER.setLevel(logging.DEBUG)  # llama.cpp's info lines are logged at DEBUG
        _LLAMA_LOGGER.addHandler(self)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _LLAMA_LOGGER.removeHandler(self)
        _LLAMA_LOGGER.setLevel(self._level)

    def emit(self, record: logging.LogRecord) -> None:
        line = record.getMessage().strip()
        r = self.report
        if match := _BUFFER.match(line):
            name, kind, mib = match.group(1), match.group(2), float(match.group(3))
            table = {"model": r.model, "KV": r.kv, "RS": r.kv, "compute": r.compute}
            bucket = table.get(kind, r.output)
            bucket[name] = bucket.get(name, 0) + round(mib * MiB)
        elif match := _KV_SIZE.match(line):
            r.kv_total += round(float(match.group(1)) * MiB)
        elif match := _RS_SIZE.match(line):
            r.recurrent_total += round(float(match.group(1)) * MiB)


def dry_run(path: Path, options: LoadOptions, *, n_outputs_max: int | None = None) -> BufferReport:
    """llama.cpp's own sizes for loading `path` with `options` (n_gpu_layers a count), without
    allocating anything. `n_outputs_max` defaults to the slots, as the engine loads models.

    Raises ModelLoadError when llama.cpp refuses the file or the context.
    """
    ensure_backend()
    mparams = llama_cpp.llama_model_default_params()
    mparams.n_gpu_layers = options.n_gpu_layers if isinstance(options.n_gpu_layers, int) else 0
    mparams.no_alloc = True
    mparams.load_mode = llama_cpp.LLAMA_LOAD_MODE_NONE  # as common/fit.cpp: nothing mapped
    with BufferLog() as log:
        model = llama_cpp.llama_model_load_from_file(str(path).encode(), mparams)
        if not model:
            raise ModelLoadError(f"llama.cpp could not read {path.name}")
        try:
            cparams = llama_cpp.llama_context_default_params()
            cparams.n_seq_max = options.n_parallel
            cparams.n_ctx = options.n_ctx * options.n_parallel
            cparams.n_batch = options.n_batch
            cparams.n_ubatch = options.n_ubatch
            cparams.n_threads = cparams.n_threads_batch = max(options.n_threads, 1)
            cparams.flash_attn_type = {
                "on": llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED,
                "off": llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED,
                "auto": llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO,
            }[options.flash_attn]
            cparams.type_k = GGML_TYPES[options.type_k]
            cparams.type_v = GGML_TYPES[options.type_v]
            cparams.kv_unified = False
            cparams.swa_full = options.swa_full
            cparams.n_outputs_max = options.n_parallel if n_outputs_max is None else n_outputs_max
            ctx = llama_cpp.llama_init_from_model(model, cparams)
            if not ctx:
                raise ModelLoadError(f"llama.cpp could not create a context for {path.name}")
            llama_cpp.llama_free(ctx)
        finally:
            llama_cpp.llama_model_free(model)
    return log.report
