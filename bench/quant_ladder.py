"""The figures of docs/QUANTIZATION.md: the default model's quantization ladder compared, plotted,
and its KV cache types measured, all with gguf-serve's own commands.

Makes the ladder with `gguf-serve quantize` into `.cache/ladder` (F16 from the Q4_1 default with
--allow-requantize, then each rung from F16), runs `gguf-serve compare smollm2 --plot ...` and
`gguf-serve perplexity NAME --kv-type T` for T in f16, q8_0, q4_0, and prints the markdown tables.
Perplexity and KLD do not depend on load; the tok/s columns do (record the conditions).

    .venv/bin/python bench/quant_ladder.py [--chunks 16] [--threads 2] [--plot docs/quantization-tradeoff.png]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import machine, save
from bench._ladder import DEFAULT, DEFAULT_CACHE, DEFAULT_HOME, REPO, ensure_ladder, gguf_serve
from server.insight.recommend import binary_size
from server.registry.humanize import human_bytes

KV_TYPES = ("f16", "q8_0", "q4_0")


def ladder_table(table: dict[str, Any]) -> list[str]:
    lines = [
        "| quant | file | bits/weight | memory @ {ctx} | PPL ± err | Δ PPL | mean KLD | KLD 99% | same top | pp t/s | tg t/s |".format(
            ctx=table["context"]
        ),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in table["rows"]:
        ref = r["is_reference"]
        mark = " *" if r["pareto"] else ""
        lines.append(
            f"| {r['quant']}{mark} | {human_bytes(r['file_size'])} | {r['bits_per_weight']:.2f} | "
            f"{binary_size(r['memory'])} | {r['ppl']:.3f} ± {r['ppl_error']:.3f} | "
            + ("reference | - | - | - | " if ref else
               f"{r['delta_pct']:+.2f}% ± {r['delta_error_pct']:.2f} | {r['kld_mean']:.4f} | "
               f"{r['kld_p99']:.3f} | {r['same_top_pct']:.1f}% | ")
            + f"{r['prompt_tps']:.0f} | {r['decode_tps']:.1f} |"
        )  # fmt: skip
    return lines


def kv_table(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| weights | K / V cache | PPL ± err | Δ PPL vs F16 weights, f16 KV | mean KLD | KLD 99% | same top |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        k = r["kld"]
        lines.append(
            f"| {r['quant']} | {r['type_k']} / {r['type_v']} | {r['ppl']:.3f} ± {r['ppl_error']:.3f} | "
            + ( f"{k['delta_pct']:+.2f}% ± {100 * k['ppl_ratio_error']:.2f} | {k['mean']:.4f} | {k['p99']:.3f} | {k['same_top_pct']:.1f}% |"
               if k else "reference | - | - | - |")
        )  # fmt: skip
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ctx", type=int, default=4096, help="context of the memory column")
    parser.add_argument("--plot", type=Path, default=REPO / "docs" / "quantization-tradeoff.png")
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--no-speed", action="store_true")
    args = parser.parse_args()

    ensure_ladder(args.home, args.cache)
    common = ["--chunks", str(args.chunks), "--threads", str(args.threads)]
    speed = ["--no-speed"] if args.no_speed else []
    table = json.loads(gguf_serve(
        args.home, args.cache, "compare", "smollm2", *common, *speed, "--ctx", str(args.ctx),
        "--plot", str(args.plot), "--json", capture=True,
    ))  # fmt: skip
    kv = []
    for name in (f"{DEFAULT}-f16", DEFAULT):
        for kind in KV_TYPES:
            kv.append(json.loads(gguf_serve(
                args.home, args.cache, "perplexity", name, "--kv-type", kind, *common, "--json",
                capture=True,
            )))  # fmt: skip
    print(f"\n{machine()}\n")
    print("\n".join(ladder_table(table)))
    print()
    print("\n".join(kv_table(kv)))
    path = save("quant-ladder", {"machine": machine(), "compare": table, "kv": kv})
    print(f"\nplot: {args.plot}; raw figures: {path}")


if __name__ == "__main__":
    main()
