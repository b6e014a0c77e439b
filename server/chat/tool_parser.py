"""Reading tool calls back out of generated text, incrementally (streams) or at once.

The grammar forces the format's exact layout after its trigger, so parsing is literal
matching plus a small JSON scanner that finds where the arguments object ends. Text that
does not follow the layout (no grammar was applied) stays content.

The grammar and this parser agree on one detail of JSON: every value the schema converter
writes ends in its `space` rule (one optional blank), the arguments object included, so a call
is `open NAME middle ARGS[ ]close`. The parser skips exactly that blank; anything else
between the arguments and the close is off the layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from server.chat.tool_format import ToolFormat


@dataclass(frozen=True, slots=True)
class Content:
    """Plain assistant text."""

    text: str


@dataclass(frozen=True, slots=True)
class CallStart:
    """A new tool call (its position among this message's calls) and the function's name."""

    index: int
    name: str


@dataclass(frozen=True, slots=True)
class CallArguments:
    """The next fragment of a call's JSON arguments."""

    index: int
    text: str


@dataclass(frozen=True, slots=True)
class CallEnd:
    """The call's close was read: its arguments are complete."""

    index: int


ToolEvent = Content | CallStart | CallArguments | CallEnd

# What the schema converter's `space` rule lets a JSON value end with (see the module docstring).
VALUE_TRAILER = " "


@dataclass(slots=True)
class ParsedToolCall:
    """One tool call as the model wrote it: a function name and its JSON arguments text."""

    name: str
    arguments: str = ""
    complete: bool = False


_TEXT, _OPEN, _NAME, _MIDDLE, _ARGS, _CLOSE, _AFTER, _PLAIN = range(8)


@dataclass(slots=True)
class ToolCallParser:
    """Splits generated text into content and tool calls, one `feed` per text delta."""

    fmt: ToolFormat
    calls: list[ParsedToolCall] = field(default_factory=list)
    _state: int = _TEXT
    _buf: str = ""
    _depth: int = 0
    _in_string: bool = False
    _escape: bool = False
    _trailed: bool = False  # the blank after the arguments was read

    def feed(self, text: str) -> list[ToolEvent]:
        """Events for the text so far; text that may still turn into a call is held back."""
        if self._state == _PLAIN:
            return [Content(text)] if text else []
        self._buf += text
        out: list[ToolEvent] = []
        while self._step(out):
            pass
        return out

    def finish(self) -> list[ToolEvent]:
        """Flush at the end of generation: held-back text that never became a call is content.

        A separator held after a call (the start of another call that never came) is call
        syntax, not content, and is dropped.
        """
        out: list[ToolEvent] = []
        if self._state in (_TEXT, _PLAIN) and self._buf:
            out.append(Content(self._buf))
        self._buf = ""
        return out

    # Each step consumes from the buffer and returns whether it made progress.
    def _step(self, out: list[ToolEvent]) -> bool:
        state, buf, fmt = self._state, self._buf, self.fmt
        if state == _TEXT:
            return self._scan_text(out)
        if state == _OPEN:
            return self._expect(fmt.call_open, _NAME, out)
        if state == _NAME:
            end = buf.find('"')
            if end < 0:
                return False
            self.calls.append(ParsedToolCall(name=buf[:end]))
            out.append(CallStart(len(self.calls) - 1, buf[:end]))
            self._buf = buf[end:]  # the quote opens call_middle
            self._state = _MIDDLE
            return True
        if state == _MIDDLE:
            return self._expect(fmt.call_middle, _ARGS, out)
        if state == _ARGS:
            return self._scan_args(out)
        if state == _CLOSE:
            if not self._trailed and buf.startswith(VALUE_TRAILER):
                self._buf = buf[len(VALUE_TRAILER) :]
                self._trailed = True
            if self._expect(fmt.call_close, _AFTER, out):
                self.calls[-1].complete = True
                out.append(CallEnd(len(self.calls) - 1))
                return True
            return False
        if state == _AFTER:
            sep = fmt.separator
            if sep and buf.startswith(sep):
                self._buf = buf[len(sep) :]
                self._state = _OPEN
                return True
            if sep and sep.startswith(buf):
                return False  # wait for more
            self._state = _PLAIN
            if buf:
                out.append(Content(buf))
            self._buf = ""
            return False
        return False

    def _scan_text(self, out: list[ToolEvent]) -> bool:
        buf, trigger = self._buf, self.fmt.trigger
        if not self.fmt.anywhere:
            body = buf.lstrip()
            if trigger.startswith(body) or body.startswith(trigger):
                if body.startswith(trigger):
                    self._buf, self._state = body, _OPEN
                    return True
                return False  # could still become a call
            self._state = _PLAIN
            self._buf = ""
            out.append(Content(buf))
            return False
        at = buf.find(trigger)
        if at >= 0:
            if at:
                out.append(Content(buf[:at]))
            self._buf, self._state = buf[at:], _OPEN
            return True
        keep = _partial_suffix(buf, trigger)
        if len(buf) > keep:
            out.append(Content(buf[: len(buf) - keep]))
            self._buf = buf[len(buf) - keep :]
        return False

    def _expect(self, literal: str, next_state: int, out: list[ToolEvent]) -> bool:
        buf = self._buf
        if len(buf) < len(literal):
            if literal.startswith(buf):
                return False
        elif buf.startswith(literal):
            self._buf = buf[len(literal) :]
            self._state = next_state
            return True
        # Off the layout (no grammar was applied): the rest is plain content.
        self._state = _PLAIN
        self._buf = ""
        out.append(Content(buf))
        return False

    def _scan_args(self, out: list[ToolEvent]) -> bool:
        buf = self._buf
        depth, in_string, escape = self._depth, self._in_string, self._escape
        end = -1
        for i, c in enumerate(buf):
            if in_string:
                if escape:
                    escape = False
                elif c == "\\":
                    escape = True
                elif c == '"':
                    in_string = False
            elif c == '"':
                in_string = True
            elif c in "{[":
                depth += 1
            elif c in "}]":
                depth -= 1
                if depth == 0:
                    end = i + 1
                    break
        self._depth, self._in_string, self._escape = depth, in_string, escape
        taken = buf if end < 0 else buf[:end]
        if taken:
            index = len(self.calls) - 1
            self.calls[index].arguments += taken
            out.append(CallArguments(index, taken))
        self._buf = "" if end < 0 else buf[end:]
        if end < 0:
            return False
        self._state, self._trailed = _CLOSE, False
        return True


def _partial_suffix(text: str, literal: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `literal`."""
    for k in range(min(len(text), len(literal) - 1), 0, -1):
        if text.endswith(literal[:k]):
            return k
    return 0


def parse_tool_calls(text: str, fmt: ToolFormat) -> tuple[str, list[ParsedToolCall]]:
    """The content and the tool calls of a whole generated message."""
    parser = ToolCallParser(fmt)
    events = parser.feed(text) + parser.finish()
    content = "".join(e.text for e in events if isinstance(e, Content))
    return content, parser.calls
