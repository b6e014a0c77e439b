"""Model names and tags: Ollama's `[host/][namespace/]model[:tag]` grammar, and what a tag says.

Parsing follows Ollama's `types/model/name.go`: the tag is split off at the last `:` only when
that `:` comes after the last `/`; then the model is the part after the last `/`, the namespace
the part before it, and the host everything left. The parts become directory names in the store,
so anything that could step outside it is refused here, before it touches a path.
Standard library only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from server.errors import InvalidName

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"

_MAX_PART = 80
_MAX_HOST = 350
# host/namespace/model:tag at their longest; anything longer is refused before any scanning.
_MAX_NAME = _MAX_HOST + 3 * _MAX_PART + 3

_FIRST = re.compile(r"[A-Za-z0-9_]")
_REST = {
    "host": re.compile(r"[A-Za-z0-9_.:-]*"),
    "namespace": re.compile(r"[A-Za-z0-9_-]*"),
    "model": re.compile(r"[A-Za-z0-9_.-]*"),
    "tag": re.compile(r"[A-Za-z0-9_.-]*"),
}
_ALLOWED = {
    "host": "letters, digits, '_', '-', '.' and ':' (port)",
    "namespace": "letters, digits, '_' and '-' (no '.')",
    "model": "letters, digits, '_', '-' and '.'",
    "tag": "letters, digits, '_', '-' and '.'",
}


@dataclass(frozen=True)
class ModelName:
    """A parsed, validated model name; parts keep their case, `key` compares case-insensitively."""

    host: str
    namespace: str
    model: str
    tag: str

    @property
    def display(self) -> str:
        """The shortest form, as Ollama shows it: `model:tag`, `ns/model:tag` or the full name."""
        if self.host.lower() != DEFAULT_HOST:
            return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"
        if self.namespace.lower() != DEFAULT_NAMESPACE:
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.model}:{self.tag}"

    @property
    def full(self) -> str:
        """`host/namespace/model:tag` with every part spelled out."""
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    @property
    def key(self) -> tuple[str, str, str, str]:
        """Lower-cased parts: two names are the same model when their keys are equal."""
        return (self.host.lower(), self.namespace.lower(), self.model.lower(), self.tag.lower())

    @property
    def parts(self) -> tuple[str, str, str, str]:
        """(host, namespace, model, tag): the manifest path below `manifests/`."""
        return (self.host, self.namespace, self.model, self.tag)

    def __str__(self) -> str:
        return self.display


def parse_name(text: str) -> ModelName:
    """Parse `[host/][namespace/]model[:tag]`, filling Ollama's defaults for missing parts.

    Raises InvalidName naming the offending part and the rule it breaks.
    """
    if not isinstance(text, str):
        raise InvalidName(f"a model name must be a string, not {type(text).__name__}")
    _check_whole(text)
    rest, tag = text, DEFAULT_TAG
    colon = text.rfind(":")
    if colon > text.rfind("/"):
        rest, tag = text[:colon], text[colon + 1 :]
        if not tag:
            raise InvalidName(f"invalid model name {text!r}: the tag after ':' is empty")
    if rest.count("/") > 2:
        # Ollama leaves the surplus in the host, where '/' then fails; say so plainly instead.
        raise InvalidName(
            f"invalid model name {text!r}: at most three '/'-separated parts "
            "(host/namespace/model) are allowed"
        )
    pieces = rest.split("/")
    model = pieces[-1]
    namespace = pieces[-2] if len(pieces) >= 2 else DEFAULT_NAMESPACE
    host = pieces[-3] if len(pieces) == 3 else DEFAULT_HOST
    return name_from_parts(host, namespace, model, tag, original=text)


def name_from_parts(
    host: str, namespace: str, model: str, tag: str, *, original: str | None = None
) -> ModelName:
    """Validate four parts (e.g. read back from a manifest path) and build a ModelName.

    Raises InvalidName.
    """
    shown = original if original is not None else f"{host}/{namespace}/{model}:{tag}"
    for kind, value in (("host", host), ("namespace", namespace), ("model", model), ("tag", tag)):
        problem = _part_problem(kind, value)
        if problem is not None:
            raise InvalidName(f"invalid model name {shown!r}: {problem}")
    return ModelName(host, namespace, model, tag)


def _check_whole(text: str) -> None:
    """Refuse what no part may hold, with the most useful message for each case."""
    if not text:
        raise InvalidName("the model name is empty")
    if len(text) > _MAX_NAME:
        raise InvalidName(f"the model name is too long ({len(text)} characters)")
    if any(c.isspace() or not c.isprintable() for c in text):
        raise InvalidName(
            f"invalid model name {text!r}: whitespace and control characters are not allowed"
        )
    if "://" in text:
        raise InvalidName(
            f"invalid model name {text!r}: URL schemes are not supported; "
            "write host/namespace/model:tag"
        )
    if "@" in text:
        raise InvalidName(f"invalid model name {text!r}: '@' (digests) is not supported in names")
    if "\\" in text:
        raise InvalidName(f"invalid model name {text!r}: backslashes are not allowed")
    if text.startswith("/"):
        raise InvalidName(f"invalid model name {text!r}: absolute paths are not allowed")
    if ".." in text:
        raise InvalidName(f"invalid model name {text!r}: '..' is not allowed")


def _part_problem(kind: str, value: str) -> str | None:
    """Why `value` is not a valid `kind` part, or None when it is."""
    if not value:
        return f"the {kind} is empty"
    limit = _MAX_HOST if kind == "host" else _MAX_PART
    if len(value) > limit:
        return f"the {kind} is {len(value)} characters long; the limit is {limit}"
    if ".." in value:
        return f"the {kind} {value!r} contains '..'"
    if not _FIRST.fullmatch(value[0]):
        return f"the {kind} {value!r} must start with an ASCII letter, a digit or '_'"
    if not _REST[kind].fullmatch(value[1:]):
        hint = ""
        if kind == "namespace" and "." in value:
            hint = " (a host needs the full form host/namespace/model)"
        return f"the {kind} {value!r} may contain only {_ALLOWED[kind]}{hint}"
    return None


# --- quantization labels ------------------------------------------------------------------------

# llama.cpp's `llama_ftype` values and their names (`llama_model_ftype_name`), upper-case.
FILE_TYPE_LABELS: dict[int, str] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
}

QUANT_LABELS: frozenset[str] = frozenset(FILE_TYPE_LABELS.values())

_QUANT_ALIASES = {
    "Q3_K": "Q3_K_M",
    "Q4_K": "Q4_K_M",
    "Q5_K": "Q5_K_M",
    "FP16": "F16",
    "FP32": "F32",
}


def normalize_quant(label: str) -> str | None:
    """The canonical llama.cpp file-type name for `label` (`q4_k_m` -> `Q4_K_M`), else None."""
    upper = label.strip().upper()
    upper = _QUANT_ALIASES.get(upper, upper)
    return upper if upper in QUANT_LABELS else None


# --- tag parts ----------------------------------------------------------------------------------

_SIZE = re.compile(r"(?:\d+x)?\d+(?:\.\d+)?[kmbt]", re.IGNORECASE)
VARIANTS: frozenset[str] = frozenset(
    {
        "base",
        "chat",
        "code",
        "coder",
        "embed",
        "instruct",
        "it",
        "math",
        "pt",
        "reasoning",
        "text",
        "thinking",
        "tools",
        "uncensored",
        "vision",
    }
)


@dataclass(frozen=True)
class TagParts:
    """What a tag such as `8b-instruct-q4_K_M` says: size, variant, quantization, the rest."""

    size: str | None
    variant: str | None
    quant: str | None
    extra: tuple[str, ...]


def parse_tag(tag: str) -> TagParts:
    """Decode the `-`-separated parts of a tag; the first of each kind wins, the rest are extra."""
    size: str | None = None
    variant: str | None = None
    quant: str | None = None
    extra: list[str] = []
    for part in (p for p in tag.split("-") if p):
        lowered = part.lower()
        label = normalize_quant(part)
        if size is None and _SIZE.fullmatch(part):
            size = lowered
        elif variant is None and lowered in VARIANTS:
            variant = lowered
        elif quant is None and label is not None:
            quant = label
        else:
            extra.append(part)
    return TagParts(size=size, variant=variant, quant=quant, extra=tuple(extra))
