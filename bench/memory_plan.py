"""The memory plan against reality: predicted bytes vs llama.cpp's buffers and the RSS growth.

For the default model and its ladder (f16, q8_0, q4_K_M, q4_0, made with `gguf-serve quantize`
into a cache store, reused across runs), at 2k / 8k / 32k cells of context and KV cache f16 /
q8_0 / q4_0, each measurement runs in a fresh child process:

1. RSS (VmRSS, RssAnon, RssFile) after llama.cpp is initialised;
2. load the model and its context exactly as the engine does (LlamaHandles), logging llama.cpp's
   own buffer sizes;
3. RSS again, then one decode of a full n_ubatch batch (a 512-token prompt) and RSS again.

The plan is `plan_memory` on the model's header at the same options. Checks: every KV figure
within 5% of llama.cpp's KV buffer, every plan total within 10% of the RSS growth after the
warm-up batch. The default model was trained for 8192 tokens and gguf-serve refuses a longer
context per slot, so 32k cells are 4 slots x 8192 (llama.cpp's n_ctx 32768).

    python bench/memory_plan.py [--cache .cache/bench-ladder] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._common import machine  # noqa: E402

DEFAULT = "smollm2:135m"
LADDER = ["q4_1 (default)", "f16", "q8_0", "q4_K_M", "q4_0"]
CONTEXTS = [(2048, 1), (8192, 1), (8192, 4)]  # (cells per slot, slots)
KV_TYPES = ["f16", "q8_0", "q4_0"]
MiB = 1 << 20


def gguf_serve(home: Path, *args: str) -> None:
    env = {**os.environ, "GGUF_SERVE_HOME": str(home), "GGUF_SERVE_OLLAMA_MODELS": ""}
    subprocess.run([sys.executable, "-m", "server", *args], cwd=REPO, env=env, check=True)


def ladder(cache: Path) -> dict[str, Path]:
    """The ladder's GGUF paths, quantizing (once) what the cache store lacks."""
    from server.registry import Registry, Store
    from server.settings import load_settings

    homes = (load_settings().home, REPO / ".cache" / "test-home")  # the user's store, the tests'
    source = next((r for r in (Store(h).find(DEFAULT) for h in homes) if r is not None), None)
    settings = load_settings(home=cache, ollama_models="")
    registry = Registry(settings)
    if registry.find(DEFAULT) is None:
        if source is not None:
            registry.import_file(source.model_path, DEFAULT)
        else:
            gguf_serve(cache, "pull", DEFAULT)
    names = {"q4_1 (default)": DEFAULT, "f16": f"{DEFAULT}-f16"}
    if registry.find(names["f16"]) is None:
        gguf_serve(cache, "quantize", DEFAULT, "f16", "--allow-requantize", "--threads", "2")
    for quant in ("q8_0", "q4_K_M", "q4_0"):
        names[quant] = f"{DEFAULT}-{quant}"
        if registry.find(names[quant]) is None:
            gguf_serve(
                cache, "quantize", names["f16"], quant, "--as", names[quant], "--threads", "2"
            )
    return {label: registry.resolve(name).path for label, name in names.items()}


def measure(path: Path, n_ctx: int, n_parallel: int, kv: str) -> dict[str, Any]:
    """Run one measurement in a child process (a clean RSS baseline)."""
    args = [sys.executable, __file__, "--child", str(path), str(n_ctx), str(n_parallel), kv]
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def child(path: Path, n_ctx: int, n_parallel: int, kv: str) -> None:
    import llama_cpp

    from server.engine.llama_report import BufferLog
    from server.engine.loader import LlamaHandles, ensure_backend
    from server.engine.options import LoadOptions

    ensure_backend()
    options = LoadOptions(
        n_ctx=n_ctx, n_parallel=n_parallel, type_k=kv, type_v=kv, n_gpu_layers=0, n_threads=2
    )
    before = rss()
    with BufferLog() as log:
        handles = LlamaHandles(path, options, n_outputs_max=n_parallel)
    loaded = rss()
    n = options.n_ubatch
    batch = llama_cpp.llama_batch_init(n, 0, 1)
    for i in range(n):
        batch.token[i], batch.pos[i], batch.n_seq_id[i] = 100 + i % 1000, i, 1
        batch.seq_id[i][0], batch.logits[i] = 0, 0
    batch.logits[n - 1], batch.n_tokens = 1, n
    if llama_cpp.llama_decode(handles.ctx, batch) != 0:
        raise RuntimeError("decode failed")
    warm = rss()
    r = log.report
    print(
        json.dumps(
            {
                "load": {k: loaded[k] - before[k] for k in before},
                "warm": {k: warm[k] - before[k] for k in before},
                "llama": {
                    "model": r.total("model"),
                    "kv": r.total("kv"),
                    "compute": r.total("compute"),
                    "output": r.total("output"),
                },
            }
        )
    )


def rss() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) * 1024
    return out


def plan_for(path: Path, n_ctx: int, n_parallel: int, kv: str) -> Any:
    from server.engine.devices import repacked_types
    from server.engine.memory import Device, plan_memory
    from server.engine.options import LoadOptions
    from server.registry import read_gguf_info

    options = LoadOptions(
        n_ctx=n_ctx, n_parallel=n_parallel, type_k=kv, type_v=kv, n_gpu_layers=0, n_threads=2
    )
    host = [Device("CPU", "cpu", 1 << 40, 1 << 40, repack=repacked_types())]
    return plan_memory(read_gguf_info(path), options, host, find_max_ctx=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=REPO / ".cache" / "bench-ladder")
    parser.add_argument("--json", type=Path, default=None, help="Write every row here too.")
    args = parser.parse_args()
    paths = ladder(args.cache)
    rows = []
    header = (
        "| model | cells | KV | plan KV | llama KV | KV err | plan total | RSS load | RSS warm |"
        " total err | llama compute | plan compute |"
    )
    print(f"machine: {machine()}\n")
    print(header)
    print("|" + "---|" * 12)
    worst_kv = worst_total = 0.0
    for label, path in paths.items():
        for n_ctx, n_parallel in CONTEXTS:
            for kv in KV_TYPES:
                plan = plan_for(path, n_ctx, n_parallel, kv)
                got = measure(path, n_ctx, n_parallel, kv)
                kv_err = plan.kv.total / got["llama"]["kv"] - 1
                total_err = plan.total / got["warm"]["VmRSS"] - 1
                worst_kv = max(worst_kv, abs(kv_err))
                worst_total = max(worst_total, abs(total_err))
                cells = f"{n_parallel}x{n_ctx}" if n_parallel > 1 else str(n_ctx)
                print(
                    f"| {label} | {cells} | {kv} | {plan.kv.total / MiB:.1f} | "
                    f"{got['llama']['kv'] / MiB:.1f} | {100 * kv_err:+.1f}% | "
                    f"{plan.total / MiB:.1f} | {got['load']['VmRSS'] / MiB:.1f} | "
                    f"{got['warm']['VmRSS'] / MiB:.1f} | {100 * total_err:+.1f}% | "
                    f"{got['llama']['compute'] / MiB:.1f} | {plan.compute / MiB:.1f} |",
                    flush=True,
                )
                rows.append(
                    {
                        "model": label,
                        "n_ctx": n_ctx,
                        "n_parallel": n_parallel,
                        "kv": kv,
                        "plan": plan.model_dump(mode="json"),
                        **got,
                    }
                )
    print(
        f"\nworst KV error {100 * worst_kv:.2f}% (limit 5%), worst total error "
        f"{100 * worst_total:.1f}% (limit 10%)"
    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if worst_kv > 0.05 or worst_total > 0.10:
        sys.exit(1)


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        child(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    else:
        main()
