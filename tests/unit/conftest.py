"""The OpenAI app over a fake engine, shared by the HTTP-layer unit tests."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.registry import Registry
from server.settings import load_settings
from tests.conftest import MakeGGUF
from tests.fakes import FakeEngine, fake_factory

MODEL = "fake:1b"


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def client(tmp_home: Path, make_gguf: MakeGGUF, engine: FakeEngine) -> Iterator[TestClient]:
    settings = load_settings(home=tmp_home, default_model=MODEL)
    registry = Registry(settings)
    registry.import_file(make_gguf(), MODEL)
    registry.import_file(make_gguf("other.gguf", seed=1), "hf.co/someone/Some-Repo-GGUF:Q8_0")
    app = create_app(settings, registry=registry, engine_factory=fake_factory(engine))  # type: ignore[arg-type]
    with TestClient(app) as test_client:
        deadline = time.monotonic() + 5
        while test_client.get("/health").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.01)  # the default model is preloaded in the background
        yield test_client


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "Hi there"}], **extra}


def sse_payloads(text: str) -> list[str]:
    events = [e for e in text.split("\n\n") if e.strip()]
    out = []
    for event in events:
        lines = [line for line in event.splitlines() if not line.startswith(":")]
        assert len(lines) == 1 and lines[0].startswith("data: "), event
        out.append(lines[0][len("data: ") :])
    return out


def sse_chunks(client: TestClient, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON chunks of a streamed response (the final [DONE] checked and dropped)."""
    with client.stream("POST", path, json=body) as r:
        assert r.status_code == 200, r.read()
        payloads = sse_payloads(r.read().decode())
    assert payloads[-1] == "[DONE]"
    return [json.loads(p) for p in payloads[:-1]]
