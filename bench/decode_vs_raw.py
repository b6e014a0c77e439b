"""Single-stream decode speed: streamed through the server vs llama-cpp-python's own generate loop.

Same model, same prompt, same threads, greedy, 128 new tokens. The two are measured in
alternating rounds (this machine's speed drifts) and the medians compared.

    .venv/bin/python bench/decode_vs_raw.py [--rounds 5] [--tokens 128] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import MODEL, STORY, machine, median, save, start_server, stream_chat
from server.chat.template import ChatTemplate
from server.registry import Registry
from server.settings import load_settings


def raw_rate(llm: object, tokens: list[int], n_new: int) -> tuple[float, float]:
    """(decode tok/s after the first token, time to first token) of Llama.generate."""
    llm.reset()  # type: ignore[attr-defined]
    start = time.perf_counter()
    first = 0.0
    count = 0
    for _ in llm.generate(tokens, temp=0.0, reset=True):  # type: ignore[attr-defined]
        count += 1
        if count == 1:
            first = time.perf_counter()
        if count >= n_new:
            break
    end = time.perf_counter()
    return (count - 1) / (end - first), first - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    from llama_cpp import Llama

    resolved = Registry(load_settings()).resolve(MODEL)
    template = ChatTemplate(resolved.info.chat_template)
    prompt = template.render(STORY, add_generation_prompt=True)
    llm_on = Llama(
        str(resolved.path),
        n_ctx=2048,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        flash_attn=True,
        verbose=False,
    )
    tokens = llm_on.tokenize(prompt.encode(), add_bos=False, special=True)

    server = start_server("--parallel", "1", threads=args.threads)
    raw_rates, raw_ttft, srv_rates, srv_ttft = [], [], [], []
    try:
        with httpx.Client() as client:
            stream_chat(client, server.url, STORY, 8)  # warm-up
            raw_rate(llm_on, tokens, 8)
            for i in range(args.rounds):
                rate, ttft = raw_rate(llm_on, tokens, args.tokens)
                raw_rates.append(rate)
                raw_ttft.append(ttft)
                res = stream_chat(client, server.url, STORY, args.tokens)
                assert res.tokens == args.tokens, res
                srv_rates.append(res.decode_rate)
                srv_ttft.append(res.ttft)
                print(
                    f"round {i + 1}: raw {rate:6.1f} tok/s   server {res.decode_rate:6.1f} tok/s",
                    flush=True,
                )
    finally:
        server.stop()

    raw, srv = median(raw_rates), median(srv_rates)
    paired = median([s / r for s, r in zip(srv_rates, raw_rates, strict=True)])
    print()
    print(
        f"machine: {machine()}; model {MODEL}; {args.threads} threads; {args.tokens} new tokens; greedy"
    )
    print("| path | decode tok/s (median) | TTFT ms (median) |")
    print("| --- | --- | --- |")
    print(
        f"| llama-cpp-python `Llama.generate` (flash_attn on) | {raw:.1f} | {1000 * median(raw_ttft):.0f} |"
    )
    print(f"| gguf-serve, streamed over HTTP/SSE | {srv:.1f} | {1000 * median(srv_ttft):.0f} |")
    print(
        f"server / raw = {srv / raw:.1%} (ratio of medians); {paired:.1%} (median of per-round ratios)"
    )
    path = save(
        "decode_vs_raw",
        {
            "machine": machine(),
            "raw": raw_rates,
            "server": srv_rates,
            "raw_ttft": raw_ttft,
            "server_ttft": srv_ttft,
            "ratio": srv / raw,
        },
    )
    print(f"saved {path}")


if __name__ == "__main__":
    main()
