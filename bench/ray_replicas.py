"""gguf-serve replicas on Ray Serve, on a two-node Ray cluster simulated on this machine.

    .venv/bin/python bench/ray_replicas.py throughput [--streams 8] [--tokens 64] [--rounds 3]
    .venv/bin/python bench/ray_replicas.py affinity [--conversations 8] [--rounds 3]

throughput: aggregate decode tok/s of N concurrent streams through Ray's proxy, one replica
against two (one CPU, so one llama.cpp thread, per replica; one replica per node).
affinity: time to first token of a conversation's second turn (a long, distinct system prompt
per conversation, so the cached prefix matters), Ray's power-of-two router against ours, which
sends a session's turns to one replica (`x-session-id`).
GGUF_SERVE_HOME must hold the default model.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import MODEL, free_port, machine, median, save
from server.deploy.ray import REPLICA_HEADER, build, deployment_name, simulated_cluster
from server.settings import load_settings


def deploy(port: int, replicas: int, router: str, n_parallel: int) -> str:
    from ray import serve

    settings = load_settings(
        ollama_models="",
        log_level="warning",
        load={"n_parallel": n_parallel, "n_ctx": 2048},
        ray={"replicas": replicas, "router": router, "http_port": port},
    )
    serve.start(http_options={"host": "127.0.0.1", "port": port}, proxy_location="HeadOnly")
    serve.run(build(settings), name="gguf-serve", route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    # Every replica running, as Serve's controller says: /health through the proxy cannot tell
    # (Ray's default router prefers the proxy's node, so it may never reach the other replica).
    name = deployment_name(router)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        app = serve.status().applications["gguf-serve"]
        running = app.deployments[name].replica_states.get("RUNNING", 0)
        if running == replicas:
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
        time.sleep(0.2)
    else:
        raise RuntimeError(f"{replicas} replica(s) of {name} not running after 300 s")
    return url


async def one_stream(client: httpx.AsyncClient, i: int, tokens: int) -> tuple[int, float, float]:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"Write a long story about dragon {i}."}],
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    first = last = 0.0
    text = ""
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        async for raw in r.aiter_text():
            now = time.monotonic()
            first = first or now
            last = now
            text += raw
    usage = text.rsplit('"completion_tokens":', 1)[1].split(",", 1)[0]
    return int(usage), first, last


def throughput(url: str, streams: int, tokens: int) -> float:
    async def run() -> float:
        async with httpx.AsyncClient(base_url=url, timeout=600) as client:
            start = time.monotonic()
            results = await asyncio.gather(*(one_stream(client, i, tokens) for i in range(streams)))
            end = max(last for _, _, last in results)
            return sum(n for n, _, _ in results) / (end - start)

    return asyncio.run(run())


def conversation(i: int, salt: str) -> list[dict[str, str]]:
    """A long system prompt distinct per conversation (and per run: no cache from earlier)."""
    facts = " ".join(
        f"Fact {k} about archive {i}-{salt}: shelf {k * 7 % 13} holds {k + i} maps."
        for k in range(20)
    )
    return [
        {"role": "system", "content": f"You are archivist {i}. {facts}"},
        {"role": "user", "content": "Which shelf holds the most maps?"},
    ]


def ask(
    client: httpx.Client, url: str, messages: list[dict[str, str]], session: str
) -> dict[str, Any]:
    """One streamed answer: TTFT, the replica that answered, the text, cached prompt tokens."""
    body = {
        "model": MODEL,
        "messages": messages,
        "max_tokens": 8,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.monotonic()
    ttft, text = 0.0, ""
    headers = {"x-session-id": session}
    with client.stream("POST", f"{url}/v1/chat/completions", json=body, headers=headers) as r:
        for raw in r.iter_text():
            if not ttft and '"content":"' in raw and '"content":""' not in raw:
                ttft = time.monotonic() - start
            text += raw
        replica = r.headers[REPLICA_HEADER]
    answer, cached, prompt = "", 0, 0
    for line in text.splitlines():
        if line.startswith("data: {") and '"delta"' in line:
            delta = json.loads(line[6:])["choices"]
            answer += "".join(c["delta"].get("content") or "" for c in delta)
        if line.startswith("data: {") and '"usage":{' in line:
            usage = json.loads(line[6:])["usage"]
            prompt = int(usage["prompt_tokens"])
            cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0))
    return {"ttft": ttft, "replica": replica, "answer": answer, "cached": cached, "prompt": prompt}


def next_turn_ttft(url: str, conversations: int, salt: str) -> dict[str, Any]:
    """All first turns, then all second turns (others interleave, as with real users)."""
    with httpx.Client(timeout=600) as client:
        sessions = [f"conversation-{i}-{salt}" for i in range(conversations)]
        first = [ask(client, url, conversation(i, salt), s) for i, s in enumerate(sessions)]
        rows = []
        for i, (session, turn1) in enumerate(zip(sessions, first, strict=True)):
            messages = [
                *conversation(i, salt),
                {"role": "assistant", "content": turn1["answer"]},
                {"role": "user", "content": "And the fewest?"},
            ]
            turn2 = ask(client, url, messages, session)
            rows.append(
                {
                    **turn2,
                    "turn1_replica": turn1["replica"],
                    "same": turn2["replica"] == turn1["replica"],
                }
            )
    return {
        "ttft_median": median([r["ttft"] for r in rows]),
        "rows": rows,
        "same": sum(r["same"] for r in rows),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["throughput", "affinity"])
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--conversations", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    out: dict[str, Any] = {"machine": machine(), "args": vars(args)}
    with simulated_cluster(nodes=2, cpus_per_node=1):
        port = free_port()
        if args.mode == "throughput":
            rates: dict[int, list[float]] = {1: [], 2: []}
            for replicas in (1, 2):
                url = deploy(port, replicas, "power-of-two", n_parallel=8)
                throughput(url, args.streams, 8)  # warm-up
                for _ in range(args.rounds):
                    rates[replicas].append(throughput(url, args.streams, args.tokens))
                print(f"{replicas} replica(s): {[round(r, 1) for r in rates[replicas]]} tok/s")
            one, two = median(rates[1]), median(rates[2])
            print(f"{machine()}\naggregate tok/s, {args.streams} streams: 1 replica {one:.1f}, "
                  f"2 replicas {two:.1f} ({two / one:.2f}x)")  # fmt: skip
            out["rates"] = rates
        else:
            results: dict[str, list[dict[str, Any]]] = {"power-of-two": [], "affinity": []}
            for _ in range(args.rounds):
                for router in results:
                    url = deploy(port, 2, router, n_parallel=4)
                    salt = f"{len(results[router])}-{time.monotonic_ns()}"  # same length for both
                    row = next_turn_ttft(url, args.conversations, salt)
                    results[router].append(row)
                    for i, r in enumerate(row["rows"]):
                        print(f"  {router} conversation {i}: turn 1 on {r['turn1_replica']}, "
                              f"turn 2 on {r['replica']}, turn 2 cached {r['cached']} of {r['prompt']} prompt tokens, "
                              f"TTFT {r['ttft'] * 1000:.0f} ms", flush=True)  # fmt: skip
                    print(f"{router}: turn-2 TTFTs {[round(r['ttft'] * 1000) for r in row['rows']]} ms, "
                          f"cached {[r['cached'] for r in row['rows']]}, same replica {row['same']}",
                          flush=True)  # fmt: skip
            for router, rows in results.items():
                ttft = median([r["ttft_median"] for r in rows])
                same = sum(r["same"] for r in rows) / (len(rows) * args.conversations)
                print(f"{router}: next-turn TTFT median {ttft * 1000:.0f} ms, "
                      f"turn 2 on turn 1's replica {same:.0%}")  # fmt: skip
            out["results"] = results
    save(f"ray_{args.mode}", out)


if __name__ == "__main__":
    main()
