"""The FastAPI dependency that hands a route one of the services create_app put on app.state."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from fastapi import Request

T = TypeVar("T")


def from_state(name: str, kind: type[T]) -> Callable[[Request], T]:
    """A dependency returning `app.state.<name>`, checked to be a `kind` (a wiring mistake in
    create_app fails the first request loudly rather than later in a confusing way)."""

    def get(request: Request) -> T:
        service = getattr(request.app.state, name)
        if not isinstance(service, kind):
            raise TypeError(f"app.state.{name} is a {type(service).__name__}, not {kind.__name__}")
        return service

    get.__name__ = f"{name}_dependency"
    return get
