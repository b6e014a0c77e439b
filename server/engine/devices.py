"""The devices llama.cpp can place a model on, with their free and total memory.

llama.cpp's backend device API (`ggml_backend_dev_count / _get / _memory / _name / _type`)
answers for whatever backends this build has: CUDA, Metal, Vulkan, ROCm, SYCL, and RPC servers
once they are registered. llama-cpp-python does not wrap it, so it is called here through ctypes
on the libggml libraries the package ships. The host's free memory is not llama.cpp's (on Linux
its CPU device reports all memory as free): it is MemAvailable, bounded by a cgroup limit when
the process runs in a container.
"""

from __future__ import annotations

import ctypes
import logging
import os
from functools import cache
from pathlib import Path

import llama_cpp

from server.engine.loader import ensure_backend
from server.engine.memory import Device, DeviceKind

logger = logging.getLogger(__name__)

# enum ggml_backend_dev_type
_CPU, _GPU, _IGPU, _ACCEL, _META = range(5)
_CGROUP = Path("/sys/fs/cgroup")


class _Lib:
    """The few libggml functions this module calls, with their C signatures."""

    def __init__(self) -> None:
        lib_dir = Path(llama_cpp.__file__).parent / "lib"
        ggml = ctypes.CDLL(str(_find(lib_dir, "libggml")))
        base = ctypes.CDLL(str(_find(lib_dir, "libggml-base")))
        ptr, size_t = ctypes.c_void_p, ctypes.c_size_t
        self.count = ggml.ggml_backend_dev_count
        self.count.restype, self.count.argtypes = size_t, []
        self.get = ggml.ggml_backend_dev_get
        self.get.restype, self.get.argtypes = ptr, [size_t]
        self.name = base.ggml_backend_dev_name
        self.name.restype, self.name.argtypes = ctypes.c_char_p, [ptr]
        self.description = base.ggml_backend_dev_description
        self.description.restype, self.description.argtypes = ctypes.c_char_p, [ptr]
        self.type = base.ggml_backend_dev_type
        self.type.restype, self.type.argtypes = ctypes.c_int, [ptr]
        self.memory = base.ggml_backend_dev_memory
        self.memory.restype = None
        self.memory.argtypes = [ptr, ctypes.POINTER(size_t), ctypes.POINTER(size_t)]
        self.reg = base.ggml_backend_dev_backend_reg
        self.reg.restype, self.reg.argtypes = ptr, [ptr]
        self.reg_name = base.ggml_backend_reg_name
        self.reg_name.restype, self.reg_name.argtypes = ctypes.c_char_p, [ptr]
        cpu = ctypes.CDLL(str(_find(lib_dir, "libggml-cpu")))
        self.cpu_features = {
            name: bool(getattr(cpu, f"ggml_cpu_has_{name}")())
            for name in ("avx2", "avx512", "neon", "matmul_int8", "dotprod")
        }


def _find(lib_dir: Path, stem: str) -> Path:
    for suffix in (".so", ".dylib", ".dll"):
        path = lib_dir / f"{stem}{suffix}"
        if path.exists():
            return path
    raise OSError(f"{stem} not found in {lib_dir}")


@cache
def _lib() -> _Lib:
    ensure_backend()
    return _Lib()


def list_devices() -> list[Device]:
    """The host first, then every device llama.cpp can offload to (RPC servers, GPUs, iGPUs).

    Accelerators without memory of their own (BLAS) are left out.
    """
    lib = _lib()
    available, total = host_memory()
    devices = [Device("CPU", "cpu", available, total, "host memory", repacked_types())]
    for i in range(lib.count()):
        dev = lib.get(i)
        kind = lib.type(dev)
        if kind not in (_GPU, _IGPU):
            continue
        free, size = ctypes.c_size_t(0), ctypes.c_size_t(0)
        lib.memory(dev, ctypes.byref(free), ctypes.byref(size))
        name = (lib.name(dev) or b"?").decode(errors="replace")
        reg = lib.reg(dev)
        rpc = bool(reg) and (lib.reg_name(reg) or b"") == b"RPC"
        device_kind: DeviceKind = "rpc" if rpc else ("gpu" if kind == _GPU else "igpu")
        description = (lib.description(dev) or b"").decode(errors="replace")
        devices.append(Device(name, device_kind, int(free.value), int(size.value), description))
    return devices


def repacked_types() -> frozenset[str]:
    """The weight types llama.cpp's CPU backend repacks on this CPU (ggml-cpu/repack.cpp,
    `ggml_repack_get_optimal_repack_type`), from the features the library was built for."""
    has = _lib().cpu_features
    types: set[str] = set()
    if has["avx2"]:
        types |= {"Q4_0", "Q4_K", "IQ4_NL", "MXFP4"}
    if has["avx512"]:
        types.add("Q2_K")
    if has["neon"] and (has["matmul_int8"] or has["dotprod"]):
        types |= {"Q4_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "MXFP4", "Q8_0"}
    return frozenset(types)


def host_memory() -> tuple[int, int]:
    """(available, total) bytes of host memory for this process, container limits included."""
    info = _meminfo()
    total = info.get("MemTotal", 0)
    available = info.get("MemAvailable", info.get("MemFree", 0))
    if not total:  # not Linux: llama.cpp's own answer (total only)
        total = available = _sysconf_total()
    limit = _cgroup_limit()
    if limit is not None:
        used = _read_int(_CGROUP / "memory.current") or 0
        available = min(available, max(limit - used, 0))
        total = min(total, limit)
    return available, total


def _meminfo() -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return out


def _cgroup_limit() -> int | None:
    """The cgroup v2 memory limit of this process's group, if one is set."""
    return _read_int(_CGROUP / "memory.max")


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _sysconf_total() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0
