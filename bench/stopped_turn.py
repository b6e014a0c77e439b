"""Next-turn TTFT after a stopped answer vs after a finished one vs cold (issue 10, section 3).

A chat UI's Stop button closes the stream mid-answer; the next turn of that conversation should
start from the slot's cache as it does after a finished answer. Each round, on a real server:

- cold: a new ~1,100-token conversation (unique, so nothing is cached), streamed; the client
  closes the stream after the first token (the Stop button);
- stopped: the next turn of that conversation (history + the partial answer + a new question);
- finished: another new conversation answered to its end (32 tokens), then its next turn.

Reported: median TTFT of each, and stopped / cold (the target is at most 10 %).

    .venv/bin/python bench/stopped_turn.py [--rounds 5] [--parallel 4]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import MODEL, machine, median, save, start_server, stream_chat
from bench.concurrency import long_history

NEXT = {"role": "user", "content": "Thanks. Now give me one more fact."}


def first_token(
    client: httpx.Client, url: str, messages: list[dict[str, str]]
) -> tuple[float, str]:
    """(TTFT, the first content delta) of a streamed answer, then close the stream (Stop)."""
    body = {"model": MODEL, "messages": messages, "stream": True, "temperature": 0}
    start = time.monotonic()
    with client.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("data: {") and '"content":"' in line and '"content":""' not in line:
                ttft = time.monotonic() - start
                text = line.split('"content":"', 1)[1].split('"', 1)[0]
                return ttft, text
    raise RuntimeError("the stream ended without content")


def wait_idle(client: httpx.Client, url: str) -> None:
    """The server frees a stopped slot at its next decode step; wait for that."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        slots = client.get(f"{url}/slots").json()[0]["slots"]
        if all(s["state"] == "idle" for s in slots):
            return
        time.sleep(0.01)
    raise RuntimeError("a stopped request still holds its slot")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--parallel", type=int, default=4)
    args = ap.parse_args()
    server = start_server("--parallel", str(args.parallel), threads=2, n_ctx=2048)
    cold: list[float] = []
    stopped: list[float] = []
    finished: list[float] = []
    cached_after_stop: list[int] = []
    prompt_tokens = 0
    try:
        with httpx.Client() as client:
            first_token(client, server.url, [{"role": "user", "content": "Hi"}])  # warm-up
            wait_idle(client, server.url)
            for i in range(args.rounds):
                history = long_history()
                ttft, partial = first_token(client, server.url, history)
                cold.append(ttft)
                wait_idle(client, server.url)
                nxt = [*history, {"role": "assistant", "content": partial}, NEXT]
                turn = stream_chat(client, server.url, nxt, 8)
                stopped.append(turn.ttft)
                cached_after_stop.append(turn.cached)
                prompt_tokens = turn.prompt_tokens

                other = long_history()
                done = stream_chat(client, server.url, other, 32)
                reply = "Here is a one-sentence summary of what we discussed about numbers."
                nxt = [*other, {"role": "assistant", "content": reply}, NEXT]
                finished.append(stream_chat(client, server.url, nxt, 8).ttft)
                print(
                    f"round {i + 1}: cold {1000 * ttft:.0f} ms, after stop "
                    f"{1000 * stopped[-1]:.0f} ms ({turn.cached}/{turn.prompt_tokens} cached), "
                    f"after a finished answer {1000 * finished[-1]:.0f} ms "
                    f"(that answer: {done.tokens} tokens)",
                    flush=True,
                )
    finally:
        server.stop()
    ratio = median(stopped) / median(cold)
    print()
    print(f"machine: {machine()}; --parallel {args.parallel}; 2 threads; {args.rounds} rounds")
    print(f"history of {prompt_tokens} prompt tokens on the next turn")
    print("| next turn of a ~1,100-token chat | TTFT ms (median) |")
    print("| --- | --- |")
    print(f"| cold (nothing cached) | {1000 * median(cold):.0f} |")
    print(f"| after a stopped answer | {1000 * median(stopped):.0f} |")
    print(f"| after a finished answer | {1000 * median(finished):.0f} |")
    print(f"\nafter a stopped answer / cold = {ratio:.1%} (target: at most 10 %)")
    path = save(
        "stopped_turn",
        {
            "machine": machine(),
            "parallel": args.parallel,
            "cold_ttft": cold,
            "stopped_next_ttft": stopped,
            "finished_next_ttft": finished,
            "cached_after_stop": cached_after_stop,
            "prompt_tokens": prompt_tokens,
            "ratio": ratio,
        },
    )
    print(f"saved {path}")


if __name__ == "__main__":
    main()
