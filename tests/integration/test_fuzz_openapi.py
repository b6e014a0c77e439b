"""Fuzz every operation of the server's own OpenAPI schema (schemathesis) against a real server
process with the real default model loaded.

Properties: no 5xx, the process never dies, and every 4xx carries the error body of the API the
route belongs to (OpenAI's `{"error": {message, type, param, code}}` or Ollama's
`{"error": "..."}`). Bounded in time: 20 examples per operation, no shrinking, and a
generated request that would generate text is held to a few tokens and choices (only those
counts are changed; every other field is as generated), so each finishes in a second or two.
`/api/pull` is left out and `/plan` reads no remote header (`remote: false`): with no network
every pull or header read of a generated name is a 502 from the source, which is right, not a
defect.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error

from server.app import create_app
from server.registry import Registry
from server.settings import load_settings
from tests.integration.conftest import DEFAULT_MODEL, RunningServer, start_server

EXAMPLES_PER_OPERATION = 20
EXCLUDED = ("/api/pull",)
MAX_NEW_TOKENS = 8
MAX_CHOICES = 2


@pytest.fixture(scope="module")
def fuzzed(
    default_model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """Its own store (generated requests copy, create and delete models) and short contexts."""
    home = tmp_path_factory.mktemp("fuzz-home")
    Registry(load_settings(home=home)).import_file(default_model_path, DEFAULT_MODEL)
    srv = start_server(
        home,
        tmp_path_factory.mktemp("fuzz-logs"),
        "--parallel",
        "2",
        GGUF_SERVE_LOAD__N_CTX="256",
        GGUF_SERVE_N_CTX_CAP="256",
    )
    yield srv
    code = srv.proc.poll()
    srv.stop()
    assert code is None, f"the server died during the fuzz run:\n{srv.log_tail()}"
    assert "Traceback" not in srv.log.read_text(errors="replace"), srv.log_tail(80)


def _openapi() -> dict[str, Any]:
    """The schema the server serves at /openapi.json, built from the same code without starting
    anything (schemathesis needs it when tests are collected, before a server runs)."""
    return create_app(load_settings(), preload=False).openapi()


schema = schemathesis.openapi.from_dict(_openapi()).exclude(path=list(EXCLUDED))


def error_in_api_shape(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx is an error body in the shape of its API."""
    if not 400 <= response.status_code < 500 or case.method.upper() == "HEAD":
        return None
    body = response.json()
    path = str(case.path)
    if path.startswith("/api/"):
        assert isinstance(body, dict) and set(body) == {"error"}, body
        assert isinstance(body["error"], str) and body["error"], body
    else:
        assert isinstance(body, dict) and set(body) == {"error"}, body
        assert set(body["error"]) == {"message", "type", "param", "code"}, body
        assert body["error"]["message"], body
    return True


def _bounded(body: Any, path: str) -> None:
    """Hold a generating request to MAX_NEW_TOKENS tokens and MAX_CHOICES choices, and let half
    of the generated model names be the model in the store (else almost every request would
    stop at "model not found" and the engine would never see the rest of the body)."""
    if not isinstance(body, dict):
        return
    if isinstance(body.get("model"), str) and len(body["model"]) % 2 == 0:
        body["model"] = DEFAULT_MODEL
    if path == "/plan":
        body["remote"] = False  # a header read over the network: no network here
    if path.startswith("/v1/"):
        for key in ("max_tokens", "max_completion_tokens"):
            value = body.get(key)
            if value is None or (type(value) is int and value > MAX_NEW_TOKENS):
                body[key] = MAX_NEW_TOKENS
        for key in ("n", "best_of"):
            if type(body.get(key)) is int and body[key] > MAX_CHOICES:
                body[key] = MAX_CHOICES
    elif path in ("/api/chat", "/api/generate"):
        if body.get("options") is None:
            body["options"] = {}
        options = body["options"]
        if isinstance(options, dict):
            value = options.get("num_predict")
            if value is None or (type(value) is int and not 0 < value <= MAX_NEW_TOKENS):
                options["num_predict"] = MAX_NEW_TOKENS


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    phases=[Phase.generate],  # schemathesis' coverage cases are unbounded in number
    suppress_health_check=list(HealthCheck),
    database=None,
    derandomize=True,
)
def test_every_operation(case: Any, fuzzed: RunningServer) -> None:
    _bounded(case.body, str(case.path))
    response = case.call(base_url=fuzzed.url, timeout=120)
    case.validate_response(response, checks=[not_a_server_error, error_in_api_shape])
    assert httpx.get(fuzzed.url + "/health", timeout=10).status_code == 200
