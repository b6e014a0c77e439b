"""Shared benchmark plumbing: a real `gguf-serve serve` process and a streaming client."""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
MODEL = "smollm2:135m"
STORY = [{"role": "user", "content": "Write a very long story about a dragon."}]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_server(
    *args: str,
    threads: int = 2,
    n_ctx: int = 2048,
    launcher: list[str] | None = None,
    **env: str,
) -> Server:
    """A `gguf-serve serve` process (or `launcher` + the same arguments) on a free port."""
    port = free_port()
    full_env = {
        **os.environ,
        "GGUF_SERVE_LOAD__N_THREADS": str(threads),
        "GGUF_SERVE_LOAD__N_CTX": str(n_ctx),
        "GGUF_SERVE_LOG_LEVEL": "warning",
        **env,
    }
    proc = subprocess.Popen(
        [
            *(launcher or [sys.executable, "-m", "server"]),
            *("serve", "--port", str(port), "--model", MODEL, *args),
        ],
        env=full_env,
        cwd=REPO,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return Server(url, proc)
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not become ready")


@dataclass
class StreamResult:
    ttft: float  # seconds from request to first content delta
    tokens: int  # completion tokens (from the usage chunk)
    first: float  # monotonic time of the first content delta
    last: float  # monotonic time of the last content delta
    cached: int
    prompt_tokens: int

    @property
    def decode_rate(self) -> float:
        """Tokens per second after the first one (what 'decode speed' means in llama.cpp)."""
        span = self.last - self.first
        return (self.tokens - 1) / span if span > 0 else 0.0


def stream_chat(
    client: httpx.Client, url: str, messages: list[dict[str, str]], max_tokens: int, **kw: Any
) -> StreamResult:
    body = {
        "model": MODEL,
        "messages": messages,
        "stream": True,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream_options": {"include_usage": True},
        **kw,
    }
    start = time.monotonic()
    first = last = 0.0
    tail = b""
    # A lean client: the client shares this machine's two cores with the server, so it only
    # timestamps network reads that carry content and parses nothing but the final usage chunk.
    with client.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=600) as r:
        r.raise_for_status()
        for raw in r.iter_raw():
            if b'"content":"' in raw and b'"content":""' not in raw:
                now = time.monotonic()
                first = first or now
                last = now
            tail = (tail + raw)[-4096:]
    usage: dict[str, Any] = {}
    for event in tail.decode("utf-8", errors="replace").split("\n\n"):
        if event.startswith("data: {") and '"usage":{' in event:
            usage = json.loads(event[6:])["usage"]
    return StreamResult(
        ttft=first - start,
        tokens=int(usage.get("completion_tokens", 0)),
        first=first,
        last=last,
        cached=int(usage.get("prompt_tokens_details", {}).get("cached_tokens", 0)),
        prompt_tokens=int(usage.get("prompt_tokens", 0)),
    )


def median(values: list[float]) -> float:
    return statistics.median(values)


def save(name: str, data: dict[str, Any]) -> Path:
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    path = out / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(data, indent=2))
    return path
