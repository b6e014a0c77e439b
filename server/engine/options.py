"""Load-time options: what a user may choose about how a model is loaded.

Kept free of llama_cpp so settings and wire layers can use the names; `engine.loader` maps
them to llama.cpp's types.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from server.errors import InvalidLoadOptions

CacheType = Literal["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1"]
CACHE_TYPES: tuple[str, ...] = (
    "f32",
    "f16",
    "bf16",
    "q8_0",
    "q4_0",
    "q4_1",
    "iq4_nl",
    "q5_0",
    "q5_1",
)
UNQUANTIZED_CACHE_TYPES = frozenset({"f32", "f16", "bf16"})
FlashAttn = Literal["on", "off", "auto"]
GpuLayers = int | Literal["auto"]
# What llama.cpp's RPC client parses: the host up to the first ':', then a port (so no IPv6).
_ENDPOINT = re.compile(
    r"^(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?):(?P<port>[0-9]{1,5})$"
)
MAX_RPC_SERVERS = 16  # GGML_RPC_MAX_SERVERS


def parse_endpoint(text: str) -> tuple[str, int]:
    """`host:port` of an rpc-server as (host, port); raises ValueError saying what is wrong."""
    match = _ENDPOINT.match(text.strip())
    if match is None or not 1 <= int(match["port"]) <= 65535:
        raise ValueError(
            f"rpc server {text!r} is not host:port (a host name or IPv4 address, a port 1-65535)"
        )
    return match["host"], int(match["port"])


class LoadOptions(BaseModel):
    """How to load one model; every field maps to a llama.cpp model or context parameter."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_gpu_layers: GpuLayers = Field(
        "auto",
        description="Layers offloaded to the GPU(s), counted from the last and the output layer "
        "included (llama.cpp's -ngl): auto = as many as fit the free device memory (0 without a "
        "GPU), -1 = all, 0 = none.",
    )
    flash_attn: FlashAttn = Field(
        "auto", description="Flash attention: on, off, or auto (llama.cpp decides per device)."
    )
    type_k: CacheType = Field("f16", description="KV cache type for K.")
    type_v: CacheType = Field(
        "f16", description="KV cache type for V (quantized V needs flash attention)."
    )
    n_ctx: int = Field(
        4096, ge=0, description="Context length per slot in tokens; 0 = the model's trained length."
    )
    n_batch: int = Field(
        512, ge=1, le=65536, description="Logical batch size (max tokens per decode)."
    )
    n_ubatch: int = Field(512, ge=1, le=65536, description="Physical micro-batch size.")
    n_threads: int = Field(0, ge=0, le=1024, description="CPU threads for decoding; 0 = all cores.")
    n_parallel: int = Field(4, ge=1, le=256, description="Parallel slots (sequences) per model.")
    use_mmap: bool = Field(True, description="Memory-map the model file.")
    use_mlock: bool = Field(False, description="Lock the model in RAM (no swapping).")
    rpc_servers: tuple[str, ...] = Field(
        (),
        max_length=MAX_RPC_SERVERS,
        description="llama.cpp rpc-server endpoints (host:port) that hold offloaded layers and "
        "their KV cache; the model then runs in a supervised child process.",
    )
    tensor_split: tuple[float, ...] = Field(
        (),
        max_length=128,
        description="Share of the offloaded layers per device, in llama.cpp's device order "
        "(rpc_servers first, then local GPUs); empty = by free memory.",
    )

    @field_validator("rpc_servers", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        if isinstance(value, str):  # llama.cpp's `--rpc a:1,b:2` form
            return tuple(part for part in value.split(",") if part.strip())
        return value

    @field_validator("rpc_servers")
    @classmethod
    def _endpoints(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for endpoint in value:
            parse_endpoint(endpoint)
        if len(set(value)) != len(value):
            raise ValueError("rpc_servers lists an endpoint twice")
        return tuple(e.strip() for e in value)

    @field_validator("tensor_split")
    @classmethod
    def _split(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(v < 0 for v in value) or (value and not any(value)):
            raise ValueError("tensor_split needs non-negative shares, at least one above 0")
        return value

    swa_full: bool = Field(
        True,
        description="Full-size KV cache for sliding-window layers (gemma-style models): needed "
        "to reuse a cached prompt prefix; false keeps only the window (much less memory).",
    )

    @field_validator("n_gpu_layers")
    @classmethod
    def _gpu_layers(cls, value: GpuLayers) -> GpuLayers:
        if isinstance(value, int) and value < -1:
            raise ValueError("n_gpu_layers must be auto, -1 (all), 0 (none) or a layer count")
        return value

    def merged(self, overrides: dict[str, object] | None) -> LoadOptions:
        """Return a copy with `overrides` (only set keys) applied and validated."""
        if not overrides:
            return self
        return LoadOptions.model_validate({**self.model_dump(), **overrides})


@dataclass(frozen=True)
class ModelFacts:
    """What validation needs to know about a model file (from its GGUF header)."""

    n_ctx_train: int
    n_layer: int


def resolve_options(options: LoadOptions, facts: ModelFacts, *, n_ctx_cap: int) -> LoadOptions:
    """Validate `options` against the model and return the effective options.

    `n_gpu_layers: auto` stays auto: the memory plan (engine.memory) turns it into a count.
    Raises InvalidLoadOptions with a message that says what to change.
    """
    changes: dict[str, Any] = {}
    if options.type_v not in UNQUANTIZED_CACHE_TYPES:
        if options.flash_attn == "off":
            raise InvalidLoadOptions(
                f"a quantized V cache (type_v={options.type_v}) needs flash attention: "
                "set flash_attn to 'on' (or use type_v f16)",
                param="type_v",
            )
        changes["flash_attn"] = "on"
    if options.n_ctx == 0:
        changes["n_ctx"] = min(facts.n_ctx_train, n_ctx_cap) if facts.n_ctx_train else n_ctx_cap
    elif facts.n_ctx_train and options.n_ctx > facts.n_ctx_train:
        raise InvalidLoadOptions(
            f"n_ctx={options.n_ctx} is above the model's trained context length "
            f"{facts.n_ctx_train}; use at most {facts.n_ctx_train} (or 0 for the trained length)",
            param="n_ctx",
        )
    if isinstance(options.n_gpu_layers, int) and options.n_gpu_layers > facts.n_layer:
        changes["n_gpu_layers"] = -1
    if options.n_ubatch > options.n_batch:
        changes["n_ubatch"] = options.n_batch
    if options.n_threads == 0:
        changes["n_threads"] = os.cpu_count() or 1
    return options.model_copy(update=changes) if changes else options
