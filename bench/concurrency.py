"""Aggregate throughput under concurrency, TTFT, and prefix reuse on a long chat history.

Starts a real server (2 threads, `--parallel` slots), then measures:
- aggregate completion tokens/s with 1, 4, 8 and 16 concurrent streams (128 new tokens each);
- single-stream decode tokens/s and time to first token;
- cold vs next-turn TTFT on a chat history of about 1,100 tokens.

    .venv/bin/python bench/concurrency.py [--parallel 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import STORY, machine, median, save, start_server, stream_chat

TOPICS = [
    "a dragon",
    "the sea",
    "a robot",
    "a forest",
    "the moon",
    "a city",
    "a ship",
    "winter",
    "a castle",
    "a river",
    "music",
    "bread",
    "a garden",
    "a storm",
    "a train",
    "a library",
]


def aggregate(url: str, concurrency: int, n_new: int) -> float:
    """Completion tokens per second over the wall time of `concurrency` simultaneous streams."""

    def one(i: int) -> int:
        with httpx.Client() as client:
            msgs = [
                {
                    "role": "user",
                    "content": f"Write a very long story about {TOPICS[i % len(TOPICS)]}.",
                }
            ]
            return stream_chat(client, url, msgs, n_new, ignore_eos=True).tokens

    start = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        total = sum(pool.map(one, range(concurrency)))
    return total / (time.monotonic() - start)


def long_history(turns: int = 14) -> list[dict[str, str]]:
    """A chat of about 1,100 tokens (unique per call so the first request is truly cold)."""
    tag = uuid.uuid4().hex[:8]
    msgs = [{"role": "system", "content": f"Session {tag}. You are a helpful assistant."}]
    for i in range(turns):
        msgs.append(
            {
                "role": "user",
                "content": f"Question {i}: tell me one fact about the number {i * 7}, "
                "and explain why it might matter to a student of mathematics or history.",
            }
        )
        msgs.append(
            {
                "role": "assistant",
                "content": f"The number {i * 7} is interesting because it can be "
                "written as a product of small primes, it appears in calendars and in many puzzles, "
                "and it shows how arithmetic patterns repeat in everyday life.",
            }
        )
    msgs.append({"role": "user", "content": "Summarise our conversation in one sentence."})
    return msgs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parallel", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=128)
    args = ap.parse_args()
    server = start_server("--parallel", str(args.parallel), threads=2, n_ctx=2048)
    results: dict[str, object] = {"machine": machine(), "parallel": args.parallel}
    try:
        with httpx.Client() as client:
            stream_chat(client, server.url, STORY, 8)  # warm-up
            agg: dict[int, float] = {}
            for c in (1, 4, 8, 16):
                rates = [aggregate(server.url, c, args.tokens) for _ in range(args.rounds)]
                agg[c] = median(rates)
                print(
                    f"concurrency {c:2d}: {agg[c]:6.1f} tok/s aggregate  (rounds: "
                    + ", ".join(f"{r:.1f}" for r in rates)
                    + ")",
                    flush=True,
                )
            singles = [
                stream_chat(client, server.url, STORY, args.tokens, ignore_eos=True)
                for _ in range(args.rounds)
            ]
            decode = median([s.decode_rate for s in singles])
            ttft = median([s.ttft for s in singles])
            cold, warm, prompt_tokens, cached = [], [], 0, 0
            for _ in range(args.rounds):
                history = long_history()
                first = stream_chat(client, server.url, history, 32)
                cold.append(first.ttft)
                reply = "Here is a one-sentence summary of what we discussed about numbers."
                nxt = [
                    *history,
                    {"role": "assistant", "content": reply},
                    {"role": "user", "content": "Thanks. Now give me one more fact."},
                ]
                second = stream_chat(client, server.url, nxt, 32)
                warm.append(second.ttft)
                prompt_tokens, cached = second.prompt_tokens, second.cached
    finally:
        server.stop()
    print()
    print(
        f"machine: {machine()}; --parallel {args.parallel}; 2 threads; {args.tokens} new tokens per request"
    )
    print("| concurrent requests | aggregate tok/s |")
    print("| --- | --- |")
    for c, rate in agg.items():
        print(f"| {c} | {rate:.1f} |")
    print(f"\nsingle stream: decode {decode:.1f} tok/s, TTFT {1000 * ttft:.0f} ms")
    print(f"8 concurrent / single stream = {agg[8] / agg[1]:.2f}x")
    print(
        f"long history ({prompt_tokens} prompt tokens, {cached} cached on the next turn): "
        f"cold TTFT {1000 * median(cold):.0f} ms, next-turn TTFT {1000 * median(warm):.0f} ms "
        f"({median(warm) / median(cold):.1%} of cold)"
    )
    results.update(
        {
            "aggregate": agg,
            "decode": decode,
            "ttft": ttft,
            "cold_ttft": cold,
            "next_turn_ttft": warm,
            "history_prompt_tokens": prompt_tokens,
            "cached": cached,
        }
    )
    print(f"saved {save('concurrency', results)}")


if __name__ == "__main__":
    main()
