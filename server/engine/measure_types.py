"""What the measuring parts of the engine take and return, free of llama_cpp so that caches,
the CLI and the API use them without loading it."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, model_validator

from server.engine.options import CacheType, FlashAttn

MAX_WINDOWS = 256  # sequences one llama.cpp context takes (LoadOptions.n_parallel)


class ScoringOptions(BaseModel):
    """How a text is scored; the fields that change the numbers are part of every cache key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_ctx: int = Field(512, ge=16, le=131072, description="Window length in tokens.")
    n_batch: int = Field(
        2048, ge=16, le=65536, description="Tokens per decode; n_batch/n_ctx windows at once."
    )
    type_k: CacheType = Field("f16", description="KV cache type for K.")
    type_v: CacheType = Field("f16", description="KV cache type for V.")
    flash_attn: FlashAttn = Field("auto", description="Flash attention: on, off or auto.")
    n_threads: int = Field(0, ge=0, le=1024, description="CPU threads; 0 = all cores.")

    @model_validator(mode="after")
    def _windows_per_decode(self) -> ScoringOptions:
        if self.n_batch // self.n_ctx > MAX_WINDOWS:
            raise ValueError(
                f"n_batch/n_ctx = {self.n_batch // self.n_ctx} windows per decode; at most "
                f"{MAX_WINDOWS} (lower the batch)"
            )
        return self

    def numbers_key(self) -> dict[str, object]:
        """The options the results depend on. The batch size is one (llama.cpp picks other
        kernels for other batch shapes: 0.2% on a perplexity); the thread count is not."""
        return {
            "n_ctx": self.n_ctx,
            "n_batch": self.n_batch,
            "type_k": self.type_k,
            "type_v": self.type_v,
            "flash_attn": self.flash_attn,
        }


class SpeedResult(BaseModel):
    """Tokens per second for prompt processing (pp) and generation (tg) on this machine."""

    prompt_tps: float = Field(description="Prompt tokens per second (pp).")
    decode_tps: float = Field(description="Generated tokens per second (tg).")
    n_prompt: int
    n_gen: int
    n_threads: int
    measured_at: datetime
    cached: bool = Field(False, description="Read from the cache rather than measured now.")
