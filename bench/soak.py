"""Soak: many mixed requests against one real server; nothing may break, leak or hang.

1,000 requests (default) at 16 concurrent against a `--parallel 8` server process: OpenAI chat
(stream and not, with tools), OpenAI completions, Ollama chat (with tools) and generate, stream
and not; 10% of the clients hang up after the first streamed chunk. Short answers (max 24
tokens) keep it to minutes. Checked and reported:
- no 5xx and no in-band stream error;
- the server's RSS grows < 5% from the end of warm-up (the first 10%) to the end;
- every slot is idle afterwards;
- /health answers throughout (polled every 0.25 s from its own thread; max latency reported).

    .venv/bin/python bench/soak.py [--requests 1000] [--concurrency 16] [--parallel 8]
                                   [--home .cache/test-home] [--max-tokens 24]

Exit status 1 when a check fails. Results go to bench/results/soak-*.json.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import MODEL, machine, save, start_server

REPO = Path(__file__).resolve().parents[1]
TOPICS = ["the sea", "a cat", "bread", "winter", "a robot", "music", "trains", "the moon"]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
KINDS = [
    "openai_chat",
    "openai_chat_stream",
    "openai_tools",
    "openai_completions_stream",
    "ollama_chat_stream",
    "ollama_chat_tools",
    "ollama_generate",
    "ollama_generate_stream",
]
STREAMING = [k for k in KINDS if k.endswith("_stream")]


@dataclass
class Tally:
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    kinds: collections.Counter[str] = field(default_factory=collections.Counter)
    stream_errors: list[str] = field(default_factory=list)
    transport_errors: list[str] = field(default_factory=list)
    hangups: int = 0
    done: int = 0


def request_for(kind: str, i: int, max_tokens: int) -> tuple[str, dict[str, Any]]:
    topic = TOPICS[i % len(TOPICS)]
    text = f"Write one sentence about {topic} (note {i})."
    opts = {"num_predict": max_tokens, "temperature": 0.7, "seed": i}
    if kind.startswith("openai_chat") or kind == "openai_tools":
        body: dict[str, Any] = {
            "model": MODEL,
            "messages": [{"role": "user", "content": text}],
            "max_tokens": max_tokens,
            "seed": i,
            "stream": kind.endswith("_stream"),
        }
        if kind == "openai_tools":
            body["messages"] = [{"role": "user", "content": f"What is the weather in city {i}?"}]
            body["tools"] = [WEATHER_TOOL]
        return "/v1/chat/completions", body
    if kind == "openai_completions_stream":
        body = {"model": MODEL, "prompt": text, "max_tokens": max_tokens, "stream": True}
        return "/v1/completions", body
    if kind.startswith("ollama_chat"):
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": text}],
            "options": opts,
            "stream": kind.endswith("_stream"),
        }
        if kind == "ollama_chat_tools":
            body["messages"] = [{"role": "user", "content": f"Weather in city {i}?"}]
            body["tools"] = [WEATHER_TOOL]
        return "/api/chat", body
    body = {"model": MODEL, "prompt": text, "options": opts, "stream": kind.endswith("_stream")}
    return "/api/generate", body


def in_band_error(line: str) -> str | None:
    payload = line[len("data: ") :] if line.startswith("data: ") else line
    if not payload.startswith("{"):
        return None
    try:
        value = json.loads(payload)
    except ValueError:
        return f"unparseable line: {line[:200]}"
    return json.dumps(value)[:300] if isinstance(value, dict) and "error" in value else None


async def one(
    client: httpx.AsyncClient, url: str, kind: str, i: int, hang_up: bool, n: int, tally: Tally
) -> None:
    path, body = request_for(kind, i, n)
    try:
        if not body.get("stream"):
            response = await client.post(url + path, json=body, timeout=300)
            tally.statuses[response.status_code] += 1
            return
        async with client.stream("POST", url + path, json=body, timeout=300) as response:
            tally.statuses[response.status_code] += 1
            async for line in response.aiter_lines():
                if not line or line.startswith(":"):
                    continue
                error = in_band_error(line)
                if error is not None:
                    tally.stream_errors.append(f"{kind}: {error}")
                if hang_up:
                    tally.hangups += 1
                    return  # leaving the block closes the connection mid-stream
    except httpx.TransportError as exc:
        tally.transport_errors.append(f"{kind}: {type(exc).__name__}: {exc}")
    finally:
        tally.kinds[kind] += 1
        tally.done += 1


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class HealthPoller(threading.Thread):
    """GET /health every `interval` s from its own thread; keeps the worst latency."""

    def __init__(self, url: str, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.url, self.interval = url, interval
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                t0 = time.monotonic()
                try:
                    status = client.get(f"{self.url}/health").status_code
                    if status != 200:
                        self.failures.append(f"status {status}")
                except httpx.TransportError as exc:
                    self.failures.append(type(exc).__name__)
                self.latencies.append(time.monotonic() - t0)
                self.stop.wait(self.interval)


async def soak(
    url: str,
    pid: int | None,
    *,
    requests: int,
    concurrency: int,
    max_tokens: int,
    hangup_share: float = 0.1,
    seed: int = 11,
) -> dict[str, Any]:
    """Run the mix against `url` (server process `pid` for RSS; None: not measured)."""
    rng = random.Random(seed)
    plan = []
    for i in range(requests):
        hang_up = rng.random() < hangup_share
        kind = rng.choice(STREAMING if hang_up else KINDS)
        plan.append((kind, i, hang_up))
    tally = Tally()
    warmup = max(1, requests // 10)
    rss: dict[str, int] = {}
    gate = asyncio.Semaphore(concurrency)
    poller = HealthPoller(url)
    poller.start()
    started = time.monotonic()
    load_start = os.getloadavg()

    async def guarded(client: httpx.AsyncClient, kind: str, i: int, hang_up: bool) -> None:
        async with gate:
            await one(client, url, kind, i, hang_up, max_tokens, tally)
            if pid is not None and tally.done == warmup:
                rss["after_warmup"] = rss_bytes(pid)
            if pid is not None:
                rss["max"] = max(rss.get("max", 0), rss_bytes(pid))

    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency)
    slots: list[dict[str, Any]] = []
    idle_after = None
    async with httpx.AsyncClient(limits=limits) as client:
        await asyncio.gather(*(guarded(client, k, i, h) for k, i, h in plan))
        elapsed = time.monotonic() - started
        for _ in range(100):  # up to 10 s for the last cancelled slots to be freed
            models = (await client.get(f"{url}/slots", timeout=10)).json()
            slots = [s for m in models for s in m["slots"]]
            if all(s["state"] == "idle" for s in slots):
                idle_after = time.monotonic() - started - elapsed
                break
            await asyncio.sleep(0.1)
    poller.stop.set()
    poller.join()
    if pid is not None:
        await asyncio.sleep(1.0)
        rss["end"] = rss_bytes(pid)
    five_xx = sum(n for status, n in tally.statuses.items() if status >= 500)
    growth = (rss["end"] / rss["after_warmup"] - 1) if pid is not None else None
    lat = sorted(poller.latencies)
    result = {
        "requests": requests,
        "concurrency": concurrency,
        "max_tokens": max_tokens,
        "seconds": round(elapsed, 1),
        "requests_per_second": round(requests / elapsed, 2),
        "statuses": dict(sorted(tally.statuses.items())),
        "kinds": dict(sorted(tally.kinds.items())),
        "hangups": tally.hangups,
        "five_xx": five_xx,
        "stream_errors": tally.stream_errors[:20],
        "transport_errors": tally.transport_errors[:20],
        "slots_idle_after_seconds": None if idle_after is None else round(idle_after, 2),
        "slots": slots if idle_after is None else [],
        "rss_mib": {k: round(v / 2**20, 1) for k, v in rss.items()},
        "rss_growth_after_warmup": None if growth is None else round(growth, 4),
        "health_polls": len(lat),
        "health_failures": poller.failures[:20],
        "health_latency_max_s": round(lat[-1], 3) if lat else None,
        "health_latency_p99_s": round(lat[int(len(lat) * 0.99) - 1], 3) if lat else None,
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
    }
    result["failures"] = failures(result)
    return result


def failures(result: dict[str, Any]) -> list[str]:
    """The checks this run fails (empty: it passed)."""
    out = []
    if result["five_xx"]:
        out.append(f"{result['five_xx']} responses were 5xx")
    if result["stream_errors"] or result["transport_errors"]:
        out.append("streams ended with errors")
    if result["slots_idle_after_seconds"] is None:
        out.append("slots still busy after the run")
    if result["health_failures"]:
        out.append("/health failed during the run")
    growth = result["rss_growth_after_warmup"]
    if growth is not None and growth >= 0.05:
        out.append(f"RSS grew {growth:.1%} after warm-up")
    if sum(result["kinds"].values()) != result["requests"]:
        out.append("not every request finished")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=24)
    # One llama.cpp thread: the soak is about robustness, not speed, and on a shared machine
    # two threads that keep being descheduled spin at every barrier.
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--home", default=str(REPO / ".cache" / "test-home"))
    args = parser.parse_args()
    server = start_server(
        "--parallel",
        str(args.parallel),
        threads=args.threads,
        GGUF_SERVE_HOME=args.home,
        GGUF_SERVE_OLLAMA_MODELS="",
    )
    try:
        result = asyncio.run(
            soak(
                server.url,
                server.proc.pid,
                requests=args.requests,
                concurrency=args.concurrency,
                max_tokens=args.max_tokens,
            )
        )
    finally:
        server.stop()
    result["server_exit_code"] = server.proc.returncode
    result["machine"] = machine()
    result["command"] = " ".join(sys.argv)
    path = save("soak", result)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    print(f"saved {path}")
    if result["failures"]:
        print("FAILED: " + "; ".join(result["failures"]))
        raise SystemExit(1)


if __name__ == "__main__":
    main()
