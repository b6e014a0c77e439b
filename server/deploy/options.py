"""Ray Serve deployment settings (no Ray import: settings.py and the docs use these names)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Router = Literal["power-of-two", "affinity"]


class RayOptions(BaseModel):
    """How `gguf-serve ray` deploys replicas; each replica is a whole gguf-serve."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str = Field(
        "auto",
        description="Ray cluster to join: 'auto' (a running one, else a local one) or "
        "ray://host:10001.",
    )
    replicas: int | Literal["auto"] = Field(
        1, description="Fixed replica count, or 'auto' to scale between min and max replicas."
    )
    min_replicas: int = Field(1, ge=0, description="Autoscaling floor ('auto' replicas).")
    max_replicas: int = Field(4, ge=1, description="Autoscaling ceiling ('auto' replicas).")
    target_ongoing_requests: float | None = Field(
        None, gt=0, description="Autoscaling target per replica; default: its slots (n_parallel)."
    )
    cpus_per_replica: float = Field(
        1.0, gt=0, description="Ray CPUs per replica; they become its llama.cpp threads."
    )
    gpus_per_replica: float = Field(
        0.0, ge=0, description="Ray GPUs per replica; > 0 offloads every layer (n_gpu_layers -1)."
    )
    router: Router = Field(
        "affinity",
        description="'affinity': a conversation's turns go to the replica holding its cache "
        "(by the x-session-id header), else power of two choices; 'power-of-two': Ray's default.",
    )
    http_host: str = Field("127.0.0.1", description="Address of Ray's HTTP proxy.")
    http_port: int = Field(8000, ge=1, le=65535, description="Port of Ray's HTTP proxy.")
    app_name: str = Field("gguf-serve", min_length=1, description="Ray Serve application name.")

    @model_validator(mode="after")
    def _bounds(self) -> RayOptions:
        if self.min_replicas > self.max_replicas:
            raise ValueError("ray.min_replicas is above ray.max_replicas")
        if isinstance(self.replicas, int) and self.replicas < 1:
            raise ValueError("ray.replicas must be at least 1 (or 'auto')")
        return self
