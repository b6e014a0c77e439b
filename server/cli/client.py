"""The HTTP client `gguf-serve run` talks through: Ollama's API of a server, local or in-process.

One client for both cases, so a chat in a terminal goes through exactly the routes every other
Ollama client uses (the same validation, the same errors). The API key, when the settings hold
one, rides along as `Authorization: Bearer`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from server.errors import GGUFServeError, ModelNotFound
from server.registry import PullProgress

_PROBE_TIMEOUT = httpx.Timeout(2.0, connect=1.0)
# Generation can pause for a long while (a model loading, a long prompt): no read timeout.
_CHAT_TIMEOUT = httpx.Timeout(None, connect=5.0)


class ServerError(GGUFServeError):
    """The server refused a request or could not be reached; `message` says what it said."""


class Unauthorized(ServerError):
    """The server wants an API key we do not have (or rejected ours)."""


@dataclass(frozen=True)
class ChatPiece:
    """One NDJSON line of /api/chat: text, and on the last piece the statistics."""

    text: str
    done: bool = False
    stats: dict[str, Any] = field(default_factory=dict)


class ServerClient:
    """Ollama-API calls `run` needs: probe, show, pull, load, chat."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url
        self._http = httpx.Client(
            base_url=base_url, headers=headers, transport=transport, timeout=_CHAT_TIMEOUT
        )

    def close(self) -> None:
        self._http.close()

    def reachable(self) -> bool:
        """Whether something answers at the address (any HTTP answer counts, 401 included)."""
        try:
            self._http.get("/api/version", timeout=_PROBE_TIMEOUT)
        except httpx.TransportError:
            return False
        return True

    def show(self, model: str) -> dict[str, Any]:
        """/api/show for `model`. Raises ModelNotFound when the server does not have it."""
        response = self._request("POST", "/api/show", json={"model": model})
        body: dict[str, Any] = response.json()
        return body

    def pull(
        self, model: str, on_progress: Callable[[PullProgress], None], *, insecure: bool = False
    ) -> None:
        """Pull `model` into the server's store, reporting each progress line as it arrives."""
        payload = {"model": model, "insecure": insecure, "stream": True}
        with self._stream("/api/pull", payload) as lines:
            for line in lines:
                on_progress(
                    PullProgress(
                        status=str(line.get("status", "")),
                        completed=line.get("completed"),
                        total=line.get("total"),
                        digest=line.get("digest"),
                    )
                )

    def load(
        self, model: str, keep_alive: str | None = None, options: dict[str, Any] | None = None
    ) -> None:
        """Load `model` (a chat request without messages), so the first answer starts quickly;
        `options` are the chat's, so load-time ones (num_ctx, ...) do not reload it later."""
        payload: dict[str, Any] = {"model": model, "messages": []}
        if keep_alive is not None:
            payload["keep_alive"] = keep_alive
        if options:
            payload["options"] = options
        self._request("POST", "/api/chat", json=payload)

    @contextmanager
    def chat(self, payload: dict[str, Any]) -> Iterator[Iterator[ChatPiece]]:
        """A streamed /api/chat; leaving the block early hangs up, which stops the generation."""
        with self._stream("/api/chat", {**payload, "stream": True}) as lines:
            yield (_piece(line) for line in lines)

    # ---- plumbing ------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ServerError(f"cannot reach the server at {self.base_url}: {exc}") from None
        _raise_for_status(response)
        return response

    @contextmanager
    def _stream(self, path: str, payload: dict[str, Any]) -> Iterator[Iterator[dict[str, Any]]]:
        try:
            with self._http.stream("POST", path, json=payload) as response:
                if response.status_code >= 400:
                    response.read()
                    _raise_for_status(response)
                yield _ndjson(response)
        except httpx.TransportError as exc:
            raise ServerError(f"lost the server at {self.base_url}: {exc}") from None


def _ndjson(response: httpx.Response) -> Iterator[dict[str, Any]]:
    for raw in response.iter_lines():
        if not raw.strip():
            continue
        line = json.loads(raw)
        if not isinstance(line, dict):
            raise ServerError(f"unexpected line from the server: {raw[:80]}")
        if "error" in line:  # an error after the first byte arrives in-band
            raise ServerError(str(line["error"]))
        yield line


def _piece(line: dict[str, Any]) -> ChatPiece:
    message = line.get("message") or {}
    done = bool(line.get("done"))
    return ChatPiece(text=str(message.get("content") or ""), done=done, stats=line if done else {})


def _raise_for_status(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict):  # an OpenAI-shaped body (the edge may answer in either shape)
        error = error.get("message")
    message = str(error or response.reason_phrase or f"HTTP {response.status_code}")
    if response.status_code == 401:
        raise Unauthorized(
            f"{message} (the server at {response.request.url.host or 'its socket'} wants an API"
            " key: set api_keys or GGUF_SERVE_API_KEYS to one of its keys)"
        )
    if response.status_code == 404:
        raise ModelNotFound(message)
    raise ServerError(message)
