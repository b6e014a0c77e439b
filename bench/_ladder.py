"""The quantization ladder of the default model, made with `gguf-serve quantize` into a store
under `.cache/` (git-ignored; derived models never go into git)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT = "smollm2:135m"
LADDER = ("q8_0", "q6_K", "q5_K_M", "q4_K_M", "q4_K_S", "q4_0", "q3_K_M", "q2_K")
DEFAULT_HOME = REPO / ".cache" / "ladder"
DEFAULT_CACHE = REPO / ".cache" / "insight-cache"


def gguf_serve(home: Path, cache: Path, *args: str, capture: bool = False) -> str:
    """Run the CLI as a user would; raises SystemExit with its stderr on failure."""
    env = {
        **os.environ,
        "GGUF_SERVE_HOME": str(home),
        "GGUF_SERVE_CACHE_DIR": str(cache),
        "GGUF_SERVE_OLLAMA_MODELS": "",
    }
    done = subprocess.run(
        [sys.executable, "-m", "server", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE if capture else None,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"gguf-serve {' '.join(args)} failed ({done.returncode})")
    return done.stdout or ""


def model_path(home: Path, name: str) -> Path:
    sys.path.insert(0, str(REPO))
    from server.registry import Store

    return Store(home).get(name).model_path


def ensure_ladder(home: Path, cache: Path, rungs: tuple[str, ...] = LADDER) -> list[str]:
    """Names of the default model, its F16 and each rung, making what is missing."""
    listed = gguf_serve(home, cache, "list", capture=True)
    if f"{DEFAULT} " not in listed:
        test_home = REPO / ".cache" / "test-home"
        source = test_home if (test_home / "manifests").exists() else None
        if source is not None:
            gguf_serve(home, cache, "import", str(model_path(source, DEFAULT)), DEFAULT)
        else:
            gguf_serve(home, cache, "pull", DEFAULT)
    names = [f"{DEFAULT}-f16", *(f"{DEFAULT}-{rung}" for rung in rungs)]
    if f"{names[0]} " not in listed:
        gguf_serve(home, cache, "quantize", DEFAULT, "f16", "--allow-requantize")
    for rung, name in zip(rungs, names[1:], strict=True):
        if f"{name} " not in listed:
            gguf_serve(home, cache, "quantize", names[0], rung)
    return [DEFAULT, *names]
