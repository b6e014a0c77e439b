"""Wire schemas of the Ollama-compatible API (field names and shapes as Ollama's api.md)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from server.api.limits import MAX_EMBED_INPUTS, MAX_MESSAGES, MAX_PARTS, MAX_TOOLS
from server.engine.memory import MemoryPlan

Format = Literal["", "json"] | dict[str, Any] | None
KeepAlive = float | int | str | None


class _Request(BaseModel):
    """Unknown fields are ignored and null fields are unset, as Ollama's Go decoder does;
    types are strict, as Go's are (`"stream": "yes"` is a 400)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _null_is_unset(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data


class ToolCallFunction(_Request):
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolCall(_Request):
    function: ToolCallFunction


Images = Annotated[list[str], Field(max_length=MAX_PARTS)]


class Message(_Request):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    images: Images | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None
    thinking: str | None = None


class _GenerationRequest(_Request):
    """What chat and generate share (ollama-python's BaseGenerateRequest)."""

    model: str = Field(min_length=1)
    format: Format = None
    options: dict[str, Any] | None = None
    stream: bool = True
    keep_alive: KeepAlive = None
    think: bool | str | None = None


class ChatRequest(_GenerationRequest):
    """POST /api/chat."""

    messages: list[Message] | None = Field(None, max_length=MAX_MESSAGES)
    tools: list[dict[str, Any]] | None = Field(None, max_length=MAX_TOOLS)
    # gguf-serve extension (Ollama has none): OpenAI's tool_choice, to force a call.
    tool_choice: Literal["auto", "none", "required"] | dict[str, Any] = "auto"


class GenerateRequest(_GenerationRequest):
    """POST /api/generate."""

    prompt: str | None = None
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    raw: bool = False
    images: Images | None = None


class EmbedRequest(_Request):
    """POST /api/embed."""

    model: str = Field(min_length=1)
    input: str | Annotated[list[str], Field(max_length=MAX_EMBED_INPUTS)] = Field(
        default_factory=list
    )
    truncate: bool = True
    dimensions: int | None = Field(None, ge=1)
    options: dict[str, Any] | None = None
    keep_alive: KeepAlive = None


class EmbeddingsRequest(_Request):
    """POST /api/embeddings (legacy)."""

    model: str = Field(min_length=1)
    prompt: str = ""
    options: dict[str, Any] | None = None
    keep_alive: KeepAlive = None


class ModelRequest(_Request):
    """POST /api/show, DELETE /api/delete (`name` is the older spelling of `model`)."""

    model: str | None = None
    name: str | None = None
    verbose: bool = False

    def target(self) -> str:
        return self.model or self.name or ""


class CopyRequest(_Request):
    source: str = Field(min_length=1)
    destination: str = Field(min_length=1)


class PullRequest(_Request):
    model: str | None = None
    name: str | None = None
    insecure: bool = False
    stream: bool = True

    def target(self) -> str:
        return self.model or self.name or ""


class CreateRequest(_Request):
    """POST /api/create: from an existing model, or from GGUF blobs uploaded to /api/blobs."""

    model: str | None = None
    name: str | None = None
    from_: str | None = Field(None, alias="from")
    files: dict[str, str] | None = None
    template: str | None = None
    system: str | None = None
    license: str | list[str] | None = None
    parameters: dict[str, Any] | None = None
    quantize: str | None = None
    stream: bool = True

    def target(self) -> str:
        return self.model or self.name or ""


class ModelDetails(BaseModel):
    parent_model: str = ""
    format: str = "gguf"
    family: str
    families: list[str]
    parameter_size: str
    quantization_level: str


class ListedModel(BaseModel):
    name: str
    model: str
    modified_at: str
    size: int
    digest: str
    details: ModelDetails


class TagsResponse(BaseModel):
    models: list[ListedModel]


class RunningModel(BaseModel):
    name: str
    model: str
    size: int = Field(description="Bytes the model holds, from its memory plan.")
    digest: str
    details: ModelDetails
    expires_at: str
    size_vram: int = Field(description="Of which on GPUs (and RPC servers).")
    context_length: int
    # gguf-serve's own (Ollama clients ignore them)
    kv_type_k: str | None = None
    kv_type_v: str | None = None
    parallel: int | None = Field(None, description="Slots (requests decoded together).")
    gpu_layers: int | None = Field(None, description="Layers offloaded (llama.cpp's count).")


class PsResponse(BaseModel):
    models: list[RunningModel]


class ShowResponse(BaseModel):
    license: str = ""
    modelfile: str
    parameters: str
    template: str
    system: str | None = None
    details: ModelDetails
    model_info: dict[str, Any]
    capabilities: list[str]
    modified_at: str
    plan: MemoryPlan | None = Field(
        None, description="gguf-serve's memory plan at the model's default load settings."
    )


class OutMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str = ""
    tool_calls: list[ToolCall] | None = None


class GenerationResponse(BaseModel):
    """Fields every chat/generate object has; the statistics only on the final one (ns)."""

    model: str
    created_at: str
    done: bool
    done_reason: str | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None


class ChatResponse(GenerationResponse):
    message: OutMessage = Field(default_factory=OutMessage)


class GenerateResponse(GenerationResponse):
    response: str = ""
    context: list[int] | None = None


class EmbedResponse(BaseModel):
    model: str
    embeddings: list[list[float]]
    total_duration: int
    load_duration: int
    prompt_eval_count: int


class EmbeddingsResponse(BaseModel):
    embedding: list[float]


class ProgressResponse(BaseModel):
    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None


class VersionResponse(BaseModel):
    version: str
