"""SIGTERM on a real server: stop accepting, let running requests finish within the grace period,
end the streams still open with a proper final event, no traceback, exit 0. Also the SSE
keep-alive comment on a stream that waits in the queue."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import RunningServer, start_server

GRACE = 8.0
PING = 0.3
SHORT_TOKENS = 64


class Reader(threading.Thread):
    """Reads a streamed answer line by line (with arrival times) until the server ends it."""

    def __init__(self, url: str, body: dict[str, Any]) -> None:
        super().__init__(daemon=True)
        self.url, self.body = url, body
        self.lines: list[tuple[float, str]] = []
        self.error: BaseException | None = None
        self.status = 0

    def run(self) -> None:
        try:
            with httpx.stream("POST", self.url, json=self.body, timeout=60) as response:
                self.status = response.status_code
                for line in response.iter_lines():
                    if line:
                        self.lines.append((time.monotonic(), line))
        except BaseException as exc:  # recorded for the assertions
            self.error = exc

    def data(self) -> list[str]:
        return [line[len("data: ") :] for _, line in self.lines if line.startswith("data: ")]


def openai_stream(server: RunningServer) -> Reader:
    body = {
        "model": "smollm2:135m",
        "messages": [{"role": "user", "content": "Count to ten thousand."}],
        "max_tokens": 1900,
        "ignore_eos": True,
        "stream": True,
    }
    return Reader(f"{server.url}/v1/chat/completions", body)


def ollama_stream(server: RunningServer) -> Reader:
    body = {
        "model": "smollm2:135m",
        "prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,",
        "raw": True,
        "options": {"num_predict": 1900, "temperature": 0},
    }
    return Reader(f"{server.url}/api/generate", body)


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def stopping_server(model_home: Path, tmp_path: Path) -> RunningServer:
    return start_server(
        model_home,
        tmp_path,
        "--parallel",
        "3",
        GGUF_SERVE_SHUTDOWN_GRACE_SECONDS=str(GRACE),
        GGUF_SERVE_SSE_PING_SECONDS=str(PING),
    )


def test_sigterm_drains_then_ends_open_streams_cleanly(stopping_server: RunningServer) -> None:
    server = stopping_server
    try:
        a, b = openai_stream(server), ollama_stream(server)
        a.start()
        b.start()
        wait_until(lambda: len(a.data()) > 2 and len(b.lines) > 2, 60, "both streams to run")
        short: list[httpx.Response] = []
        body = {
            "model": "smollm2:135m",
            "messages": [{"role": "user", "content": "Say hello."}],
            # long enough to hold the third slot while the fourth request queues (8 tokens
            # could finish first on a quiet machine), short enough to end within the grace
            "max_tokens": SHORT_TOKENS,
            "ignore_eos": True,
        }
        d = threading.Thread(
            target=lambda: short.append(
                httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60)
            )
        )
        d.start()
        wait_until(lambda: sum(s["state"] != "idle" for s in server.slots()) == 3, 30, "3 slots")
        c = openai_stream(server)  # the fourth: it waits in the queue, quiet but for pings
        c.start()
        wait_until(lambda: any(line == ": ping" for _, line in c.lines), 10, "a keep-alive ping")
        assert c.data() == [] or all("content" not in x for x in c.data()[1:])

        sent = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        with pytest.raises(httpx.TransportError):  # no longer accepting
            httpx.get(f"{server.url}/health", timeout=2)

        d.join(timeout=GRACE + 10)
        assert short and short[0].status_code == 200, short  # finished within the grace period
        answer = short[0].json()
        assert answer["choices"][0]["finish_reason"] == "length"
        assert answer["usage"]["completion_tokens"] == SHORT_TOKENS

        for reader in (a, b, c):
            reader.join(timeout=GRACE + 10)
            assert not reader.is_alive(), "a stream was left open"
            assert reader.error is None, reader.error
        ended = max(r.lines[-1][0] for r in (a, b, c))
        assert GRACE - 1 <= ended - sent <= GRACE + 5
        for reader in (a, c):  # OpenAI: the last event is an error in OpenAI's shape
            last = json.loads(reader.data()[-1])
            assert last["error"]["code"] == "server_shutting_down", last
            assert set(last["error"]) >= {"message", "type", "param", "code"}
        assert len(a.data()) > 3  # it had streamed text before it was ended
        last_line = json.loads(b.lines[-1][1])  # Ollama: a final line with done
        assert last_line["done"] is True and last_line["done_reason"] == "shutdown", last_line
        assert any(json.loads(line).get("response") for _, line in b.lines[:-1])

        code = server.proc.wait(timeout=15)
        assert code == 0, server.log_tail()
        log = server.log.read_text()
        assert "Traceback" not in log, server.log_tail(80)
        assert "Application shutdown complete" in log
        assert "grace period over: ending 3 request(s)" in log
    finally:
        server.stop()
