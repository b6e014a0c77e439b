"""Ollama clients that send `null` for what they do not set (issue: 400 `invalid option`).

The real `langchain-ollama` package (chat, stream, structured output, embeddings) and raw
JSON against a real server: null options and null fields are unset, wrong types still a 400.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from langchain_ollama import ChatOllama, OllamaEmbeddings
from pydantic import BaseModel

from tests.integration.conftest import DEFAULT_MODEL, RunningServer

NULL_OPTIONS = {
    "temperature": None,
    "num_ctx": None,
    "num_gpu": None,
    "num_thread": None,
    "top_k": None,
    "top_p": None,
    "repeat_penalty": None,
    "repeat_last_n": None,
    "stop": None,
    "mirostat": None,
    "seed": None,
    "num_predict": None,
}


@pytest.fixture(scope="module")
def chat(server: RunningServer) -> ChatOllama:
    return ChatOllama(
        model=DEFAULT_MODEL, base_url=server.url, temperature=0, num_predict=24, keep_alive="5m"
    )


def test_langchain_chat_and_stream(chat: ChatOllama) -> None:
    answer = chat.invoke("Name a colour.")
    assert isinstance(answer.content, str) and answer.content
    assert answer.response_metadata["done_reason"] in ("stop", "length")
    pieces = [chunk.content for chunk in chat.stream("Name a colour.")]
    assert len(pieces) > 1 and "".join(str(p) for p in pieces) == answer.content  # greedy


class Person(BaseModel):
    name: str
    age: int


def test_langchain_structured_output(server: RunningServer) -> None:
    model = ChatOllama(model=DEFAULT_MODEL, base_url=server.url, temperature=0, num_predict=60)
    person = model.with_structured_output(Person).invoke("Invent a person.")
    assert isinstance(person, Person) and person.name


def test_langchain_embeddings(server: RunningServer) -> None:
    embeddings = OllamaEmbeddings(model=DEFAULT_MODEL, base_url=server.url)
    one = embeddings.embed_query("The cat sat on the mat.")
    many = embeddings.embed_documents(["The cat sat on the mat.", "Stock prices fell."])
    assert len(one) == 576 and len(many) == 2
    assert max(abs(a - b) for a, b in zip(one, many[0], strict=True)) < 1e-4


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/chat", {"messages": [{"role": "user", "content": "Hi", "images": None}]}),
        ("/api/generate", {"prompt": "Hi", "system": None, "raw": None, "context": None}),
        ("/api/embed", {"input": ["Hi"], "truncate": None, "dimensions": None}),
        ("/api/embeddings", {"prompt": "Hi"}),
    ],
)
def test_raw_null_options_and_fields_are_unset(
    server: RunningServer, path: str, body: dict[str, Any]
) -> None:
    options = {**NULL_OPTIONS, "num_predict": 4} if "embed" not in path else NULL_OPTIONS
    payload = {
        "model": DEFAULT_MODEL,
        "stream": None,
        "keep_alive": None,
        "format": None,
        "options": options,
        **body,
    }
    r = httpx.post(f"{server.url}{path}", json=payload, timeout=120)
    assert r.status_code == 200, r.text
    lines = [json.loads(line) for line in r.text.splitlines() if line]
    final = lines[-1]
    if path == "/api/embed":
        assert len(final["embeddings"][0]) == 576
    elif path == "/api/embeddings":
        assert len(final["embedding"]) == 576
    else:
        assert final["done"] is True and len(lines) > 1  # null stream = the default: streamed


@pytest.mark.parametrize("path", ["/api/chat", "/api/generate", "/api/embed", "/api/embeddings"])
def test_wrong_option_types_are_still_400(server: RunningServer, path: str) -> None:
    payload: dict[str, Any] = {
        "model": DEFAULT_MODEL,
        "options": {"temperature": "hot", "top_k": None},
        "messages": [{"role": "user", "content": "Hi"}],
        "prompt": "Hi",
        "input": "Hi",
    }
    r = httpx.post(f"{server.url}{path}", json=payload, timeout=60)
    assert r.status_code == 400
    assert r.json() == {"error": "invalid option temperature: Input should be a valid number"}
