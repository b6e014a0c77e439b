"""The state of one `gguf-serve run` chat, and the `/set parameter` values it accepts.

Parameters are Ollama's option names; values are converted here so a typo is answered at the
prompt, and the server still validates ranges (its 400 message is shown as is).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Ollama's `/set parameter` names and how each value is read (load-time ones reload the model).
PARAMETERS: dict[str, Callable[[list[str]], Any]] = {
    "temperature": lambda v: float(v[0]),
    "seed": lambda v: int(v[0]),
    "num_ctx": lambda v: int(v[0]),
    "num_predict": lambda v: int(v[0]),
    "top_k": lambda v: int(v[0]),
    "top_p": lambda v: float(v[0]),
    "min_p": lambda v: float(v[0]),
    "typical_p": lambda v: float(v[0]),
    "repeat_penalty": lambda v: float(v[0]),
    "repeat_last_n": lambda v: int(v[0]),
    "presence_penalty": lambda v: float(v[0]),
    "frequency_penalty": lambda v: float(v[0]),
    "stop": list,
    "num_gpu": lambda v: int(v[0]),
    "num_thread": lambda v: int(v[0]),
    "num_batch": lambda v: int(v[0]),
}


def parse_parameter(name: str, values: list[str]) -> Any:
    """The typed value of `/set parameter NAME VALUE...`. Raises ValueError naming the problem."""
    reader = PARAMETERS.get(name)
    if reader is None:
        raise ValueError(f"unknown parameter '{name}'")
    if not values:
        raise ValueError(f"parameter '{name}' needs a value")
    try:
        return reader([_unquote(v) for v in values])
    except ValueError:
        raise ValueError(f"invalid value '{' '.join(values)}' for parameter '{name}'") from None


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            decoded = json.loads(value)
        except ValueError:
            return value
        return decoded if isinstance(decoded, str) else value
    return value


@dataclass
class ChatSession:
    """A conversation: model, messages so far, system prompt, options, output settings."""

    model: str
    messages: list[dict[str, str]] = field(default_factory=list)
    system: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    format: str | None = None
    keep_alive: str | None = None
    verbose: bool = False
    wordwrap: bool = True  # only where the output is a terminal

    def request(self, prompt: str) -> dict[str, Any]:
        """The /api/chat body for `prompt` after the conversation so far."""
        messages = list(self.messages)
        if self.system is not None:
            messages.insert(0, {"role": "system", "content": self.system})
        messages.append({"role": "user", "content": prompt})
        body: dict[str, Any] = {"model": self.model, "messages": messages}
        if self.options:
            body["options"] = dict(self.options)
        if self.format is not None:
            body["format"] = self.format
        if self.keep_alive is not None:
            body["keep_alive"] = self.keep_alive
        return body

    def remember(self, prompt: str, answer: str) -> None:
        """Keep a turn. An interrupted answer is kept as far as it got: the next turn then
        starts with exactly the tokens the server already holds, so its cache is reused."""
        self.messages.append({"role": "user", "content": prompt})
        self.messages.append({"role": "assistant", "content": answer})

    def clear(self) -> None:
        self.messages.clear()
