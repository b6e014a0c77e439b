"""Single-stream decode: our SSE response vs sse-starlette's EventSourceResponse vs the raw loop.

Issue 11 asks to bring sse-starlette back for /v1 streams if, with keep-alive pings, disconnect
detection and shutdown handling on, it keeps single-stream decode at >= 95% of llama-cpp-python's
own generate loop. Three paths, measured in interleaved rounds (raw, ours, sse-starlette; the
order rotates each round, since this shared machine's speed drifts), medians compared:
- raw: `Llama.generate`, greedy, in this process;
- ours: `gguf-serve serve` (server.api.sse.EventStreamResponse: pings, disconnect watch,
  shutdown via the drain), `--parallel 1`;
- sse-starlette: the same server with /v1 streams sent by EventSourceResponse(ping=15),
  which watches disconnects and drains at shutdown itself (bench/_sse_starlette_server.py).

    .venv/bin/python bench/sse_vs_lean.py [--rounds 7] [--tokens 128] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import MODEL, STORY, machine, median, save, start_server, stream_chat
from bench.decode_vs_raw import raw_rate
from server.chat.template import ChatTemplate
from server.registry import Registry
from server.settings import load_settings

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    from llama_cpp import Llama

    resolved = Registry(load_settings()).resolve(MODEL)
    prompt = ChatTemplate(resolved.info.chat_template).render(STORY, add_generation_prompt=True)
    llm = Llama(
        str(resolved.path),
        n_ctx=2048,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        flash_attn=True,
        verbose=False,
    )
    tokens = llm.tokenize(prompt.encode(), add_bos=False, special=True)
    ping = {"GGUF_SERVE_SSE_PING_SECONDS": "15"}
    ours = start_server("--parallel", "1", threads=args.threads, **ping)
    theirs = start_server(
        "--parallel",
        "1",
        threads=args.threads,
        launcher=[sys.executable, str(HERE / "_sse_starlette_server.py")],
        **ping,
    )
    rates: dict[str, list[float]] = {"raw": [], "ours": [], "sse_starlette": []}
    loads: list[float] = []
    try:
        with httpx.Client() as client:
            for srv in (ours, theirs):  # warm-up
                stream_chat(client, srv.url, STORY, 8)
            raw_rate(llm, tokens, 8)

            def run(name: str) -> float:
                if name == "raw":
                    return raw_rate(llm, tokens, args.tokens)[0]
                srv = ours if name == "ours" else theirs
                res = stream_chat(client, srv.url, STORY, args.tokens)
                assert res.tokens == args.tokens, res
                return res.decode_rate

            order = list(rates)
            for i in range(args.rounds):
                loads.append(os.getloadavg()[0])
                for name in order[i % 3 :] + order[: i % 3]:
                    rates[name].append(run(name))
                print(
                    f"round {i + 1}: "
                    + "  ".join(f"{k} {v[-1]:6.1f}" for k, v in rates.items())
                    + f"  (load {loads[-1]:.1f})",
                    flush=True,
                )
                time.sleep(0.5)
    finally:
        ours.stop()
        theirs.stop()

    raw = median(rates["raw"])
    result: dict[str, Any] = {
        "machine": machine(),
        "threads": args.threads,
        "tokens": args.tokens,
        "rates": rates,
        "loadavg_1m": loads,
    }
    print()
    print(f"machine: {machine()}; {MODEL}; {args.threads} thread(s); {args.tokens} new tokens")
    print("| path | decode tok/s (median) | vs raw (ratio of medians) | median per-round ratio |")
    print("| --- | --- | --- | --- |")
    for name, values in rates.items():
        paired = median([v / r for v, r in zip(values, rates["raw"], strict=True)])
        result[f"{name}_vs_raw"] = median(values) / raw
        result[f"{name}_vs_raw_paired"] = paired
        print(f"| {name} | {median(values):.1f} | {median(values) / raw:.1%} | {paired:.1%} |")
    print(f"load average (1 min) during the rounds: median {median(loads):.1f}")
    print(f"saved {save('sse_vs_lean', result)}")


if __name__ == "__main__":
    main()
