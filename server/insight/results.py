"""What a measurement reports (CLI `--json`, the cache files and the HTTP answers share these)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, computed_field


class TextInfo(BaseModel):
    """The text a figure was measured on."""

    name: str
    sha256: str
    tokens: int = Field(description="Tokens in the whole text (with this model's vocabulary).")


class KLDStats(BaseModel):
    """KL divergence of a model's next-token distributions from a reference's, per position."""

    model_config = ConfigDict(frozen=True)

    reference: str = Field(description="The reference model (the highest precision one).")
    top_k: int = Field(description="Reference log-probabilities kept per position.")
    mean: float
    mean_error: float
    median: float
    p90: float
    p95: float
    p99: float
    p999: float
    maximum: float
    same_top_pct: float = Field(
        description="Positions where both models rank the same token first."
    )
    same_top_error_pct: float
    ppl_ratio: float = Field(description="PPL(model) / PPL(reference) on the same tokens.")
    ppl_ratio_error: float

    @computed_field  # type: ignore[prop-decorator]
    @property
    def delta_pct(self) -> float:
        """Perplexity change against the reference, in percent."""
        return 100.0 * (self.ppl_ratio - 1.0)


class PerplexityResult(BaseModel):
    """Perplexity (and KL divergence, when there is a reference) of one model on one text."""

    model: str
    model_digest: str = Field(description="sha256 of the GGUF file.")
    quant: str
    text: TextInfo
    n_ctx: int
    chunks: int
    tokens_scored: int
    type_k: str
    type_v: str
    flash_attn: str
    ppl: float
    ppl_error: float
    kld: KLDStats | None = None
    seconds: float = Field(description="Time the measurement took (not counting a reference).")
    measured_at: datetime
    cached: bool = Field(False, description="Read from the cache rather than measured now.")
