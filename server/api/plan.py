"""`POST /plan`: the memory a model would take here, before it is loaded (or downloaded).

The same fields as `gguf-serve plan`. A model not in the store is planned from its GGUF header
read over HTTP ranges (`hf.co/...`, registry names, https URLs), never its weights.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from server.engine.memory import MemoryPlan
from server.engine.options import MAX_RPC_SERVERS, CacheType, FlashAttn
from server.planning import Planner

router = APIRouter(tags=["system"])


class PlanRequest(BaseModel):
    """What to plan: a model and the load settings to plan it at (unset: the server's)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, description="Model name, or an https URL of a GGUF file.")
    ctx: int | None = Field(None, ge=0, description="Context per slot; 0 = trained length.")
    parallel: int | None = Field(None, ge=1, le=256, description="Slots.")
    kv_type: CacheType | None = Field(None, description="KV cache type for K and V.")
    type_k: CacheType | None = None
    type_v: CacheType | None = None
    gpu_layers: int | Literal["auto"] | None = Field(
        None, description="auto, -1 (all), or a layer count."
    )
    flash_attn: FlashAttn | None = None
    rpc_servers: list[str] | None = Field(
        None,
        max_length=MAX_RPC_SERVERS,
        description="rpc-servers (host:port) to split the model over, among those configured "
        "on this server (load.rpc_servers, catalog entries); [] = none. Unset: the model's own.",
    )
    tensor_split: list[float] | None = Field(
        None,
        max_length=128,
        description="Share of the offloaded layers per device (rpc-servers first, then GPUs).",
    )
    remote: bool = Field(
        True,
        description="Read the header of a model not in the store from where it would be "
        "pulled (false: 404 for such a model).",
    )
    insecure: bool = Field(False, description="Allow plain http to hosts that are not loopback.")

    def overrides(self) -> dict[str, Any]:
        given = {
            "n_ctx": self.ctx,
            "n_parallel": self.parallel,
            "type_k": self.type_k or self.kv_type,
            "type_v": self.type_v or self.kv_type,
            "n_gpu_layers": self.gpu_layers,
            "flash_attn": self.flash_attn,
            "rpc_servers": self.rpc_servers,
            "tensor_split": self.tensor_split,
        }
        return {k: v for k, v in given.items() if v is not None}


class PlanResponse(BaseModel):
    """A plan, and where the model's header came from."""

    model: str
    source: str = Field(description='"store", or the remote source the header was read from.')
    header_bytes: int | None = Field(
        description="Bytes read over HTTP for a model not in the store (null: from the store)."
    )
    plan: MemoryPlan


@router.post("/plan")
async def plan(body: PlanRequest, request: Request) -> PlanResponse:
    """Weights, KV cache and compute buffers per device, whether it fits, the largest context.

    404 for an unknown model, 400 for bad options or an rpc-server that cannot be asked, 403
    for an rpc-server not configured here, 502 when a remote header cannot be read.
    """
    planner: Planner = request.app.state.planner

    def work() -> PlanResponse:
        target = planner.target(body.model, remote=body.remote, insecure=body.insecure)
        options = planner.options(target, body.overrides())
        if body.rpc_servers:
            planner.check_rpc_allowed(options.rpc_servers)
        result = planner.plan(target, options)
        return PlanResponse(
            model=target.name, source=target.source, header_bytes=target.header_bytes, plan=result
        )

    return await asyncio.to_thread(work)
