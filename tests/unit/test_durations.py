from __future__ import annotations

import math

import pytest

from server.durations import parse_duration


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("10s", 10.0),
        ("1.5s", 1.5),
        ("250ms", 0.25),
        ("0", 0.0),
        (0, 0.0),
        (42, 42.0),
        ("42", 42.0),
        (-1, math.inf),
        ("-1m", math.inf),
        (None, None),
    ],
)
def test_parse_duration(value: str | int | None, seconds: float | None) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "5 minutes", "m5", "5x", "1h-3m", True, "nan"])
def test_parse_duration_rejects(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)  # type: ignore[arg-type]
