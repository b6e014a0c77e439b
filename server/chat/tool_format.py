"""How a model writes tool calls: the literal text around each call, per template family.

A format is a fixed layout. Grammars built from it force exactly that layout, so the parser
can read calls back by plain literal matching (no guessing at what the model meant).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ToolFormat:
    """The literal layout of tool calls: `open NAME middle ARGS close (sep open ...)*`."""

    name: str
    call_open: str  # text before the function name
    call_middle: str  # between the name and the arguments object
    call_close: str  # after the arguments object
    separator: str  # between two calls; "" = one call per message
    anywhere: bool  # a call may follow some text (else it must open the message)
    trigger: str  # what starts a call in free text (a literal, also a lazy-grammar trigger)

    def trigger_pattern(self) -> str:
        """A llama.cpp lazy-grammar trigger pattern: the grammar starts at the group.

        Not of the `^...$` form: llama.cpp then searches the generated text for it, about four
        times cheaper per token than matching all of it (measured at 4000 tokens of prose).
        """
        head = "" if self.anywhere else r"^\s*"
        return f"{head}({re.escape(self.trigger)})"

    def render_call(self, name: str, arguments: str) -> str:
        """One call as the model would write it (for assistant turns in the history)."""
        return f"{self.call_open}{name}{self.call_middle}{arguments}{self.call_close}"

    @property
    def parallel(self) -> bool:
        return bool(self.separator)


# Hermes / Qwen 2.5 / the generic format: <tool_call> blocks, one JSON object each.
HERMES = ToolFormat(
    name="hermes",
    call_open='<tool_call>\n{"name": "',
    call_middle='", "arguments": ',
    call_close="}\n</tool_call>",
    separator="\n",
    anywhere=True,
    trigger="<tool_call>",
)

# Llama 3.1 / 3.2 JSON tool calling: one bare object with "parameters", opening the message.
LLAMA3_JSON = ToolFormat(
    name="llama3-json",
    call_open='{"name": "',
    call_middle='", "parameters": ',
    call_close="}",
    separator="",
    anywhere=False,
    trigger='{"name"',
)


def format_for_template(source: str, supports_tools: bool) -> ToolFormat:
    """The format a template's model was trained on; HERMES (our generic format) otherwise."""
    if (
        supports_tools
        and "<tool_call>" not in source
        and ("<|python_tag|>" in source or '"parameters"' in source)
    ):
        return LLAMA3_JSON
    return HERMES
