"""Does building llama.cpp with the RPC backend cost anything when no rpc-server is used?

Decode tok/s of `Llama.generate` (greedy, 128 new tokens, 2 threads, the default model) in the
project's venv (RPC on) and in another Python whose llama-cpp-python was built without it,
alternating in rounds, each round a fresh process. Build the comparison wheel once with

    python3 scripts/llama_wheel.py --cmake-args '"-DCMAKE_C_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16" "-DCMAKE_CXX_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"'
    python3 -m venv /tmp/norpc && /tmp/norpc/bin/pip install <that wheel>

then  .venv/bin/python bench/rpc_overhead.py --other /tmp/norpc/bin/python [--rounds 10]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import MODEL, machine, median, save
from server.registry import Registry
from server.settings import load_settings

# Runs in the measured interpreter: needs only llama_cpp.
PROBE = r"""
import json, sys, time
import llama_cpp
from llama_cpp import Llama
path, threads, n_new = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
llm = Llama(path, n_ctx=1024, n_threads=threads, n_threads_batch=threads, verbose=False)
tokens = llm.tokenize(b"<|im_start|>user\nWrite a very long story about a dragon.<|im_end|>\n<|im_start|>assistant\n", special=True)
rates = []
for _ in range(3):
    llm.reset()
    count, first = 0, 0.0
    for _tok in llm.generate(tokens, temp=0.0, reset=True):
        count += 1
        if count == 1:
            first = time.perf_counter()
        if count >= n_new:
            break
    rates.append((count - 1) / (time.perf_counter() - first))
print(json.dumps({"rpc": bool(llama_cpp.llama_supports_rpc()), "rate": sorted(rates)[1]}))
"""


def measure(python: str, path: Path, threads: int, n_new: int) -> tuple[bool, float]:
    out = subprocess.run(
        [python, "-c", PROBE, str(path), str(threads), str(n_new)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    row = json.loads(out.stdout.strip().splitlines()[-1])
    return bool(row["rpc"]), float(row["rate"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--other", required=True, help="Python whose llama-cpp-python has no RPC")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=128)
    args = ap.parse_args()
    path = Registry(load_settings()).resolve(MODEL).path
    sides = {"rpc on": sys.executable, "rpc off": args.other}
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for i in range(args.rounds):
        order = list(sides.items()) if i % 2 == 0 else list(reversed(sides.items()))
        for name, python in order:
            has_rpc, rate = measure(python, path, args.threads, args.tokens)
            assert has_rpc == (name == "rpc on"), f"{python}: llama_supports_rpc() is {has_rpc}"
            rates[name].append(rate)
        print(f"round {i + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in rates.items()))
    on, off = median(rates["rpc on"]), median(rates["rpc off"])
    ratios = [a / b for a, b in zip(rates["rpc on"], rates["rpc off"], strict=True)]
    print(f"{machine()}\nmedian decode tok/s: rpc on {on:.1f}, rpc off {off:.1f}")
    print(f"on/off: {on / off:.3f} (ratio of medians), {median(ratios):.3f} (median of ratios)")
    save("rpc_overhead", {"machine": machine(), "rates": rates, "args": vars(args)})


if __name__ == "__main__":
    main()
