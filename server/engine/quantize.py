"""llama.cpp's quantizer (`llama_model_quantize`), with progress counted in tensors.

llama.cpp reports no progress through its API, but it logs one line per tensor
(`[  12/ 272] blk.0.attn_q.weight - ...`); while quantizing we read those lines from the log
callback and pass them on, then hand the callback back to the loader's logger.
"""

from __future__ import annotations

import ctypes
import logging
import re
import threading
from collections.abc import Callable
from pathlib import Path

import llama_cpp

from server.engine.llama_log import route as _route_llama_log
from server.engine.loader import ensure_backend
from server.errors import GGUFServeError, InvalidRequest

logger = logging.getLogger(__name__)

# Canonical labels (registry/tags.py) -> llama_ftype. Types that need an importance matrix
# (IQ1/IQ2 and friends) are left out: llama.cpp refuses them without one.
QUANT_FTYPES: dict[str, int] = {
    "F32": llama_cpp.LLAMA_FTYPE_ALL_F32,
    "F16": llama_cpp.LLAMA_FTYPE_MOSTLY_F16,
    "BF16": llama_cpp.LLAMA_FTYPE_MOSTLY_BF16,
    "Q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
    "Q6_K": llama_cpp.LLAMA_FTYPE_MOSTLY_Q6_K,
    "Q5_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_K_M,
    "Q5_K_S": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_K_S,
    "Q5_1": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_1,
    "Q5_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_0,
    "Q4_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M,
    "Q4_K_S": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_S,
    "Q4_1": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_1,
    "Q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0,
    "Q3_K_L": llama_cpp.LLAMA_FTYPE_MOSTLY_Q3_K_L,
    "Q3_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q3_K_M,
    "Q3_K_S": llama_cpp.LLAMA_FTYPE_MOSTLY_Q3_K_S,
    "Q2_K": llama_cpp.LLAMA_FTYPE_MOSTLY_Q2_K,
    "IQ4_NL": llama_cpp.LLAMA_FTYPE_MOSTLY_IQ4_NL,
    "IQ4_XS": llama_cpp.LLAMA_FTYPE_MOSTLY_IQ4_XS,
}

_TENSOR_LINE = re.compile(rb"^\[\s*(\d+)/\s*(\d+)\]")
_lock = threading.Lock()  # one quantization at a time: the log callback is process-wide
_sink: list[Callable[[int, int], None]] = []


class QuantizeError(GGUFServeError):
    """llama.cpp could not quantize a model."""

    code = "quantize_failed"


@llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
def _progress_log(level: int, text: bytes, user: ctypes.c_void_p) -> None:
    """Count tensor lines for the progress sink, and log everything as the loader does."""
    if text and _sink:
        match = _TENSOR_LINE.match(text)
        if match is not None:
            _sink[0](int(match.group(1)), int(match.group(2)))
    _route_llama_log(level, text, user)


class LlamaQuantizer:
    """The `Quantizer` of server.registry: llama.cpp's `llama_model_quantize`."""

    supported: frozenset[str] = frozenset(QUANT_FTYPES)

    def __init__(self, n_threads: int = 0) -> None:
        self.n_threads = n_threads  # 0 = every core

    def quantize(
        self,
        src: Path,
        dst: Path,
        quant: str,
        *,
        allow_requantize: bool,
        progress: Callable[[int, int], None],
    ) -> None:
        """Write `src` quantized to `quant` at `dst`; `progress(done, total)` counts tensors.

        Raises InvalidRequest (unsupported type), QuantizeError (llama.cpp failed, e.g. a
        quantized source without `allow_requantize`).
        """
        ftype = QUANT_FTYPES.get(quant)
        if ftype is None:
            raise InvalidRequest(
                f"cannot quantize to {quant!r}; supported: {', '.join(sorted(QUANT_FTYPES))}"
            )
        ensure_backend()
        params = llama_cpp.llama_model_quantize_default_params()
        params.nthread = self.n_threads
        params.ftype = ftype
        params.allow_requantize = allow_requantize
        with _lock:
            _sink.append(progress)
            llama_cpp.llama_log_set(_progress_log, ctypes.c_void_p(0))
            try:
                status = llama_cpp.llama_model_quantize(
                    str(src).encode(), str(dst).encode(), ctypes.byref(params)
                )
            finally:
                llama_cpp.llama_log_set(_route_llama_log, ctypes.c_void_p(0))
                _sink.clear()
        if status != 0:
            dst.unlink(missing_ok=True)  # llama.cpp may leave a partial output behind
            raise QuantizeError(
                f"llama.cpp could not quantize {src.name} to {quant} (status {status}); "
                "run with log_level debug to see why"
            )
        logger.info("quantized %s to %s (%d bytes)", src.name, quant, dst.stat().st_size)
