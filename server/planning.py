"""Planning a model's memory by name, for `gguf-serve plan`, `POST /plan` and `/api/show`.

A name in the store is planned from its cached header facts; any other name (`hf.co/...`, an
Ollama-registry name, an https URL) from its header read over HTTP ranges, before any download.
The devices are llama.cpp's (engine.devices), imported only when a plan is made, and, for
load options with `rpc_servers`, each rpc-server's devices (server.rpc_planning), with the
options' `tensor_split`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from server.engine.memory import Device, Margins, MemoryPlan, plan_memory
from server.engine.options import LoadOptions
from server.errors import Forbidden, InvalidRequest, ModelNotFound
from server.registry import GGUFInfo, Registry
from server.registry.sources import is_url
from server.rpc_planning import RpcDevices
from server.settings import Settings
from server.validation import describe

logger = logging.getLogger(__name__)

DeviceLister = Callable[[], list[Device]]


@dataclass(frozen=True)
class PlanTarget:
    """A model to plan: its header facts and where they came from."""

    name: str
    info: GGUFInfo
    source: str  # "store", or the remote source read
    header_bytes: int | None = None  # bytes read over HTTP for a model not in the store
    load_overrides: dict[str, Any] = field(default_factory=dict)


def default_devices() -> list[Device]:
    from server.engine.devices import list_devices  # imports llama_cpp

    return list_devices()


class Planner:
    """Names -> header facts -> memory plans, with the server's defaults and margins."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        devices: DeviceLister | None = None,
        rpc: RpcDevices | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self._devices = devices or default_devices
        self.rpc = rpc or RpcDevices(timeout=settings.rpc_describe_timeout)

    @property
    def margins(self) -> Margins:
        return Margins(host=int(self.settings.host_margin), device=int(self.settings.gpu_margin))

    def devices(self) -> list[Device]:
        return self._devices()

    def target(self, name: str, *, remote: bool = True, insecure: bool = False) -> PlanTarget:
        """The model `name` from the store, else (with `remote`) from its source's header.

        Raises InvalidName, ModelNotFound, PullError, InvalidModelFile, InvalidRequest.
        """
        if not is_url(name):
            try:
                resolved = self.registry.resolve(name)
            except ModelNotFound:
                if not remote:
                    raise
            else:
                return PlanTarget(
                    resolved.name, resolved.info, "store", None, resolved.load_overrides
                )
        header = self.registry.remote_header(name, insecure=insecure)
        return PlanTarget(name, header.info, header.source, header.bytes_read)

    def options(self, target: PlanTarget, overrides: dict[str, Any] | None) -> LoadOptions:
        """Server defaults < the catalog's per-model defaults < `overrides`.

        Raises InvalidRequest naming the bad option.
        """
        try:
            return self.settings.load.merged(target.load_overrides).merged(overrides)
        except ValidationError as exc:
            raise InvalidRequest(
                f"invalid load options: {describe(exc.errors())}", param="options"
            ) from None

    def configured_rpc_servers(self) -> set[str]:
        """The rpc-servers the operator named: in `load` or in a catalog entry's `load`."""
        found = set(self.settings.load.rpc_servers)
        for entry in self.settings.models.values():
            value = entry.load.get("rpc_servers")
            if value:
                try:
                    found.update(LoadOptions.model_validate({"rpc_servers": value}).rpc_servers)
                except ValidationError:
                    continue  # the load itself reports it
        return found

    def check_rpc_allowed(self, endpoints: tuple[str, ...]) -> None:
        """Raises Forbidden for endpoints the operator did not configure: an API client must not
        make the server connect to hosts of its choosing (SCALING.md, security)."""
        strangers = sorted(set(endpoints) - self.configured_rpc_servers())
        if strangers:
            raise Forbidden(
                f"rpc-server {', '.join(strangers)} is not configured on this server (setting "
                "load.rpc_servers or a catalog entry's load.rpc_servers); plan other servers "
                "with `gguf-serve plan NAME --rpc HOST:PORT`",
                param="rpc_servers",
            )

    def plan(
        self,
        target: PlanTarget,
        options: LoadOptions,
        devices: list[Device] | None = None,
        *,
        margins: Margins | None = None,
        find_max_ctx: bool = True,
    ) -> MemoryPlan:
        """The plan of `target` at `options` on `devices` (default: this machine's, and the
        rpc-servers' of `options`), split by the options' `tensor_split`.

        Raises InvalidLoadOptions, RpcUnavailable.
        """
        notes: list[str] = []
        if devices is None:
            devices = self.devices()
            if options.rpc_servers:
                rpc = self.rpc.devices(options.rpc_servers)
                devices = [*devices, *rpc.devices]
                notes = [
                    f"rpc-server {e} is held by a loaded model: its memory as described before "
                    "that model loaded"
                    for e in rpc.remembered
                ]
        plan = plan_memory(
            target.info,
            options,
            devices,
            margins=margins or self.margins,
            n_ctx_cap=self.settings.n_ctx_cap,
            tensor_split=options.tensor_split or None,
            find_max_ctx=find_max_ctx,
        )
        if notes:
            plan = plan.model_copy(update={"notes": [*plan.notes, *notes]})
        return plan
