"""Checks a running gguf-serve container from the host with the official openai SDK.

Used by tests/container/run.sh (`make test-container`); not collected by pytest. Exits non-zero
with one line saying what failed.

    smoke.py --port 11434 --model smollm2:135m [--expect-model NAME ...]
"""

from __future__ import annotations

import argparse
import sys

import httpx
from openai import OpenAI


def check(condition: bool, message: str) -> None:
    if not condition:
        sys.exit(f"container smoke check failed: {message}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True, help="model to chat with")
    parser.add_argument("--expect-model", action="append", default=[], help="must be listed")
    args = parser.parse_args()
    base = f"http://127.0.0.1:{args.port}"

    health = httpx.get(f"{base}/health", timeout=10)
    check(health.status_code == 200, f"/health answered {health.status_code} {health.text}")
    check(health.json().get("status") == "ok", f"/health body {health.text}")

    client = OpenAI(base_url=f"{base}/v1", api_key="unused", timeout=120, max_retries=0)
    listed = {card.id for card in client.models.list()}
    for name in [args.model, *args.expect_model]:
        check(name in listed, f"{name} is not in GET /v1/models: {sorted(listed)}")

    stream = client.chat.completions.create(
        model=args.model,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage = [], None, None
    for chunk in stream:
        if chunk.choices:
            text.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage is not None:
            usage = chunk.usage
    answer = "".join(text)
    check(len([t for t in text if t]) >= 2, f"expected several streamed deltas, got {text!r}")
    check(answer.strip() != "", "the streamed answer is empty")
    check(finish in ("stop", "length"), f"finish_reason {finish!r}")
    check(usage is not None and usage.completion_tokens > 0, f"usage {usage!r}")
    print(f"{args.model} streamed {usage.completion_tokens if usage else 0} tokens: {answer!r}")
    print(f"GET /v1/models lists {sorted(listed)}")


if __name__ == "__main__":
    main()
