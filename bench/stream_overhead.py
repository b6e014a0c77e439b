"""CPU the server spends per streamed token outside llama.cpp (the event-loop thread).

Wall-clock decode speed on this 2-core machine drifts by +-10 % between runs; CPU time of the
server's main thread (HTTP, SSE encoding, handing tokens over) per token is steadier, and it is
the cost that competes with llama.cpp's threads for the cores.

    .venv/bin/python bench/stream_overhead.py [--tokens 1000] [--streams 1] [--threads 2]
                                              [--sse-starlette]

`--sse-starlette` sends the /v1 streams through sse-starlette's EventSourceResponse (pings,
disconnect detection, shutdown drain on) instead of ours (bench/_sse_starlette_server.py).
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import STORY, machine, start_server, stream_chat

TICKS = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread name of process `pid`."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        stat = (task / "stat").read_text()
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        cpu = (int(fields[11]) + int(fields[12])) / TICKS
        key = "main" if task.name == str(pid) else name
        out[key] = out.get(key, 0.0) + cpu
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=1000)
    ap.add_argument("--streams", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sse-starlette", action="store_true")
    args = ap.parse_args()
    here = Path(__file__).resolve().parent
    server = start_server(
        "--parallel",
        str(max(args.streams, 1)),
        threads=args.threads,
        launcher=[sys.executable, str(here / "_sse_starlette_server.py")]
        if args.sse_starlette
        else None,
    )
    try:
        with httpx.Client() as client:
            stream_chat(client, server.url, STORY, 8)
        before = thread_cpu(server.proc.pid)

        def one(_: int) -> int:
            with httpx.Client() as c:
                return stream_chat(c, server.url, STORY, args.tokens, ignore_eos=True).tokens

        with ThreadPoolExecutor(args.streams) as pool:
            total = sum(pool.map(one, range(args.streams)))
        after = thread_cpu(server.proc.pid)
    finally:
        server.stop()
    main_cpu = after.get("main", 0) - before.get("main", 0)
    path = "sse-starlette EventSourceResponse" if args.sse_starlette else "our EventStreamResponse"
    print(f"machine: {machine()}; {args.streams} stream(s), {total} tokens; {path}")
    for name in sorted(after):
        delta = after[name] - before.get(name, 0.0)
        if delta > 0.005:
            print(f"  {name:24s} {delta:7.2f} s CPU")
    print(f"event-loop thread: {1e6 * main_cpu / total:.0f} us CPU per streamed token")


if __name__ == "__main__":
    main()
