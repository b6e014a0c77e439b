"""Build llama-cpp-python into a wheel once and reuse it: the venv, the image and the RPC tools.

Compiling llama.cpp takes about 7 minutes on 2 cores; doing it once per (requirement, CMake
flags) and keeping the wheel outside the clone (like pip's own cache) means a clean clone on a
machine that built it before compiles nothing. Prints the wheel's path.

    python3 scripts/llama_wheel.py [--cache DIR] [--cmake-args "-DGGML_RPC=on"]

The requirement is pyproject.toml's llama-cpp-python line; the newest release it admits is
built (pip's `--no-binary` keeps pip from taking a prebuilt wheel for a different CPU).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "docker"))
from llama_requirement import requirement  # noqa: E402

# RPC on: `engine/rpc.py` registers rpc-servers through it, and `make rpc-server` links the same
# libraries. AMX off on x86-64: llama.cpp compiles for the building CPU (GGML_NATIVE), and some
# virtual machines advertise AMX (cpuid, kernel) yet trap on its tile instructions (SIGILL in
# the first matrix multiply, seen on these machines); AVX-512 and the rest stay on.
_NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
DEFAULT_CMAKE_ARGS = "-DGGML_RPC=on" + (
    f' "-DCMAKE_C_FLAGS={_NO_AMX}" "-DCMAKE_CXX_FLAGS={_NO_AMX}"'
    if platform.machine() in ("x86_64", "AMD64")
    else ""
)


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gguf-serve" / "wheels"


def wheel_dir(cache: Path, req: str, cmake_args: str) -> Path:
    key = hashlib.sha256(f"{req}|{cmake_args}".encode()).hexdigest()[:16]
    return cache / key


def find_wheel(directory: Path) -> Path | None:
    wheels = sorted(directory.glob("llama_cpp_python-*.whl"))
    return wheels[-1] if wheels else None


def build(directory: Path, req: str, cmake_args: str) -> Path:
    directory.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory.parent) as tmp:
        env = {
            **os.environ,
            "CMAKE_ARGS": cmake_args,
            "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 1),
        }
        print(f"compiling {req} with CMAKE_ARGS={cmake_args!r} (minutes)", file=sys.stderr)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--no-deps",
                "--no-cache-dir",
                "--no-binary",
                "llama-cpp-python",
                "-w",
                tmp,
                req,
            ],
            check=True,
            env=env,
        )
        built = find_wheel(Path(tmp))
        if built is None:
            raise SystemExit("pip wheel produced no llama_cpp_python wheel")
        directory.mkdir(exist_ok=True)
        target = directory / built.name
        shutil.move(built, target)  # same filesystem: the wheel appears whole or not at all
        (directory / "cmake-args.txt").write_text(f"{req}\n{cmake_args}\n")
        return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=default_cache())
    parser.add_argument(
        "--cmake-args", default=os.environ.get("LLAMA_CMAKE_ARGS", DEFAULT_CMAKE_ARGS)
    )
    args = parser.parse_args()
    req = requirement(REPO / "pyproject.toml")
    directory = wheel_dir(args.cache, req, args.cmake_args)
    wheel = find_wheel(directory) or build(directory, req, args.cmake_args)
    print(wheel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
