"""llama.cpp's RPC backend: register rpc-servers as devices, the way `--rpc` does.

llama-cpp-python dropped the old `rpc_servers` model parameter, so this goes through ggml's
backend registry in the shipped libraries (ctypes), as llama.cpp's `common/arg.cpp` does:
find the "RPC" backend, ask it for `ggml_backend_rpc_add_server`, register what that returns.
Registered devices join llama.cpp's default device list (RPC first, then local GPUs), so the
model's `n_gpu_layers` and `tensor_split` place layers and their KV cache on them.

Registration is for the life of the process and llama.cpp aborts the process when a server is
unreachable or dies, which is why only a supervised child process (engine/child.py) calls this.
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import llama_cpp

from server.engine.options import parse_endpoint
from server.engine.plan_types import Device, rpc_device_name
from server.errors import ModelLoadError

_lock = threading.Lock()
_registered: dict[str, list[RpcDevice]] = {}


@dataclass(frozen=True)
class RpcDevice:
    """One device an rpc-server exposes, as llama.cpp names it (RPC0, RPC1, ...)."""

    endpoint: str
    name: str
    description: str
    free: int
    total: int


def plan_devices(rows: list[RpcDevice]) -> list[Device]:
    """The planner's view of the servers' devices: kind "rpc", in llama.cpp's order.

    Named as llama.cpp names their buffers in its load log (`RPC0[10.0.0.2:50052] model
    buffer size = ...`): the device's index on its server, then the server. llama.cpp's device
    name (`RPC1`, numbered across servers in the order they were added) goes in the
    description. LoadOptions.tensor_split gives the shares in this order (rpc_servers first).
    """
    seen: dict[str, int] = {}
    out = []
    for row in rows:
        index = seen.get(row.endpoint, 0)
        seen[row.endpoint] = index + 1
        out.append(
            Device(
                rpc_device_name(row.endpoint, index),
                "rpc",
                row.free,
                row.total,
                f"{row.name} on rpc-server {row.endpoint}",
            )
        )
    return out


def _ggml() -> ctypes.CDLL:
    """The libggml that libllama links, by its soname: the device registry lives in it.

    Opening `libggml.so` by that name maps a second copy with a registry of its own (llama_cpp's
    `_ggml` module does so), and devices registered there are invisible to model loads.
    """
    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    sonames = sorted(lib_dir.glob("libggml.so.*"), key=lambda p: len(p.name))
    lib = ctypes.CDLL(str(sonames[0] if sonames else lib_dir / "libggml.so"))
    vp, cp = ctypes.c_void_p, ctypes.c_char_p
    lib.ggml_backend_reg_by_name.argtypes, lib.ggml_backend_reg_by_name.restype = [cp], vp
    lib.ggml_backend_reg_get_proc_address.argtypes = [vp, cp]
    lib.ggml_backend_reg_get_proc_address.restype = vp
    lib.ggml_backend_register.argtypes, lib.ggml_backend_register.restype = [vp], None
    lib.ggml_backend_reg_dev_count.argtypes = [vp]
    lib.ggml_backend_reg_dev_count.restype = ctypes.c_size_t
    lib.ggml_backend_reg_dev_get.argtypes, lib.ggml_backend_reg_dev_get.restype = (
        [vp, ctypes.c_size_t],
        vp,
    )
    lib.ggml_backend_dev_name.argtypes, lib.ggml_backend_dev_name.restype = [vp], cp
    lib.ggml_backend_dev_description.argtypes, lib.ggml_backend_dev_description.restype = [vp], cp
    size_p = ctypes.POINTER(ctypes.c_size_t)
    lib.ggml_backend_dev_memory.argtypes = [vp, size_p, size_p]
    lib.ggml_backend_dev_memory.restype = None
    return lib


def supported() -> bool:
    """Whether this llama.cpp build has the RPC backend (GGML_RPC=on)."""
    return bool(llama_cpp.llama_supports_rpc())


def register_servers(endpoints: tuple[str, ...]) -> list[RpcDevice]:
    """Register each rpc-server's devices with llama.cpp (once per endpoint per process).

    Probe first (`reachable`): llama.cpp aborts the process when it cannot connect.
    Raises ModelLoadError when this build has no RPC backend or a server exposes no device.
    """
    if not endpoints:
        return []
    if not supported():
        raise ModelLoadError(
            "this llama-cpp-python was built without the RPC backend (GGML_RPC=on); "
            "rebuild it with scripts/llama_wheel.py"
        )
    lib = _ggml()
    devices: list[RpcDevice] = []
    with _lock:
        reg_rpc = lib.ggml_backend_reg_by_name(b"RPC")
        add_address = lib.ggml_backend_reg_get_proc_address(reg_rpc, b"ggml_backend_rpc_add_server")
        if not reg_rpc or not add_address:
            raise ModelLoadError("llama.cpp's RPC backend has no ggml_backend_rpc_add_server")
        add_server = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p)(add_address)
        for endpoint in endpoints:
            if endpoint not in _registered:
                reg = add_server(endpoint.encode())
                if not reg:
                    raise ModelLoadError(f"rpc-server {endpoint} exposes no device")
                lib.ggml_backend_register(reg)
                _registered[endpoint] = _devices_of(lib, reg, endpoint)
            devices.extend(_registered[endpoint])
    return devices


def _devices_of(lib: ctypes.CDLL, reg: int, endpoint: str) -> list[RpcDevice]:
    out = []
    for i in range(lib.ggml_backend_reg_dev_count(reg)):
        dev = lib.ggml_backend_reg_dev_get(reg, i)
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        lib.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        out.append(
            RpcDevice(
                endpoint=endpoint,
                name=lib.ggml_backend_dev_name(dev).decode(),
                description=lib.ggml_backend_dev_description(dev).decode(),
                free=free.value,
                total=total.value,
            )
        )
    return out


def reachable(endpoint: str, timeout: float = 2.0) -> bool:
    """Whether something accepts TCP connections at `endpoint` (a cheap check, no handshake)."""
    host, port = parse_endpoint(endpoint)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def describe_servers(endpoints: tuple[str, ...], *, timeout: float = 30.0) -> list[RpcDevice]:
    """The devices (and their free memory) the rpc-servers offer, in llama.cpp's order.

    For planning before a load (engine/memory.py takes them as devices of kind "rpc"). Asked
    from a short-lived process, since registering is for life and a lost server aborts it; an
    rpc-server serves one client at a time, so this waits while a loaded model holds it.
    Raises ModelLoadError if a server does not answer in `timeout` seconds.
    """
    down = [e for e in endpoints if not reachable(e)]
    if down:
        raise ModelLoadError(f"rpc-server {', '.join(down)} does not accept connections")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "server.engine.rpc", *endpoints],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "GGML_NO_BACKTRACE": "1"},
        )
    except subprocess.TimeoutExpired:
        raise ModelLoadError(
            f"rpc-servers {', '.join(endpoints)} did not answer in {timeout:.0f}s "
            "(one serves a single client: is a loaded model using it?)"
        ) from None
    if done.returncode != 0:
        raise ModelLoadError(f"could not query rpc-servers: {done.stderr.strip()[-300:]}")
    return [RpcDevice(**row) for row in json.loads(done.stdout.strip().splitlines()[-1])]


def _main(argv: list[str]) -> int:
    """`python -m server.engine.rpc HOST:PORT ...`: print the servers' devices as JSON."""
    from server.engine.loader import ensure_backend

    ensure_backend()
    devices = register_servers(tuple(argv))
    print(json.dumps([asdict(d) for d in devices]))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
