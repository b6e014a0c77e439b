"""One wording for pydantic validation failures: `where: why`, where is the dotted field path.

Settings, Ollama options, registry manifests, load options and request bodies all report
their errors through here, so a user sees the same shape of message everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# Location parts pydantic adds for the members of a union: they name types, not fields.
_TYPE_NAMES = frozenset({"str", "int", "float", "bool", "none", "list", "dict"})


def _is_type_label(part: object) -> bool:
    if not isinstance(part, str) or part == "[key]":
        return False
    return "[" in part or part in _TYPE_NAMES or part[:1].isupper()


def error_parts(
    errors: Iterable[Mapping[str, Any]], *, skip: Sequence[str] = ()
) -> list[tuple[str, str]]:
    """(dotted location, message) for each error of `ValidationError.errors()` (or FastAPI's
    RequestValidationError.errors()), leaving out location parts named in `skip`.

    For a field that may take several types, pydantic reports one error per type; the path
    leaves out the type labels (`str`, `list[str]`, `TextPart`) and, where one type got further
    than "wrong type" (a list too long), only that error is kept.
    """
    located = []
    for err in errors:
        loc = err.get("loc", ())
        where = ".".join(str(p) for p in loc if p not in skip and not _is_type_label(p))
        located.append((where, str(err.get("type", "")), str(err.get("msg", "invalid value"))))
    closer = {where for where, kind, _ in located if not kind.endswith("_type")}
    parts: list[tuple[str, str]] = []
    for where, kind, msg in located:
        if where in closer and kind.endswith("_type"):
            continue
        if (where, msg) not in parts:
            parts.append((where, msg))
    return parts


def describe(
    errors: Iterable[Mapping[str, Any]], *, first: bool = False, skip: Sequence[str] = ()
) -> str:
    """`where: why; where: why` (only the first error when `first`), `why` alone for an error
    that has no location."""
    parts = error_parts(errors, skip=skip)
    if first:
        parts = parts[:1]
    return "; ".join(f"{where}: {msg}" if where else msg for where, msg in parts) or "invalid"
