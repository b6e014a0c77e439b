"""Build llama.cpp's `rpc-server` against the installed llama-cpp-python, compiling one file.

The wheel (scripts/llama_wheel.py, built with GGML_RPC on) already ships libggml-rpc.so, the
RPC protocol itself, and ggml's headers; the server's `main` is one small C++ file in the same
version's source distribution. So: fetch that sdist once (kept beside the wheels, outside the
clone), extract `tools/rpc/rpc-server.cpp`, compile it against the installed headers and link
the installed libraries with an rpath to them. Both ends of a split model then run the same
libggml-rpc.so, so their protocol versions match by construction. Seconds, not minutes.

    .venv/bin/python scripts/build_rpc_server.py --out .cache/rpc-server/rpc-server

Run it with the venv's Python: the llama-cpp-python it imports is the one linked.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "llama-cpp-python"
MEMBER = "vendor/llama.cpp/tools/rpc/rpc-server.cpp"


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gguf-serve" / "sdist"


def installed() -> tuple[str, Path, Path]:
    """Version, library directory and header directory of the installed llama-cpp-python."""
    version = importlib.metadata.version(PACKAGE)
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.origin is None:
        raise SystemExit(f"{PACKAGE} is not installed in {sys.executable}")
    package_dir = Path(spec.origin).parent
    lib, include = package_dir / "lib", package_dir.parent / "include"
    if not (lib / "libggml-rpc.so").exists():
        raise SystemExit(
            f"{lib} has no libggml-rpc.so: llama-cpp-python was built without GGML_RPC "
            "(rebuild it with scripts/llama_wheel.py)"
        )
    if not (include / "ggml-rpc.h").exists():
        raise SystemExit(f"{include} has no ggml-rpc.h (the wheel ships headers there)")
    return version, lib, include


def sdist(version: str, cache: Path) -> Path:
    """The source distribution of `version`, downloaded once into `cache`."""
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob(f"llama_cpp_python-{version}.tar.gz"))
    if found:
        return found[0]
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary",
                ":all:",
                "-d",
                tmp,
                f"{PACKAGE}=={version}",
            ],
            check=True,
        )
        (got,) = Path(tmp).glob("*.tar.gz")
        target = cache / got.name
        shutil.move(got, target)  # same filesystem: appears whole or not at all
        return target


def extract(archive: Path, version: str, into: Path) -> Path:
    name = f"llama_cpp_python-{version}/{MEMBER}"
    with tarfile.open(archive) as tar:
        source = tar.extractfile(name)
        if source is None:
            raise SystemExit(f"{archive.name} has no {MEMBER}")
        target = into / "rpc-server.cpp"
        target.write_bytes(source.read())
    return target


def compile_server(source: Path, lib: Path, include: Path, out: Path) -> None:
    compiler = os.environ.get("CXX", "c++")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    subprocess.run(
        [
            compiler,
            "-std=c++17",
            "-O2",
            f"-I{include}",
            str(source),
            f"-L{lib}",
            "-lggml",
            "-lggml-base",
            f"-Wl,-rpath,{lib}",
            "-o",
            str(partial),
        ],
        check=True,
    )
    partial.replace(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(".cache/rpc-server/rpc-server"))
    parser.add_argument("--cache", type=Path, default=default_cache())
    args = parser.parse_args()
    version, lib, include = installed()
    stamp = args.out.with_name(args.out.name + ".built-for")
    key = f"{version} {lib}\n"
    if args.out.exists() and stamp.exists() and stamp.read_text() == key:
        print(args.out)
        return 0
    archive = sdist(version, args.cache)
    with tempfile.TemporaryDirectory() as tmp:
        source = extract(archive, version, Path(tmp))
        compile_server(source, lib, include, args.out)
    stamp.write_text(key)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
