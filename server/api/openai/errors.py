"""The OpenAI error body: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

import json

from pydantic import BaseModel

from server.errors import GGUFServeError


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


def error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> dict[str, object]:
    return ErrorResponse(
        error=ErrorDetail(message=message, type=type_, param=param, code=code)
    ).model_dump()


def error_json(exc: GGUFServeError) -> str:
    """The error body as one SSE payload (an error after the stream has started)."""
    return json.dumps(error_body(exc.message, exc.type, exc.param, exc.code))
