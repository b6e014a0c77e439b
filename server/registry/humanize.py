"""Numbers, sizes and ages written the way Ollama writes them (`135M`, `98 MB`, `2 minutes ago`)."""

from __future__ import annotations

import math
from datetime import UTC, datetime


def human_number(count: int) -> str:
    """Parameter counts as Ollama's `format.HumanNumber`: 134515008 -> "135M", 8.03e9 -> "8.03B"."""
    for scale, suffix in ((10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "K")):
        if count >= scale:
            return f"{_decimal_place(count / scale)}{suffix}"
    return str(count)


def _decimal_place(number: float) -> str:
    if number >= 100:
        return f"{number:.0f}"
    if number >= 10:
        return f"{number:.1f}"
    return f"{number:.2f}"


def human_bytes(size: int) -> str:
    """Decimal units as `ollama list` shows them: 98362432 -> "98 MB", 1500 -> "1.5 KB"."""
    for scale, unit in ((10**12, "TB"), (10**9, "GB"), (10**6, "MB"), (10**3, "KB")):
        if size >= scale:
            value = size / scale
            if value >= 10 or value == math.trunc(value):
                return f"{int(value)} {unit}"
            return f"{value:.1f} {unit}"
    return f"{size} B"


def human_age(when: datetime, now: datetime | None = None) -> str:
    """How long ago, in Docker's words as Ollama uses them: "2 minutes ago", "About an hour ago"."""
    current = now or datetime.now(UTC)
    seconds = int((current - when).total_seconds())
    if seconds < 0:
        return "In the future"
    return f"{_duration(seconds)} ago"


def _duration(seconds: int) -> str:
    if seconds < 1:
        return "Less than a second"
    if seconds == 1:
        return "1 second"
    if seconds < 60:
        return f"{seconds} seconds"
    minutes = seconds // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = (seconds + 1800) // 3600  # Go rounds half away from zero
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{seconds // 3600 // 24 // 365} years"


def human_until(when: datetime, now: datetime | None = None) -> str:
    """How long until, as `ollama ps` shows expiry: "4 minutes from now", "Forever"."""
    current = now or datetime.now(UTC)
    seconds = int((when - current).total_seconds())
    if seconds > 100 * 365 * 24 * 3600:
        return "Forever"
    if seconds < 0:
        return "Stopping..."
    return f"{_duration(seconds)} from now"


def binary_bytes(size: int) -> str:
    """Sizes in the binary units llama.cpp and nvidia-smi use: "720.0 MiB", "14.2 GiB"."""
    for shift, unit in ((40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")):
        if size >= 1 << shift:
            return f"{size / (1 << shift):.1f} {unit}"
    return f"{size} B"
