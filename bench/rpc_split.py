"""Decode speed of the default model split over two rpc-servers against the same file in-process.

Two `rpc-server`s on loopback (one thread each), one gguf-serve serving the model twice: as
`smollm2:135m` split over both servers (every layer offloaded, tensor_split 1:1, the engine in
its supervised child) and as `smollm2-local:135m` in-process (`--threads`, default 1: the same per-host compute). Single stream,
greedy, 128 new tokens, alternating rounds, medians. Loopback has no real network latency:
this is the protocol's and the extra process hops' cost, a floor for real hosts.

    .venv/bin/python bench/rpc_split.py [--rounds 5]      # needs `make rpc-server`
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (
    MODEL,
    REPO,
    STORY,
    free_port,
    machine,
    median,
    save,
    start_server,
    stream_chat,
)
from server.engine.rpc import reachable
from server.registry import Registry, Store
from server.settings import load_settings

LOCAL = "smollm2-local:135m"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1, help="in-process threads (1 per server)")
    args = ap.parse_args()
    binary = REPO / ".cache" / "rpc-server" / "rpc-server"
    source = Registry(load_settings()).resolve(MODEL).path
    servers: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp))
        store.import_file(source, MODEL)
        store.copy(MODEL, LOCAL)
        endpoints = []
        for _ in range(2):
            port = free_port()
            servers.append(subprocess.Popen([str(binary), "-p", str(port), "-t", "1"],
                                            stdout=subprocess.DEVNULL))  # fmt: skip
            endpoints.append(f"127.0.0.1:{port}")
        while not all(reachable(e) for e in endpoints):
            time.sleep(0.1)
        load = {"rpc_servers": endpoints, "n_gpu_layers": -1, "tensor_split": [1, 1]}
        server = start_server(
            threads=args.threads,
            GGUF_SERVE_HOME=tmp,
            GGUF_SERVE_MODELS=json.dumps({MODEL: {"load": load}}),
            GGUF_SERVE_MAX_LOADED_MODELS="2",
            GGUF_SERVE_LOAD__N_PARALLEL="1",
        )
        rates: dict[str, list[float]] = {MODEL: [], LOCAL: []}
        try:
            with httpx.Client() as client:
                for name in rates:  # warm-up: load both
                    stream_chat(client, server.url, STORY, 8, model=name)
                for i in range(args.rounds):
                    names = list(rates) if i % 2 == 0 else list(reversed(rates))
                    for name in names:
                        result = stream_chat(client, server.url, STORY, args.tokens, model=name)
                        rates[name].append(result.decode_rate)
                    print(
                        f"round {i + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in rates.items())
                    )
        finally:
            server.stop()
            for proc in servers:
                proc.kill()
    split, local = median(rates[MODEL]), median(rates[LOCAL])
    print(f"{machine()}\ndecode tok/s: split over 2 rpc-servers {split:.1f}, in-process {local:.1f}"
          f" ({split / local:.0%})")  # fmt: skip
    save("rpc_split", {"machine": machine(), "rates": rates, "args": vars(args)})


if __name__ == "__main__":
    main()
