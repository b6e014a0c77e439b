"""The rpc-servers' devices for the memory planner: described when free, remembered when held.

llama.cpp's rpc-server serves one client at a time, so asking one that a loaded model holds
waits until that model lets go of it. The devices of servers our loaded models hold are
therefore the ones last described (before those models loaded); any other server is described
afresh, from a short-lived process (engine.rpc.describe_servers), within a timeout.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass

from server.engine.plan_types import Device, rpc_device_name
from server.errors import InvalidRequest, ModelLoadError

logger = logging.getLogger(__name__)

# (endpoints, timeout seconds) -> their devices, kind "rpc", in llama.cpp's order
RpcDescriber = Callable[[tuple[str, ...], float], list[Device]]
# Endpoints a loaded model holds now
HeldEndpoints = Callable[[], Collection[str]]
# Placeholder free/total of a server that could not be described: its memory is not checked.
UNCHECKED = 1 << 60


class RpcUnavailable(InvalidRequest):
    """An rpc-server does not accept connections, does not answer in time, or is busy."""

    code = "rpc_server_unavailable"


def describe_devices(endpoints: tuple[str, ...], timeout: float) -> list[Device]:
    """The servers' devices, asked by llama.cpp itself. Raises RpcUnavailable."""
    from server.engine.rpc import describe_servers, plan_devices  # imports llama_cpp

    try:
        return plan_devices(describe_servers(endpoints, timeout=timeout))
    except ModelLoadError as exc:
        raise RpcUnavailable(exc.message, param="rpc_servers") from None


def unchecked_devices(endpoints: tuple[str, ...]) -> list[Device]:
    """One placeholder device per server, holding whatever is placed there (not checked)."""
    return [
        Device(rpc_device_name(e), "rpc", UNCHECKED, UNCHECKED, "not described: not checked")
        for e in endpoints
    ]


def is_unchecked(free: int) -> bool:
    return free >= UNCHECKED


@dataclass(frozen=True)
class RpcDescription:
    """The devices of the endpoints asked for, and which of them were remembered."""

    devices: list[Device]
    remembered: tuple[str, ...]  # held by a loaded model: as described before it loaded


class RpcDevices:
    """Describes rpc-servers for plans, remembering each server's last answer."""

    def __init__(
        self,
        describe: RpcDescriber | None = None,
        *,
        timeout: float = 15.0,
        held: HeldEndpoints | None = None,
    ) -> None:
        self._describe = describe or describe_devices
        self.timeout = timeout
        self.held: HeldEndpoints = held or (lambda: ())
        self._known: dict[str, list[Device]] = {}
        self._lock = threading.Lock()

    def devices(self, endpoints: tuple[str, ...]) -> RpcDescription:
        """The devices of `endpoints`, in their order (llama.cpp's).

        Raises RpcUnavailable when a server is down, does not answer within the timeout, or is
        held by a loaded model and was never described.
        """
        held = set(self.held())
        remembered = tuple(e for e in endpoints if e in held)
        with self._lock:
            unknown = [e for e in remembered if e not in self._known]
        if unknown:
            raise RpcUnavailable(
                f"rpc-server {', '.join(unknown)} is held by a loaded model (an rpc-server "
                "serves one client at a time) and was not described before it loaded; plan "
                "before loading, or unload that model first",
                param="rpc_servers",
            )
        fresh = tuple(e for e in endpoints if e not in held)
        if fresh:
            described = self._describe(fresh, self.timeout)
            with self._lock:
                for endpoint in fresh:
                    self._known[endpoint] = [
                        d for d in described if d.name.endswith(f"[{endpoint}]")
                    ]
        with self._lock:
            devices = [d for e in endpoints for d in self._known.get(e, [])]
        empty = [e for e in endpoints if not any(d.name.endswith(f"[{e}]") for d in devices)]
        if empty:
            raise RpcUnavailable(
                f"rpc-server {', '.join(empty)} exposes no device", param="rpc_servers"
            )
        return RpcDescription(devices, remembered)
