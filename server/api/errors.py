"""Map domain errors to HTTP status codes (one table for every API dialect)."""

from __future__ import annotations

from fastapi.exceptions import RequestValidationError

from server import errors as e
from server.api.openai.errors import error_body
from server.validation import describe, error_parts

_STATUS: list[tuple[type[e.GGUFServeError], int]] = [
    (e.ModelNotFound, 404),
    (e.Overloaded, 503),
    (e.PayloadTooLarge, 413),
    (e.Forbidden, 403),
    (e.ModelUnavailable, 503),
    (e.InvalidRequest, 400),
    (e.InvalidModelFile, 400),
    (e.ModelLoadError, 422),  # not retried by the SDKs (they retry 408, 409, 429, 5xx)
    (e.ModelTemplateError, 422),
    (e.ClientDisconnected, 499),  # nginx's "client closed request": nobody reads it
    (e.ChecksumMismatch, 502),
    (e.PullError, 502),
    (e.EngineError, 500),
]


def status_for(exc: e.GGUFServeError) -> int:
    """HTTP status for a domain error (its most specific listed class wins)."""
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def headers_for(exc: e.GGUFServeError) -> dict[str, str]:
    """Extra response headers: Retry-After for an overloaded queue or a model that is
    restarting; for a body past its limit, Connection: close, so the server stops reading the
    rest of it."""
    if isinstance(exc, e.Overloaded | e.ModelUnavailable):
        return {"Retry-After": str(exc.retry_after)}
    if isinstance(exc, e.PayloadTooLarge):
        return {"Connection": "close"}
    return {}


def is_ollama_path(path: str) -> bool:
    """Ollama's routes live under /api; every other route answers in OpenAI's error shape."""
    return path.startswith("/api/")


def error_payload(
    path: str, message: str, type_: str, param: str | None = None, code: str | None = None
) -> dict[str, object]:
    """The error body in the shape of the API that owns `path`."""
    if is_ollama_path(path):
        return {"error": message}
    return error_body(message, type_, param, code)


def describe_validation(exc: RequestValidationError) -> tuple[str, str | None]:
    """One readable message and the offending parameter for a request-validation failure."""
    errors = exc.errors()
    for err in errors:
        if err.get("type") == "json_invalid":
            detail = str(err.get("ctx", {}).get("error", ""))
            return f"the request body is not valid JSON: {detail}", None
    located = [where for where, _ in error_parts(errors, skip=("body",)) if where]
    return describe(errors, skip=("body",)), (located[0] if located else None)
