"""Load-time options: what a user may choose about how a model is loaded.

Kept free of llama_cpp so settings and wire layers can use the names; `engine.loader` maps
them to llama.cpp's types.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

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


class LoadOptions(BaseModel):
    """How to load one model; every field maps to a llama.cpp model or context parameter."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_gpu_layers: int = Field(
        0, ge=-1, description="Layers to offload to the GPU: -1 all, 0 none (CPU), N the first N."
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

    def merged(self, overrides: dict[str, object] | None) -> LoadOptions:
        """Return a copy with `overrides` (only set keys) applied and validated."""
        if not overrides:
            return self
        return LoadOptions.model_validate({**self.model_dump(), **overrides})
