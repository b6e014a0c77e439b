"""The calls of one answer as clients see them: each call once, and when the answer is complete.

A small model at temperature 0 that may write several calls writes the same call again and
again until its context fills. `CallReader` sits on the parser's events and:

- drops a call that exactly repeats an earlier one (same function, same arguments up to JSON
  whitespace: never useful; the default model writes `{ "city": "Paris" }` and then
  `{"city": "Paris"}`). While a call is still the start of an earlier call of the same
  function its events are held back; once it differs they flow, so new calls still stream
  argument by argument;
- says the answer is `complete` after the first repeat, or once `max_calls` calls are done
  (1 when parallel calls are off), so the engine can end generation right there
  (`CallWatch`, run on the engine's worker thread), and drops whatever would follow.

Clients (OpenAI streams and bodies, Ollama messages) and the engine's stop check all read
calls through this one class, so they agree on what the answer holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from server.chat.tool_format import ToolFormat
from server.chat.tool_parser import (
    CallArguments,
    CallEnd,
    CallStart,
    Content,
    ParsedToolCall,
    ToolCallParser,
    ToolEvent,
)


@dataclass(slots=True)
class _Compact:
    """A call's arguments without the whitespace between JSON tokens, built as text arrives."""

    text: str = ""
    _in_string: bool = False
    _escape: bool = False

    def add(self, piece: str) -> None:
        kept = []
        for c in piece:
            if self._in_string:
                if self._escape:
                    self._escape = False
                elif c == "\\":
                    self._escape = True
                elif c == '"':
                    self._in_string = False
            elif c == '"':
                self._in_string = True
            elif c in " \t\r\n":
                continue
            kept.append(c)
        self.text += "".join(kept)


@dataclass(slots=True)
class CallReader:
    """Turns generated text into content and distinct calls, numbered as the client sees them."""

    fmt: ToolFormat
    max_calls: int
    calls: list[ParsedToolCall] = field(default_factory=list)  # the calls the client gets
    complete: bool = False  # no further call is wanted: generation may end
    repeated: bool = False  # the answer ended on a call that repeated an earlier one
    _parser: ToolCallParser = field(init=False)
    _held: list[ToolEvent] | None = None  # a call that so far matches an earlier call
    _held_call: ParsedToolCall | None = None
    _compact: list[_Compact] = field(default_factory=list)  # per client call
    _held_compact: _Compact = field(default_factory=_Compact)
    _index: dict[int, int] = field(default_factory=dict)  # parser index -> client index

    def __post_init__(self) -> None:
        self._parser = ToolCallParser(self.fmt)

    def feed(self, text: str) -> list[ToolEvent]:
        """Client events for the next piece of text."""
        return self._filter(self._parser.feed(text)) if not self.complete else []

    def finish(self) -> list[ToolEvent]:
        """Client events at the end of generation. A held call that never completed is
        released as it is (a cut-off call is shown, as a cut-off answer is)."""
        out = [] if self.complete else self._filter(self._parser.finish())
        if self._held is not None:
            out += self._release()
        return out

    def _filter(self, events: list[ToolEvent]) -> list[ToolEvent]:
        out: list[ToolEvent] = []
        for event in events:
            if self.complete:
                break
            if isinstance(event, Content):
                out.append(event)
            elif isinstance(event, CallStart):
                out += self._start(event)
            elif isinstance(event, CallArguments):
                out += self._arguments(event)
            else:
                out += self._end(event)
        return out

    def _start(self, event: CallStart) -> list[ToolEvent]:
        call = ParsedToolCall(name=event.name)
        if any(c.complete and c.name == event.name for c in self.calls):
            self._held, self._held_call = [event], call  # may turn out to be a repeat
            self._held_compact = _Compact()
            return []
        return self._admit(event, call)

    def _arguments(self, event: CallArguments) -> list[ToolEvent]:
        if self._held is None or self._held_call is None:
            index = self._index[event.index]
            self.calls[index].arguments += event.text
            self._compact[index].add(event.text)
            return [CallArguments(index, event.text)]
        self._held.append(event)
        self._held_call.arguments += event.text
        self._held_compact.add(event.text)
        if self._earlier(prefix=True):
            return []
        return self._release()

    def _end(self, event: CallEnd) -> list[ToolEvent]:
        if self._held_call is not None and self._earlier(prefix=False):
            self._held = self._held_call = None
            self.complete = self.repeated = True
            return []
        out = self._release() if self._held is not None else []
        index = self._index[event.index]
        self.calls[index].complete = True
        if sum(c.complete for c in self.calls) >= self.max_calls:
            self.complete = True
        return [*out, CallEnd(index)]

    def _admit(self, event: CallStart, call: ParsedToolCall) -> list[ToolEvent]:
        """Give the call the client's next index."""
        self._index[event.index] = len(self.calls)
        self.calls.append(call)
        compact = _Compact()
        compact.add(call.arguments)
        self._compact.append(compact)
        return [CallStart(len(self.calls) - 1, event.name)]

    def _release(self) -> list[ToolEvent]:
        """The held call differs from every earlier one after all: it flows to the client."""
        held, call = self._held or [], self._held_call
        self._held = self._held_call = None
        start = held[0] if held else None
        if call is None or not isinstance(start, CallStart):
            return []
        out = self._admit(start, call)
        index = self._index[start.index]
        return out + [CallArguments(index, e.text) for e in held if isinstance(e, CallArguments)]

    def _earlier(self, *, prefix: bool) -> bool:
        """Whether the held call is (the start of, with `prefix`) an earlier complete call of
        the same function, comparing arguments without JSON whitespace."""
        held, text = self._held_call, self._held_compact.text
        if held is None:
            return False
        return any(
            call.complete
            and call.name == held.name
            and (compact.text == text or (prefix and compact.text.startswith(text)))
            for call, compact in zip(self.calls, self._compact, strict=True)
        )


def read_calls(text: str, fmt: ToolFormat, max_calls: int) -> tuple[str, list[ParsedToolCall]]:
    """The content and the distinct calls of a whole generated message."""
    reader = CallReader(fmt, max_calls)
    events = reader.feed(text) + reader.finish()
    return "".join(e.text for e in events if isinstance(e, Content)), reader.calls


class CallWatch:
    """The engine's stop check for a request with tools: complete once the calls are."""

    __slots__ = ("_reader",)

    def __init__(self, fmt: ToolFormat, max_calls: int) -> None:
        self._reader = CallReader(fmt, max_calls)

    def complete(self, text: str) -> bool:
        """Read the next piece of generated text; True when generation should end now."""
        self._reader.feed(text)
        return self._reader.complete
