"""One chat choice's engine output -> wire pieces: content, tool calls, logprobs, finish reason."""

from __future__ import annotations

import uuid

from server.api.openai.chat_protocol import (
    AssistantMessage,
    ChunkChoice,
    Delta,
    DeltaFunction,
    DeltaToolCall,
    ResponseFunction,
    ResponseToolCall,
)
from server.api.openai.logprobs import chat_logprobs
from server.chat.tool_parser import CallArguments, CallStart, Content, ToolEvent
from server.chat.tools import ToolPlan
from server.engine.types import GenerationEvent, TokenLogprob


def tool_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def finish_reason(engine_reason: str | None, n_calls: int) -> str | None:
    """OpenAI's reason: a message that ends after its tool calls finished with `tool_calls`."""
    return "tool_calls" if engine_reason == "stop" and n_calls else engine_reason


class ChoiceStream:
    """Stream chunks of one choice: parses tool calls as they arrive, attaches logprobs."""

    def __init__(self, index: int, plan: ToolPlan | None, top_logprobs: int | None) -> None:
        self.index = index
        self.top_logprobs = top_logprobs
        self._parser = plan.reader() if plan is not None else None
        self._ids: list[str] = []
        self.plain = plan is None and top_logprobs is None  # content only: the fast chunk path

    def chunks(self, event: GenerationEvent) -> list[ChunkChoice]:
        """Chunk choices for one engine event (without its finish)."""
        parser = self._parser
        events: list[ToolEvent]
        if parser is None:
            events = [Content(event.text)] if event.text else []
        else:
            events = parser.feed(event.text)
        out = self._choices(events)
        if self.top_logprobs is not None and event.logprobs:
            if not out:
                out.append(ChunkChoice(index=self.index, delta=Delta()))
            out[0].logprobs = chat_logprobs(event.logprobs, self.top_logprobs)
        return out

    def final(self, engine_reason: str) -> list[ChunkChoice]:
        """What is still held back, then the chunk with the finish reason."""
        parser = self._parser
        out = self._choices(parser.finish()) if parser is not None else []
        n_calls = len(parser.calls) if parser is not None else 0
        reason = finish_reason(engine_reason, n_calls)
        out.append(ChunkChoice(index=self.index, delta=Delta(), finish_reason=reason))
        return out

    def _choices(self, events: list[ToolEvent]) -> list[ChunkChoice]:
        out: list[ChunkChoice] = []
        text: list[str] = []
        for e in events:
            if isinstance(e, Content):
                text.append(e.text)
                continue
            if text:
                out.append(self._content("".join(text)))
                text = []
            if isinstance(e, CallStart):
                self._ids.append(tool_call_id())
                call = DeltaToolCall(
                    index=e.index,
                    id=self._ids[e.index],
                    type="function",
                    function=DeltaFunction(name=e.name, arguments=""),
                )
            elif isinstance(e, CallArguments):
                call = DeltaToolCall(index=e.index, function=DeltaFunction(arguments=e.text))
            else:
                continue  # a call's end has no delta of its own
            out.append(ChunkChoice(index=self.index, delta=Delta(tool_calls=[call])))
        if text and "".join(text):
            out.append(self._content("".join(text)))
        return out

    def _content(self, text: str) -> ChunkChoice:
        return ChunkChoice(index=self.index, delta=Delta(content=text))


def whole_message(text: str, plan: ToolPlan | None) -> tuple[AssistantMessage, int]:
    """The non-stream message for a choice's whole text, and how many tool calls it holds."""
    if plan is None:
        return AssistantMessage(content=text), 0
    content, calls = plan.read(text)
    tool_calls = [
        ResponseToolCall(
            id=tool_call_id(),
            function=ResponseFunction(name=c.name, arguments=c.arguments),
        )
        for c in calls
    ]
    if not tool_calls:
        return AssistantMessage(content=content), 0
    message = AssistantMessage(content=content.rstrip() or None, tool_calls=tool_calls)
    return message, len(tool_calls)


def all_logprobs(parts: list[tuple[TokenLogprob, ...]]) -> list[TokenLogprob]:
    return [entry for part in parts for entry in part]
