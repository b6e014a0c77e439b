"""What a request may carry, against a real server: strict types, limits, token ids, text.

Each bad request is a 400 in its API's own error shape that names the field, arrives before
any work, and leaves the server serving (a stream running at the same moment finishes).
"""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import ollama
import pytest

from tests.integration.conftest import DEFAULT_MODEL, RunningServer

USER = [{"role": "user", "content": "Hi"}]
OPENAI_CHAT = {"model": DEFAULT_MODEL, "messages": USER, "max_tokens": 2}
OLLAMA_CHAT = {
    "model": DEFAULT_MODEL,
    "messages": USER,
    "stream": False,
    "options": {"num_predict": 2},
}
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def openai_400(server: RunningServer, path: str, body: dict[str, Any] | bytes) -> dict[str, Any]:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(server.url + path, content=content, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    return dict(error)


def ollama_400(server: RunningServer, path: str, body: dict[str, Any] | bytes) -> str:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(server.url + path, content=content)
    assert r.status_code == 400, r.text
    assert set(r.json()) == {"error"}
    return str(r.json()["error"])


# ---- strict types -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("stream", "yes"),
        ("stream", 1),
        ("max_tokens", "5"),
        ("max_tokens", 5.5),
        ("temperature", "0.5"),
        ("logprobs", "true"),
        ("n", True),
    ],
)
def test_openai_types_are_strict(server: RunningServer, field: str, value: Any) -> None:
    error = openai_400(server, "/v1/chat/completions", {**OPENAI_CHAT, field: value})
    assert error["param"] == field


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("stream", "yes", "stream"),
        ("raw", "false", "raw"),
        ("context", ["1"], "context"),
        ("options", {"temperature": "hot"}, "temperature"),
        ("options", {"seed": "42"}, "seed"),
        ("options", {"num_predict": 2.5}, "num_predict"),
        ("options", {"num_ctx": "4096"}, "num_ctx"),
        ("options", {"use_mmap": "yes"}, "use_mmap"),
    ],
)
def test_ollama_types_are_strict(server: RunningServer, field: str, value: Any, named: str) -> None:
    body = {"model": DEFAULT_MODEL, "prompt": "Hi", "options": {"num_predict": 2}, field: value}
    assert named in ollama_400(server, "/api/generate", body)


# ---- request limits (400 naming the field, in both APIs) ----------------------------------------


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"messages": USER * 2049}, "messages"),
        ({"tools": [TOOL] * 129}, "tools"),
        ({"stop": ["x"] * 17}, "stop"),
        ({"stop": "x" * 1025}, "stop"),
        ({"grammar": "root ::= " + '"a" ' * 40_000}, "grammar"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}] * 257}]},
            "messages.0.content",
        ),
    ],
)
def test_openai_chat_limits(server: RunningServer, extra: dict[str, Any], param: str) -> None:
    assert openai_400(server, "/v1/chat/completions", {**OPENAI_CHAT, **extra})["param"] == param


def test_openai_embedding_and_prompt_limits(server: RunningServer) -> None:
    error = openai_400(server, "/v1/embeddings", {"model": DEFAULT_MODEL, "input": ["x"] * 2049})
    assert error["param"] == "input"
    error = openai_400(server, "/v1/completions", {"model": DEFAULT_MODEL, "prompt": ["x"] * 65})
    assert error["param"] == "prompt"
    body = {"model": DEFAULT_MODEL, "prompt": ["x"] * 40, "n": 2, "max_tokens": 1}
    error = openai_400(server, "/v1/completions", body)  # 80 sequences: more than ever queued
    assert error["param"] == "prompt" and "sequences" in error["message"]


@pytest.mark.parametrize(
    ("path", "extra", "named"),
    [
        ("/api/chat", {"messages": USER * 2049}, "messages"),
        ("/api/chat", {"tools": [TOOL] * 129}, "tools"),
        ("/api/chat", {"options": {"stop": ["x"] * 17}}, "stop"),
        ("/api/chat", {"options": {"stop": "x" * 1025}}, "stop"),
        (
            "/api/chat",
            {"messages": [{"role": "user", "content": "x", "images": ["a"] * 257}]},
            "images",
        ),
        ("/api/embed", {"input": ["x"] * 2049}, "input"),
    ],
)
def test_ollama_limits(server: RunningServer, path: str, extra: dict[str, Any], named: str) -> None:
    assert named in ollama_400(server, path, {**OLLAMA_CHAT, **extra})


# ---- token ids are checked before they reach llama_decode --------------------------------------


def test_a_bad_context_is_400_and_a_concurrent_stream_finishes(server: RunningServer) -> None:
    started = threading.Event()
    result: dict[str, Any] = {}

    def stream() -> None:
        client = ollama.Client(host=server.url)
        parts = []
        for part in client.generate(
            model=DEFAULT_MODEL,
            prompt="Count to twenty:",
            stream=True,
            options={"num_predict": 48, "temperature": 0},
        ):
            started.set()
            parts.append(part)
        result["parts"] = parts

    worker = threading.Thread(target=stream)
    worker.start()
    assert started.wait(60)
    for context in ([99_999_999], [-1], [1, 2, 49_152]):
        body = {"model": DEFAULT_MODEL, "prompt": "Hi", "context": context, "stream": False}
        assert "context" in ollama_400(server, "/api/generate", body)
    worker.join(120)
    parts = result["parts"]  # no error line: the stream ended as streams end
    assert parts[-1].done and parts[-1].done_reason in ("stop", "length")
    assert parts[-1].eval_count > 0 and "".join(p.response for p in parts).strip()


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/completions", {"prompt": [99_999_999], "max_tokens": 2}, "prompt"),
        ("/v1/completions", {"prompt": [[1, 2], [-3]], "max_tokens": 2}, "prompt"),
        ("/v1/chat/completions", {"messages": USER, "logit_bias": {"99999999": 1}}, "logit_bias"),
        ("/v1/chat/completions", {"messages": USER, "logit_bias": {"-1": 1}}, "logit_bias"),
        ("/v1/embeddings", {"input": [[5, 49_152]]}, "input"),
    ],
)
def test_openai_token_ids_outside_the_vocabulary_are_400(
    server: RunningServer, path: str, body: dict[str, Any], param: str
) -> None:
    error = openai_400(server, path, {"model": DEFAULT_MODEL, **body})
    assert error["param"] == param


# ---- text that cannot be tokenized -------------------------------------------------------------

NUL = '"a\\u0000b"'
SURROGATE = '"a\\ud800b"'


@pytest.mark.parametrize("bad", [NUL, SURROGATE, '"\\udc00"'])
@pytest.mark.parametrize(
    ("path", "template", "param"),
    [
        (
            "/v1/chat/completions",
            '{"model": "%s", "messages": [{"role": "user", "content": BAD}]}',
            "messages.0.content",
        ),
        (
            "/v1/chat/completions",
            '{"model": BAD, "messages": [{"role": "user", "content": "x"}]}',
            "model",
        ),
        (
            "/v1/chat/completions",
            '{"model": "%s", "messages": [{"role": "user", "content": "x"}], "stop": [BAD]}',
            "stop.0",
        ),
        ("/v1/completions", '{"model": "%s", "prompt": BAD}', "prompt"),
        ("/v1/embeddings", '{"model": "%s", "input": [BAD]}', "input.0"),
        (
            "/v1/chat/completions",
            '{"model": "%s", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": {"name": "f", "description": BAD}}]}',
            "tools.0.function.description",
        ),
    ],
)
def test_openai_untokenizable_text_is_400(
    server: RunningServer, path: str, template: str, param: str, bad: str
) -> None:
    raw = template.replace("%s", DEFAULT_MODEL).replace("BAD", bad)
    assert openai_400(server, path, raw.encode())["param"] == param


@pytest.mark.parametrize("bad", [NUL, SURROGATE])
@pytest.mark.parametrize(
    ("path", "template", "named"),
    [
        (
            "/api/chat",
            '{"model": "%s", "stream": false, "messages": [{"role": "user", "content": BAD}]}',
            "messages.0.content",
        ),
        ("/api/generate", '{"model": "%s", "stream": false, "prompt": BAD}', "prompt"),
        (
            "/api/generate",
            '{"model": "%s", "stream": false, "prompt": "x", "system": BAD}',
            "system",
        ),
        ("/api/show", '{"model": BAD}', "model"),
        ("/api/copy", '{"source": "%s", "destination": BAD}', "destination"),
        ("/api/embed", '{"model": "%s", "input": [BAD]}', "input.0"),
        (
            "/api/chat",
            '{"model": "%s", "messages": [], "options": {"stop": [BAD]}}',
            "options.stop.0",
        ),
    ],
)
def test_ollama_untokenizable_text_is_400(
    server: RunningServer, path: str, template: str, named: str, bad: str
) -> None:
    raw = template.replace("%s", DEFAULT_MODEL).replace("BAD", bad)
    assert named in ollama_400(server, path, raw.encode())


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/chat"])
def test_invalid_utf8_is_400(server: RunningServer, path: str) -> None:
    raw = b'{"model": "smollm2:135m", "messages": [{"role": "user", "content": "a\xff\xfeb"}]}'
    if path.startswith("/v1"):
        assert "UTF-8" in openai_400(server, path, raw)["message"]
    else:
        assert "UTF-8" in ollama_400(server, path, raw)
    assert httpx.get(server.url + "/health").status_code == 200
