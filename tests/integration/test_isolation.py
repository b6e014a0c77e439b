"""One request's trouble stays its own, against the real server: a non-streamed request whose
client leaves stops generating; a runaway request template is a 400 while /health answers."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest

from tests.integration.conftest import RunningServer

LONG = 1900  # tokens (slots hold 2048): far more than the client waits for


def busy_slots(server: RunningServer) -> list[dict[str, Any]]:
    return [s for s in server.slots() if s["state"] != "idle"]


def wait_for(predicate: Any, timeout: float) -> float | None:
    """Seconds until `predicate()` holds, or None if it does not within `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.05)
    return None


REQUESTS = {
    "openai-chat": (
        "/v1/chat/completions",
        {
            "model": "smollm2:135m",
            "messages": [{"role": "user", "content": "Count to ten thousand."}],
            "max_tokens": LONG,
            "ignore_eos": True,
            "temperature": 0,
        },
    ),
    "ollama-generate": (
        "/api/generate",
        {
            "model": "smollm2:135m",
            "prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,",
            "raw": True,
            "stream": False,
            "options": {"num_predict": LONG, "temperature": 0},
        },
    ),
}


@pytest.mark.parametrize("kind", sorted(REQUESTS))
def test_a_non_stream_request_stops_generating_when_its_client_leaves(
    server: RunningServer, kind: str
) -> None:
    assert wait_for(lambda: not busy_slots(server), 30) is not None, "slots busy before the test"
    path, body = REQUESTS[kind]
    outcome: list[BaseException | int] = []

    def client() -> None:  # gives up after 3 s of waiting and closes its connection
        try:
            outcome.append(httpx.post(server.url + path, json=body, timeout=3).status_code)
        except httpx.TimeoutException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=client)
    thread.start()
    assert wait_for(lambda: busy_slots(server), 10) is not None, "the request never started"
    thread.join()
    assert outcome and isinstance(outcome[0], httpx.TimeoutException), outcome
    generated_at_close = max(s["generated_tokens"] for s in server.slots())
    assert generated_at_close < LONG  # still generating when the client left
    freed = wait_for(lambda: not busy_slots(server), 5)
    assert freed is not None, f"still generating after the client left: {server.slots()}"
    assert "the client went away" in server.log_tail(200)


def test_a_runaway_request_template_is_a_400_and_health_answers_meanwhile(
    server: RunningServer,
) -> None:
    # `range` over a 20,000-character prompt, twice nested: 4e8 empty steps, far past the
    # template budget (template_timeout_seconds, 2 s by default).
    body = {
        "model": "smollm2:135m",
        "prompt": "x" * 20_000,
        "template": "{{ range .Prompt }}{{ range $.Prompt }}{{ end }}{{ end }}{{ .Prompt }}",
        "stream": False,
    }
    result: list[httpx.Response] = []
    thread = threading.Thread(
        target=lambda: result.append(
            httpx.post(f"{server.url}/api/generate", json=body, timeout=30)
        )
    )
    started = time.monotonic()
    thread.start()
    latencies = []
    while thread.is_alive():
        t0 = time.monotonic()
        assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200
        latencies.append(time.monotonic() - t0)
        time.sleep(0.05)
    thread.join()
    elapsed = time.monotonic() - started
    response = result[0]
    assert response.status_code == 400, response.text
    assert "longer than 2 seconds" in response.json()["error"]
    assert elapsed < 10
    assert len(latencies) >= 5 and max(latencies) < 1.0, latencies
    # The server still answers a normal generation afterwards.
    ok = httpx.post(
        f"{server.url}/api/generate",
        json={
            "model": "smollm2:135m",
            "prompt": "Hi",
            "stream": False,
            "options": {"num_predict": 4, "temperature": 0},
        },
        timeout=60,
    )
    assert ok.status_code == 200 and ok.json()["done"] is True
