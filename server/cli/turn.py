"""One chat turn of `gguf-serve run`: stream the answer to the terminal, stop on Ctrl-C.

Also the `--verbose` statistics, printed the way `ollama run --verbose` prints them.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from server.cli.client import ServerClient
from server.cli.wordwrap import WordWrapper

_NS = 1_000_000_000


@dataclass
class Reply:
    """What came back: the text (partial when interrupted) and the final statistics."""

    text: str
    stats: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False


def stream_turn(
    client: ServerClient, payload: dict[str, Any], write: Callable[[str], Any]
) -> Reply:
    """Send one /api/chat request and write its text as it arrives.

    Ctrl-C ends the answer early (hanging up, so the server frees the slot at its next decode
    step) and returns what had arrived, marked `interrupted`.
    """
    parts: list[str] = []
    stats: dict[str, Any] = {}
    try:
        with client.chat(payload) as pieces:
            for piece in pieces:
                if piece.text:
                    write(piece.text)
                    parts.append(piece.text)
                if piece.done:
                    stats = piece.stats
    except KeyboardInterrupt:
        return Reply("".join(parts), interrupted=True)
    return Reply("".join(parts), stats)


def terminal_writer(out: TextIO, *, wrap: bool) -> tuple[Callable[[str], None], Callable[[], None]]:
    """A write for streamed text (word-wrapped on a terminal when `wrap`) and its flush."""

    def write(text: str) -> None:
        out.write(text)
        out.flush()

    if not (wrap and out.isatty()):
        return write, lambda: None
    wrapper = WordWrapper(write, shutil.get_terminal_size().columns - 1)
    return wrapper.write, wrapper.flush


def print_stats(stats: dict[str, Any], out: TextIO) -> None:
    """Ollama's `Metrics.Summary`: durations as Go prints them, rates in tokens/s."""
    total, load = stats.get("total_duration") or 0, stats.get("load_duration") or 0
    p_count, p_ns = stats.get("prompt_eval_count") or 0, stats.get("prompt_eval_duration") or 0
    e_count, e_ns = stats.get("eval_count") or 0, stats.get("eval_duration") or 0
    lines = []
    if total > 0:
        lines.append(f"total duration:       {go_duration(total)}")
    if load > 0:
        lines.append(f"load duration:        {go_duration(load)}")
    if p_count > 0:
        lines.append(f"prompt eval count:    {p_count} token(s)")
    if p_ns > 0:
        lines.append(f"prompt eval duration: {go_duration(p_ns)}")
        lines.append(f"prompt eval rate:     {p_count / (p_ns / _NS):.2f} tokens/s")
    if e_count > 0:
        lines.append(f"eval count:           {e_count} token(s)")
    if e_ns > 0:
        lines.append(f"eval duration:        {go_duration(e_ns)}")
        lines.append(f"eval rate:            {e_count / (e_ns / _NS):.2f} tokens/s")
    for line in lines:
        out.write(line + "\n")
    out.flush()


def go_duration(ns: int) -> str:
    """A duration as Go's `time.Duration.String` writes it: 1.5s, 12.345ms, 850µs, 1m2.5s."""
    if ns < 1_000:
        return f"{ns}ns"
    if ns < 1_000_000:
        return f"{_trim(ns / 1_000)}µs"
    if ns < _NS:
        return f"{_trim(ns / 1_000_000)}ms"
    seconds = ns / _NS
    if seconds < 60:
        return f"{_trim(seconds)}s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{int(minutes)}m{_trim(rest)}s"
    hours, minutes = divmod(minutes, 60)
    return f"{int(hours)}h{int(minutes)}m{_trim(rest)}s"


def _trim(value: float) -> str:
    return f"{value:.9f}".rstrip("0").rstrip(".")
