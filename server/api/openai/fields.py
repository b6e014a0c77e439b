"""Request fields the schemas do not model: ignored when harmless, refused when they matter.

Request models accept unknown fields (`extra="allow"`). A field listed in REJECTED would change
the answer in a way this server cannot honour, so it is a 400 naming it unless its value is
one that changes nothing (null, or e.g. `modalities: ["text"]`). Anything else unknown is
ignored (logged at debug level): hints about billing, caching, tracing or storage, and
extensions of other servers that do not change what the model writes.
docs/openai-compatibility.md lists every field; keep the two in step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from server.errors import UnsupportedFeature

logger = logging.getLogger(__name__)

Harmless = Callable[[Any], bool]


def _null(value: Any) -> bool:
    return value is None


def _text_only(value: Any) -> bool:
    return value is None or value == ["text"]


def _no_reasoning(value: Any) -> bool:
    return value in (None, "none")


def _default_verbosity(value: Any) -> bool:
    return value in (None, "medium")


def _falsy(value: Any) -> bool:
    return not value


# field -> (which values are harmless, why the others are refused)
_CHAT_REJECTED: dict[str, tuple[Harmless, str]] = {
    "audio": (_null, "audio output is not supported"),
    "modalities": (_text_only, "only the text modality is supported"),
    "web_search_options": (_null, "web search is not available"),
    "reasoning_effort": (_no_reasoning, "this server runs no reasoning models' effort control"),
    "verbosity": (_default_verbosity, "verbosity control is not supported"),
    "moderation": (_null, "moderation is not available"),
    "functions": (_null, "the deprecated `functions` field is not supported; use `tools`"),
    "function_call": (
        _null,
        "the deprecated `function_call` field is not supported; use `tool_choice`",
    ),
}
# llama-server sampling extensions this engine does not implement (they change the sample).
_SAMPLER_EXTENSIONS: dict[str, tuple[Harmless, str]] = {
    name: (_falsy, f"the sampler setting `{name}` is not supported")
    for name in (
        "mirostat",
        "mirostat_tau",
        "mirostat_eta",
        "dynatemp_range",
        "dynatemp_exponent",
        "xtc_probability",
        "xtc_threshold",
        "dry_multiplier",
        "dry_base",
        "dry_allowed_length",
        "dry_penalty_last_n",
        "dry_sequence_breakers",
        "top_n_sigma",
        "samplers",
        "json_schema",
    )
}
CHAT_REJECTED = {**_CHAT_REJECTED, **_SAMPLER_EXTENSIONS}
COMPLETIONS_REJECTED = dict(_SAMPLER_EXTENSIONS)
EMBEDDINGS_REJECTED: dict[str, tuple[Harmless, str]] = {}

# Documented as ignored: accepted, changing nothing about the answer.
CHAT_IGNORED = frozenset(
    {
        "user",
        "metadata",
        "store",
        "service_tier",
        "safety_identifier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "prompt_cache_options",
        "prediction",
    }
)
COMPLETIONS_IGNORED = frozenset({"user"})
EMBEDDINGS_IGNORED = frozenset({"user"})


def check_extra_fields(
    body: BaseModel, rejected: dict[str, tuple[Harmless, str]], endpoint: str
) -> None:
    """Raise UnsupportedFeature for the first extra field that would change the answer."""
    extra = body.model_extra or {}
    for name, value in extra.items():
        rule = rejected.get(name)
        if rule is not None and not rule[0](value):
            raise UnsupportedFeature(f"{name}: {rule[1]}", param=name)
    if extra:
        logger.debug("%s: ignoring fields %s", endpoint, ", ".join(sorted(extra)))
