"""Wire schemas of POST /v1/chat/completions: request, response, stream chunks."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from server.api.limits import MAX_MESSAGES, MAX_PARTS, MAX_TOOLS
from server.api.openai.protocol import (
    ChoiceLogprobs,
    CompletionUsage,
    DropNone,
    Lenient,
    SamplingFields,
)

NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"


class TextPart(Lenient):
    type: Literal["text"]
    text: str


class RefusalPart(Lenient):
    type: Literal["refusal"]
    refusal: str


class MediaPart(Lenient):
    type: Literal["image_url", "input_audio", "file"]


class FunctionCall(Lenient):
    name: str
    arguments: str | dict[str, Any] = ""


class ToolCall(Lenient):
    """A tool call in an assistant message of the history."""

    id: str = ""
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: (
        str
        | Annotated[list[TextPart | RefusalPart | MediaPart], Field(max_length=MAX_PARTS)]
        | None
    ) = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        """The text content; text (and refusal) parts are joined (media parts are refused)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(
            p.text if isinstance(p, TextPart) else p.refusal
            for p in self.content
            if not isinstance(p, MediaPart)
        )


class FunctionDef(Lenient):
    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDef(Lenient):
    type: str = "function"  # "custom" tools are refused by the service, naming the field
    function: FunctionDef | None = None


class NamedFunction(Lenient):
    name: str


class AllowedTools(Lenient):
    mode: Literal["auto", "required"]
    tools: list[ToolDef]


class NamedToolChoice(Lenient):
    type: Literal["function", "custom", "allowed_tools"]
    function: NamedFunction | None = None
    allowed_tools: AllowedTools | None = None


class JSONSchemaFormat(Lenient):
    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(Lenient):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None


class ChatCompletionRequest(SamplingFields):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[ToolDef] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None


class ResponseFunction(BaseModel):
    name: str
    arguments: str


class ResponseToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: ResponseFunction


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    tool_calls: list[ResponseToolCall] | None = None


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: str | None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[Choice]
    usage: CompletionUsage


class DeltaFunction(DropNone):
    name: str | None = None
    arguments: str | None = None


class DeltaToolCall(DropNone):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: DeltaFunction | None = None


class Delta(DropNone):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[DeltaToolCall] | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    finish_reason: str | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChunkChoice]
    usage: CompletionUsage | None = None
