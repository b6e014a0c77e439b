"""llama.cpp's log: routed to Python logging, and captured per thread while a model loads.

llama.cpp says why it refuses a model only in its log (`key not found in model:
llama.context_length`, `unknown model architecture`, `missing tensor`); `capture()` keeps the
lines the calling thread produces so the load error can quote llama.cpp's own reason.
"""

from __future__ import annotations

import ctypes
import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import llama_cpp

_llama_logger = logging.getLogger("server.engine.llama_cpp")

# ggml_log_level: 1 debug, 2 info (chatty load details: kept at DEBUG), 3 warn, 4 error, 5 cont.
_GGML_LEVELS = {1: logging.DEBUG, 2: logging.DEBUG, 3: logging.WARNING, 4: logging.ERROR}
_last_level = [logging.DEBUG]
_captures: dict[int, list[tuple[int, str]]] = {}  # thread id -> its captured lines
_FUNCTION_PREFIX = re.compile(r"^[A-Za-z_][\w:]*: ")


@llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
def route(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
    """Send llama.cpp's log lines to Python logging (and to the thread's capture, if any)."""
    py_level = _last_level[0] if level == 5 else _GGML_LEVELS.get(level, logging.DEBUG)
    _last_level[0] = py_level
    if not text:
        return
    message = text.decode("utf-8", errors="replace").rstrip("\n")
    if not message:
        return
    lines = _captures.get(threading.get_ident())
    if lines is not None:
        lines.append((py_level, message))
    if _llama_logger.isEnabledFor(py_level):
        _llama_logger.log(py_level, "%s", message)


def install() -> None:
    """Route llama.cpp's log through `route` (once, before the backend starts)."""
    llama_cpp.llama_log_set(route, ctypes.c_void_p(0))


@dataclass
class CapturedLog:
    """The llama.cpp log lines of one thread during a `capture()` block."""

    lines: list[tuple[int, str]] = field(default_factory=list)

    def reason(self) -> str | None:
        """llama.cpp's first error line, without its function-name prefix, or None."""
        for level, line in self.lines:
            if level >= logging.ERROR:
                text = _FUNCTION_PREFIX.sub("", line.strip())
                return text.removeprefix("error loading model: ").strip() or None
        return None


@contextmanager
def capture() -> Iterator[CapturedLog]:
    """Keep what llama.cpp logs on this thread inside the block."""
    log = CapturedLog()
    ident = threading.get_ident()
    _captures[ident] = log.lines
    try:
        yield log
    finally:
        _captures.pop(ident, None)
