"""Refuse text the tokenizer cannot take, in any field of any request, before any work.

JSON may carry `\\u0000` and unpaired surrogates (`\\ud800`): both decode to a Python str,
then fail far away (UTF-8 encoding in the tokenizer, file names, the response encoder) as a 500.
A NUL character is never meaningful text for a model either. Checked once here, on the parsed
body every JSON route has (FastAPI parsed it already), so the 400 names the field.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import Request

from server.errors import InvalidRequest

_BAD = re.compile("[\x00\ud800-\udfff]")
# In JSON text a NUL or a surrogate can only be written as an escape (raw control characters
# are invalid JSON, raw surrogates invalid UTF-8, which the edge refuses).
_ESCAPES = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")


def _problem(text: str) -> str | None:
    found = _BAD.search(text)
    if found is None:
        return None
    return "a NUL character" if found.group() == "\x00" else "an unpaired surrogate"


def find_bad_text(value: Any) -> tuple[str, str] | None:
    """(dotted path, what is wrong) of the first string or object key that cannot be text."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            problem = _problem(item)
            if problem:
                return where or "body", problem
            continue
        children = item.items() if isinstance(item, dict) else enumerate(item)
        for key, child in children:
            if isinstance(key, str):
                problem = _problem(key)
                if problem:
                    return where or "body", problem
            if isinstance(child, (str, dict, list)):  # numbers, booleans and null are fine
                stack.append((f"{where}.{key}" if where else str(key), child))
    return None


def _refuse(where: str, problem: str) -> InvalidRequest:
    return InvalidRequest(
        f"{where}: text must be valid Unicode without NUL characters (found {problem})",
        param=where,
    )


async def reject_untokenizable_text(request: Request) -> None:
    """A dependency of every route. Raises InvalidRequest naming the field."""
    for name, value in request.path_params.items():
        problem = _problem(value) if isinstance(value, str) else None
        if problem:
            raise _refuse(name, problem)
    route = request.scope.get("route")
    if getattr(route, "body_field", None) is None:  # no JSON body (a raw upload streams)
        return
    if not _ESCAPES.search(await request.body()):  # both are cached: FastAPI read and parsed
        return  # the body already; bad text can only arrive as one of these escapes
    try:
        body = await request.json()
    except ValueError:
        return  # FastAPI reports invalid JSON itself
    found = find_bad_text(body)
    if found is not None:
        raise _refuse(*found)
