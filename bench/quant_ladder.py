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
TOP_KS = (64, 256, 1024, 4096, 49152)  # 49152: the whole vocabulary, exact KLD


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
        "| weights | K / V cache | flash attention | PPL ± err | Δ PPL vs F16, f16 KV | mean KLD | KLD 99% | same top |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        k = r["kld"]
        lines.append(
            f"| {r['quant']} | {r['type_k']} / {r['type_v']} | {r['flash_attn']} | {r['ppl']:.3f} ± {r['ppl_error']:.3f} | "
            + ( f"{k['delta_pct']:+.2f}% ± {100 * k['ppl_ratio_error']:.2f} | {k['mean']:.4f} | {k['p99']:.3f} | {k['same_top_pct']:.1f}% |"
               if k else "reference | - | - | - |")
        )  # fmt: skip
    return lines


def top_k_table(results: list[dict[str, Any]]) -> list[str]:
    exact = results[-1]["kld"]
    lines = [
        "| reference top-k | mean KLD | vs exact | KLD 99% | same top | reference cache |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        k = r["kld"]
        size = r["tokens_scored"] * k["top_k"] * 8 + r["chunks"] * r["n_ctx"] * 4
        lines.append(
            f"| {k['top_k']} | {k['mean']:.5f} | {100 * (k['mean'] / exact['mean'] - 1):+.1f}% | "
            f"{k['p99']:.4f} | {k['same_top_pct']:.1f}% | {human_bytes(size)} |"
        )
    return lines


def top_k_sweep(args: argparse.Namespace) -> list[dict[str, Any]]:
    """KLD of Q4_K_M against F16 kept at several top-k (the last is the whole vocabulary)."""
    flags = ["--chunks", str(args.topk_chunks), "--threads", str(args.threads), "--json"]
    out = []
    for k in TOP_KS:
        name = f"{DEFAULT}-q4_K_M"
        text = gguf_serve(
            args.home, args.cache, "perplexity", name, "--top-k", str(k), *flags, capture=True
        )
        out.append(json.loads(text))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ctx", type=int, default=4096, help="context of the memory column")
    parser.add_argument("--plot", type=Path, default=REPO / "docs" / "quantization-tradeoff.png")
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--no-speed", action="store_true")
    parser.add_argument("--topk-only", action="store_true", help="only the top-k sweep")
    parser.add_argument("--topk-chunks", type=int, default=2, help="windows for the top-k sweep")
    args = parser.parse_args()
    ensure_ladder(args.home, args.cache)
    if args.topk_only:
        sweep = top_k_sweep(args)
        print("\n".join(top_k_table(sweep)))
        save("quant-topk", {"machine": machine(), "topk": sweep})
        return

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
    # Flash attention off (f16 KV): the same arithmetic in another order.
    kv.append(json.loads(gguf_serve(
        args.home, args.cache, "perplexity", f"{DEFAULT}-f16", "--flash-attn", "off", *common,
        "--json", capture=True,
    )))  # fmt: skip
    print(f"\n{machine()}\n")
    print("\n".join(ladder_table(table)))
    print()
    print("\n".join(kv_table(kv)))
    sweep = top_k_sweep(args)
    print()
    print("\n".join(top_k_table(sweep)))
    path = save("quant-ladder", {"machine": machine(), "compare": table, "kv": kv, "topk": sweep})
    print(f"\nplot: {args.plot}; raw figures: {path}")


if __name__ == "__main__":
    main()
