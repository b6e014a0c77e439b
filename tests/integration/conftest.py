"""A real gguf-serve process on a free loopback port, serving the real default model."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = "smollm2:135m"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningServer:
    """A `gguf-serve serve` subprocess and how to reach it."""

    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def slots(self) -> list[dict[str, Any]]:
        models = httpx.get(f"{self.url}/slots", timeout=5).json()
        return list(models[0]["slots"]) if models else []

    def stop(self) -> int:
        """SIGTERM, as docker/podman do; returns the exit code.

        uvicorn re-raises the signal after its graceful shutdown, so a clean stop is -SIGTERM
        (143 in a shell) or 0.
        """
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_server(home: Path, log_dir: Path, *args: str, **env: str) -> RunningServer:
    """Start a server and wait until /health says it is ready (default model preloaded)."""
    port = free_port()
    # Hermetic: not the developer's own Ollama store, unless the test names one.
    names_store = bool({"OLLAMA_MODELS", "GGUF_SERVE_OLLAMA_MODELS"} & set(env))
    hermetic = {} if names_store else {"GGUF_SERVE_OLLAMA_MODELS": ""}
    inherited = {
        k: v for k, v in os.environ.items() if not (names_store and k == "GGUF_SERVE_OLLAMA_MODELS")
    }
    full_env = {
        **inherited,
        "GGUF_SERVE_HOME": str(home),
        # TEST_SERVER_THREADS=1 on a shared, oversubscribed machine: two llama.cpp threads
        # that keep being descheduled spin at each barrier (measured 0.2 against 17 tok/s).
        "GGUF_SERVE_LOAD__N_THREADS": os.environ.get("TEST_SERVER_THREADS", "2"),
        "GGUF_SERVE_LOAD__N_CTX": "2048",
        "GGUF_SERVE_LOG_LEVEL": os.environ.get("TEST_SERVER_LOG_LEVEL", "info"),
        **hermetic,
        **env,
    }
    log = log_dir / f"server-{port}.log"
    handle = log.open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "server",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--model",
            DEFAULT_MODEL,
            *args,
        ],
        env=full_env,
        stdout=handle,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )
    server = RunningServer(f"http://127.0.0.1:{port}", proc, log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"server did not become ready:\n{server.log_tail()}")


@pytest.fixture(scope="session")
def server(model_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The shared server: 8 slots of 2048 tokens, 2 threads."""
    srv = start_server(model_home, tmp_path_factory.mktemp("logs"), "--parallel", "8")
    yield srv
    code = srv.stop()
    assert code in (0, -signal.SIGTERM), f"unclean stop on SIGTERM ({code}):\n{srv.log_tail()}"
    assert "Application shutdown complete" in srv.log.read_text()


@pytest.fixture(scope="session")
def base_url(server: RunningServer) -> str:
    return f"{server.url}/v1"


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's headless Chromium driven by Playwright (`make browser` installs it; nothing here
    ever downloads a browser).

    Per module: Playwright's sync API keeps an event loop running on this thread while it is
    open, and any later test that calls asyncio.run would fail.
    """
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is not installed: run `make browser`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()
