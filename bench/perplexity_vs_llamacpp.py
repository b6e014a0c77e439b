"""`gguf-serve perplexity` against llama.cpp's own perplexity tool: same text, window, chunks.

The tool is compiled here from the llama-cpp-python source distribution's
`vendor/llama.cpp/tools/perplexity/perplexity.cpp`, against the headers and shared libraries the
installed wheel ships (libllama, libggml*, libllama-common): one C++ file, no llama.cpp rebuild.
llama.cpp's run on F16 writes its reference log-probabilities (`--kl-divergence-base`), and its
`--kl-divergence` runs on each quant give PPL, mean / 99% KLD and same-top %; ours come from
`gguf-serve perplexity NAME --json` (reference: F16, found by itself). Perplexity must agree
within 1%.

    .venv/bin/python bench/perplexity_vs_llamacpp.py [--chunks 16] [--rungs q8_0 q4_K_M q2_K]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import machine, save
from bench._ladder import (
    DEFAULT,
    DEFAULT_CACHE,
    DEFAULT_HOME,
    REPO,
    ensure_ladder,
    gguf_serve,
    model_path,
)
from server.insight.texts import pydoc_text

_FLOAT = r"([-+0-9.eE]+)"


def sdist_dir(given: Path | None) -> Path:
    """The unpacked llama-cpp-python sdist of the installed version (downloaded with pip if
    needed)."""
    release = version("llama-cpp-python")
    for candidate in (given, Path(f"/tmp/sd/llama_cpp_python-{release}")):
        if candidate is not None and (candidate / "vendor" / "llama.cpp").is_dir():
            return candidate
    cache = REPO / ".cache" / "sdist"
    unpacked = cache / f"llama_cpp_python-{release}"
    if not unpacked.is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             f"llama-cpp-python=={release}", "-d", str(cache)],
            check=True,
        )  # fmt: skip
        archive = next(cache.glob(f"llama_cpp_python-{release}.tar.gz"))
        with tarfile.open(archive) as tar:
            tar.extractall(cache, filter="data")
    return unpacked


def build_tool(sdist: Path) -> Path:
    """Compile llama-perplexity against the wheel's libraries (cached per version)."""
    out = REPO / ".cache" / "llama-perplexity" / f"llama-perplexity-{version('llama-cpp-python')}"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    site = Path(sysconfig.get_paths()["purelib"])
    libs = [site / "lib", site / "llama_cpp" / "lib"]
    source = sdist / "vendor" / "llama.cpp"
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        raise SystemExit("a C++ compiler (g++) is needed: apt-get install -y g++")
    cmd = [
        compiler, "-std=c++17", "-O2",
        f"-I{source / 'common'}", f"-I{site / 'include'}",
        str(source / "tools" / "perplexity" / "perplexity.cpp"),
        str(source / "tools" / "perplexity" / "main.cpp"),
        *(f"-L{d}" for d in libs),
        "-lllama-common", "-lllama", "-lggml", "-lggml-base", "-lpthread",
        # RPATH (not RUNPATH) so libllama-common finds libggml too.
        "-Wl,--disable-new-dtags", f"-Wl,-rpath,{':'.join(str(d) for d in libs)}",
        "-o", str(out),
    ]  # fmt: skip
    started = time.monotonic()
    subprocess.run(cmd, check=True)
    print(f"built {out} in {time.monotonic() - started:.0f}s", file=sys.stderr)
    return out


def run_tool(tool: Path, *args: str) -> str:
    done = subprocess.run([str(tool), *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"llama-perplexity failed:\n{done.stderr[-3000:]}")
    return done.stdout + done.stderr


def grab(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    if match is None:
        raise SystemExit(f"no {pattern!r} in llama-perplexity's output")
    return float(match.group(1))


def batch_check(tool: Path, args: argparse.Namespace, text_file: Path) -> list[dict[str, Any]]:
    """Windows decoded in several batches (-b below -c) and several windows per decode."""
    name = f"{DEFAULT}-q8_0"
    rows = []
    for ctx, batch in ((128, 32), (128, 512)):
        out = run_tool(tool, "-m", str(model_path(args.home, name)), "-f", str(text_file),
                       "-c", str(ctx), "-b", str(batch), "--chunks", "4", "-t", str(args.threads))  # fmt: skip
        got = json.loads(gguf_serve(
            args.home, args.cache, "perplexity", name, "--ctx", str(ctx), "--batch", str(batch),
            "--chunks", "4", "--no-kld", "--threads", str(args.threads), "--json", capture=True,
        ))  # fmt: skip
        rows.append({
            "model": f"{name} (ctx {ctx}, batch {batch}, 4 chunks)",
            "llama_cpp": {"ppl": grab(r"Final estimate: PPL = " + _FLOAT, out)},
            "ours": {"ppl": got["ppl"]},
        })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=16)
    parser.add_argument("--ctx", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rungs", nargs="+", default=["q8_0", "q4_K_M", "q2_K"])
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--sdist", type=Path, default=None)
    parser.add_argument("--batch-check-only", action="store_true")
    args = parser.parse_args()

    tool = build_tool(sdist_dir(args.sdist))
    ensure_ladder(args.home, args.cache, tuple(args.rungs))
    if args.batch_check_only:
        with tempfile.TemporaryDirectory() as tmp:
            text_file = Path(tmp) / "pydoc.txt"
            text_file.write_text(pydoc_text().content + "\n", encoding="utf-8")
            report(batch_check(tool, args, text_file), args)
        return
    common = ["-c", str(args.ctx), "--chunks", str(args.chunks), "-t", str(args.threads)]
    ours_flags = [
        "--ctx",
        str(args.ctx),
        "--chunks",
        str(args.chunks),
        "--threads",
        str(args.threads),
    ]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        text_file = Path(tmp) / "pydoc.txt"
        text_file.write_text(pydoc_text().content + "\n", encoding="utf-8")  # -f drops one "\n"
        base = Path(tmp) / "f16.kld"
        f16 = f"{DEFAULT}-f16"
        out = run_tool(tool, "-m", str(model_path(args.home, f16)), "-f", str(text_file),
                       *common, "--kl-divergence-base", str(base))  # fmt: skip
        theirs = grab(r"Final estimate: PPL = " + _FLOAT, out)
        ours = json.loads(
            gguf_serve(
                args.home, args.cache, "perplexity", f16, *ours_flags, "--json", capture=True
            )
        )
        rows.append({"model": f16, "llama_cpp": {"ppl": theirs}, "ours": {"ppl": ours["ppl"]}})
        for rung in args.rungs:
            name = f"{DEFAULT}-{rung}"
            out = run_tool(tool, "-m", str(model_path(args.home, name)), *common,
                           "--kl-divergence-base", str(base), "--kl-divergence")  # fmt: skip
            theirs_q = {
                "ppl": grab(r"Mean PPL\(Q\)\s*:\s*" + _FLOAT, out),
                "kld_mean": grab(r"Mean\s+KLD:\s*" + _FLOAT, out),
                "kld_p99": grab(r"99\.0%\s+KLD:\s*" + _FLOAT, out),
                "same_top_pct": grab(r"Same top p:\s*" + _FLOAT, out),
            }
            got = json.loads(
                gguf_serve(
                    args.home, args.cache, "perplexity", name, *ours_flags, "--json", capture=True
                )
            )
            ours_q = {
                "ppl": got["ppl"],
                "kld_mean": got["kld"]["mean"],
                "kld_p99": got["kld"]["p99"],
                "same_top_pct": got["kld"]["same_top_pct"],
                "top_k": got["kld"]["top_k"],
            }
            rows.append({"model": name, "llama_cpp": theirs_q, "ours": ours_q})
        rows += batch_check(tool, args, text_file)
    report(rows, args)


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:

    print(f"\n{machine()}; {args.chunks} chunks of {args.ctx} tokens of pydoc_data.topics\n")
    print(
        "| model | PPL llama.cpp | PPL gguf-serve | Δ | KLD llama.cpp | KLD gguf-serve | KLD 99% llama.cpp / ours | same top llama.cpp / ours |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    worst = 0.0
    for row in rows:
        a, b = row["llama_cpp"], row["ours"]
        diff = 100 * (b["ppl"] / a["ppl"] - 1)
        worst = max(worst, abs(diff))
        kld = ("-", "-", "-", "-")
        if "kld_mean" in a:
            kld = (
                f"{a['kld_mean']:.5f}",
                f"{b['kld_mean']:.5f} ({100 * (b['kld_mean'] / a['kld_mean'] - 1):+.1f}%)",
                f"{a['kld_p99']:.4f} / {b['kld_p99']:.4f}",
                f"{a['same_top_pct']:.2f}% / {b['same_top_pct']:.2f}%",
            )
        print(
            f"| {row['model']} | {a['ppl']:.4f} | {b['ppl']:.4f} | {diff:+.3f}% | "
            + " | ".join(kld)
            + " |"
        )
    path = save(
        "perplexity-vs-llamacpp",
        {
            "machine": machine(),
            "args": vars(args)
            | {"home": str(args.home), "cache": str(args.cache), "sdist": str(args.sdist)},
            "rows": rows,
        },
    )
    print(f"\nlargest perplexity difference {worst:.3f}% (must be < 1%); raw figures in {path}")
    if worst >= 1.0:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
