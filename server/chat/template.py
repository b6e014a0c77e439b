"""Chat templates from GGUF metadata, rendered in a sandboxed Jinja environment."""

from __future__ import annotations

import datetime
from typing import Any

import jinja2

from server.chat.sandbox import (
    BudgetedSandbox,
    RenderLimits,
    TemplateLimitExceeded,
    compile_budgeted,
    render_budgeted,
)
from server.errors import InvalidRequest, ModelTemplateError

# Used when a GGUF carries no template (llama.cpp falls back to ChatML too).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.datetime.now().strftime(fmt)


class ChatTemplate:
    """A compiled chat template plus the special tokens it refers to."""

    def __init__(
        self,
        source: str | None,
        *,
        bos_token: str = "",
        eos_token: str = "",
        limits: RenderLimits | None = None,
    ) -> None:
        self.source = source or CHATML_TEMPLATE
        self.limits = limits or RenderLimits()
        env = BudgetedSandbox(
            trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
        )
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        try:
            self._template = compile_budgeted(env, self.source, self.limits)
        except (jinja2.TemplateSyntaxError, TemplateLimitExceeded) as exc:
            raise InvalidRequest(f"the chat template does not parse: {exc}") from None
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.supports_tools = "tools" in self.source

    def render(
        self,
        messages: list[dict[str, Any]],
        *,
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
        **extra: Any,
    ) -> str:
        """The prompt text for `messages`. Blocks for up to `limits.seconds`: call it off the
        event loop.

        Raises InvalidRequest when the template refuses the messages, ModelTemplateError when
        it runs past its time or size budget.
        """
        values = {
            "messages": messages,
            "add_generation_prompt": add_generation_prompt,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "tools": tools,
            **extra,
        }
        try:
            return render_budgeted(self._template, self.limits, values)
        except TemplateLimitExceeded as exc:
            raise ModelTemplateError(f"the model's chat template failed: {exc}") from None
        except jinja2.TemplateError as exc:
            raise InvalidRequest(
                f"the chat template rejected the messages: {exc}", param="messages"
            ) from None
        except (TypeError, KeyError, AttributeError, ValueError) as exc:
            raise InvalidRequest(
                f"the messages do not fit the model's chat template: {exc}", param="messages"
            ) from None
