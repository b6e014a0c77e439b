"""One wording for pydantic validation failures: `where: why`, where is the dotted field path.

Settings, Ollama options, registry manifests, load options and request bodies all report
their errors through here, so a user sees the same shape of message everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def error_parts(
    errors: Iterable[Mapping[str, Any]], *, skip: Sequence[str] = ()
) -> list[tuple[str, str]]:
    """(dotted location, message) for each error of `ValidationError.errors()` (or FastAPI's
    RequestValidationError.errors()), leaving out location parts named in `skip`."""
    parts = []
    for err in errors:
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in skip)
        parts.append((where, str(err.get("msg", "invalid value"))))
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
