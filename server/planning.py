"""Planning a model's memory by name, for `gguf-serve plan`, `POST /plan` and `/api/show`.

A name in the store is planned from its cached header facts; any other name (`hf.co/...`, an
Ollama-registry name, an https URL) from its header read over HTTP ranges, before any download.
The devices are llama.cpp's (engine.devices), imported only when a plan is made.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from server.engine.memory import Device, Margins, MemoryPlan, plan_memory
from server.engine.options import LoadOptions
from server.errors import InvalidRequest, ModelNotFound
from server.registry import GGUFInfo, Registry
from server.registry.sources import is_url
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
        self, settings: Settings, registry: Registry, devices: DeviceLister | None = None
    ) -> None:
        self.settings = settings
        self.registry = registry
        self._devices = devices or default_devices

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

    def plan(
        self,
        target: PlanTarget,
        options: LoadOptions,
        devices: list[Device] | None = None,
        *,
        margins: Margins | None = None,
        find_max_ctx: bool = True,
    ) -> MemoryPlan:
        """The plan of `target` at `options` on `devices` (default: this machine's).

        Raises InvalidLoadOptions.
        """
        return plan_memory(
            target.info,
            options,
            devices if devices is not None else self.devices(),
            margins=margins or self.margins,
            n_ctx_cap=self.settings.n_ctx_cap,
            find_max_ctx=find_max_ctx,
        )
