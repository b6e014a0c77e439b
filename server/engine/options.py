"""Load-time options: what a user may choose about how a model is loaded.

Kept free of llama_cpp so settings and wire layers can use the names; `engine.loader` maps
them to llama.cpp's types.
"""

from __future__ import annotations

import os
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
