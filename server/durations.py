"""Ollama-style durations (`keep_alive`): Go duration strings or plain seconds."""

from __future__ import annotations

import math
import re

_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(value: str | float | int | None) -> float | None:
    """Seconds for `value`; a negative value means forever (`math.inf`), None stays None.

    Accepts numbers (seconds) and Go duration strings such as "5m", "1h30m", "-1s", "0".
    Raises ValueError on anything else.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or a string such as '5m'")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip()
        if not text:
            raise ValueError("empty duration")
        sign = -1.0 if text.startswith("-") else 1.0
        body = text.lstrip("+-")
        try:
            seconds = sign * float(body)
        except ValueError:
            pos, total = 0, 0.0
            for match in _PART.finditer(body):
                if match.start() != pos:
                    break
                total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
                pos = match.end()
            if pos != len(body) or not body:
                raise ValueError(
                    f"invalid duration {value!r}; use seconds or e.g. '5m', '1h'"
                ) from None
            seconds = sign * total
    if math.isnan(seconds):
        raise ValueError("a duration cannot be NaN")
    return math.inf if seconds < 0 else seconds
