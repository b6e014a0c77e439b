"""A short soak (bench/soak.py's mix, 40 requests) against the shared real server: both APIs,
stream and not, tools, 10% of clients hanging up mid-stream; no 5xx, no stream error, every
slot idle afterwards, /health answering throughout. The full run (1,000 requests, RSS growth)
is `make soak`, recorded in docs/BENCHMARKS.md."""

from __future__ import annotations

import asyncio

from bench.soak import soak
from tests.integration.conftest import RunningServer


def test_a_short_soak_breaks_nothing(server: RunningServer) -> None:
    result = asyncio.run(
        soak(server.url, None, requests=40, concurrency=16, max_tokens=12, hangup_share=0.1)
    )
    assert result["failures"] == [], result
    assert result["five_xx"] == 0
    assert sum(result["kinds"].values()) == 40
    assert result["hangups"] >= 1  # seeded: this mix has clients that hang up
    assert result["slots_idle_after_seconds"] is not None
    assert result["health_polls"] >= 4 and result["health_latency_max_s"] < 2.0
