"""Ollama `options`: load-time ones become LoadOptions overrides, run-time ones sampling settings."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from server.api.limits import MAX_STOP, MAX_STOP_CHARS
from server.durations import parse_duration
from server.engine.types import SamplingParams
from server.errors import InvalidRequest, UnsupportedFeature
from server.validation import describe, error_parts

logger = logging.getLogger(__name__)

# Ollama option -> LoadOptions field. A difference from the loaded model's options reloads it.
LOAD_OPTIONS = {
    "num_ctx": "n_ctx",
    "num_gpu": "n_gpu_layers",
    "num_thread": "n_threads",
    "num_batch": "n_batch",
    "use_mmap": "use_mmap",
    "use_mlock": "use_mlock",
}
# Accepted and ignored: no effect on the answer with llama.cpp today (documented).
IGNORED_OPTIONS = frozenset(
    {
        "numa",
        "main_gpu",
        "low_vram",
        "f16_kv",
        "logits_all",
        "vocab_only",
        "embedding_only",
        "num_keep",
        "penalize_newline",
        "tfs_z",
        "mirostat_tau",
        "mirostat_eta",
        "num_gqa",
    }
)
# Ollama's defaults for what a request and the model's parameters leave unset.
OLLAMA_DEFAULTS: dict[str, Any] = {
    "temperature": 0.8,
    "top_k": 40,
    "top_p": 0.9,
    "min_p": 0.0,
    "typical_p": 1.0,
    "repeat_penalty": 1.1,
    "repeat_last_n": 64,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
}


class RuntimeOptions(BaseModel):
    """The run-time options, validated strictly as Ollama's Go types are (a bad value is a 400
    naming it; `"temperature": "hot"` or `"seed": "1"` is refused, not coerced)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    num_predict: int | None = Field(None, ge=-2)
    temperature: float = Field(0.8, ge=0.0, le=100.0)
    top_k: int = Field(40, ge=0)
    top_p: float = Field(0.9, ge=0.0, le=1.0)
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    typical_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: list[str] = Field(default_factory=list, max_length=MAX_STOP)
    repeat_penalty: float = Field(1.1, gt=0.0)
    repeat_last_n: int = Field(64, ge=-1)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    mirostat: int = Field(0, ge=0, le=2)

    @field_validator("stop")
    @classmethod
    def _stop_length(cls, value: list[str]) -> list[str]:
        if any(len(stop) > MAX_STOP_CHARS for stop in value):
            raise ValueError(f"a stop sequence has at most {MAX_STOP_CHARS} characters")
        return value

    def sampling(
        self, *, grammar: str | None = None, triggers: tuple[str, ...] = ()
    ) -> SamplingParams:
        return SamplingParams(
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            min_p=self.min_p,
            typical_p=self.typical_p,
            repeat_penalty=self.repeat_penalty,
            repeat_last_n=self.repeat_last_n,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            seed=self.seed,
            grammar=grammar,
            grammar_triggers=triggers,
        )

    def max_tokens(self) -> int | None:
        """num_predict: -1 (or unset) = until the end, -2 = fill the context, N = at most N."""
        if self.num_predict is None or self.num_predict < 0:
            return None
        if self.num_predict == 0:
            raise InvalidRequest(
                "num_predict must be positive, -1 or -2", param="options.num_predict"
            )
        return self.num_predict


class RequestLoadOptions(BaseModel):
    """Load-time options as a request may send them: strict types, sane ranges."""

    model_config = ConfigDict(extra="forbid", strict=True)

    num_ctx: int | None = Field(None, ge=0)
    num_gpu: int | None = None
    num_thread: int | None = Field(None, ge=0, le=1024)
    num_batch: int | None = Field(None, ge=1, le=65536)
    use_mmap: bool | None = None
    use_mlock: bool | None = None


@dataclass(frozen=True)
class SplitOptions:
    load: dict[str, Any]
    runtime: RuntimeOptions


def split_options(
    options: dict[str, Any] | None, model_params: dict[str, Any] | None = None
) -> SplitOptions:
    """Separate load-time from run-time options; defaults < the model's parameters < request.

    A null option is unset (clients built on pydantic models send every option they know).
    Raises InvalidRequest for a bad value, UnsupportedFeature for mirostat.
    """
    load: dict[str, Any] = {}
    runtime: dict[str, Any] = dict(OLLAMA_DEFAULTS)
    for source in (model_params or {}, options or {}):
        for key, value in source.items():
            if value is None:  # `"temperature": null` means unset, as in Ollama
                continue
            if key in LOAD_OPTIONS:
                if source is options:
                    load[LOAD_OPTIONS[key]] = value
            elif key in IGNORED_OPTIONS:
                continue
            elif key in RuntimeOptions.model_fields:
                runtime[key] = [value] if key == "stop" and isinstance(value, str) else value
            else:
                logger.warning("ignoring unknown option %r", key)
    try:
        RequestLoadOptions.model_validate(
            {k: v for k, v in (options or {}).items() if k in LOAD_OPTIONS}
        )
        parsed = RuntimeOptions.model_validate(runtime)
    except ValidationError as exc:
        where, _ = error_parts(exc.errors())[0]
        raise InvalidRequest(
            f"invalid option {describe(exc.errors(), first=True)}", param=f"options.{where}"
        ) from None
    if parsed.mirostat:
        raise UnsupportedFeature("mirostat sampling is not supported", param="options.mirostat")
    gpu = load.get("n_gpu_layers")
    if isinstance(gpu, int) and not isinstance(gpu, bool) and gpu < 0:
        load["n_gpu_layers"] = "auto"  # Ollama's num_gpu -1: "set dynamically"
    return SplitOptions(load=load, runtime=parsed)


def keep_alive_seconds(value: float | int | str | None) -> float | None:
    """Seconds to keep the model loaded after this request (inf = forever, None = default).

    Raises InvalidRequest for an unparseable duration.
    """
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise InvalidRequest(f"invalid keep_alive: {exc}", param="keep_alive") from None
    if seconds is not None and math.isnan(seconds):
        raise InvalidRequest("invalid keep_alive", param="keep_alive")
    return seconds
