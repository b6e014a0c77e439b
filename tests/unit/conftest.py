"""Unit tests: no model file and no network. Also the OpenAI app over a fake engine, shared by
the HTTP-layer unit tests.

Both rules are enforced here: a unit test that asks for the real model's fixtures is a
collection error, and a connection to anything but loopback fails the test.
"""

from __future__ import annotations

import ipaddress
import json
import socket
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
UNIT_DIR = Path(__file__).resolve().parent
_MODEL_FIXTURES = frozenset({"model_home", "default_model_path", "server", "base_url"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if UNIT_DIR in Path(str(item.path)).parents:
            needs = _MODEL_FIXTURES & set(getattr(item, "fixturenames", ()))
            if needs:
                raise pytest.UsageError(
                    f"{item.nodeid} uses {sorted(needs)}: tests that need the real model "
                    "belong in tests/integration"
                )


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit tests never reach the network: a connection off loopback raises at once."""
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> None:
        host = address[0] if isinstance(address, tuple) else None
        if host is not None:
            try:
                loopback = ipaddress.ip_address(host).is_loopback
            except ValueError:
                loopback = host == "localhost"
            if not loopback:
                raise OSError(f"unit tests may not connect to {host}")
        real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def client(tmp_home: Path, make_gguf: MakeGGUF, engine: FakeEngine) -> Iterator[TestClient]:
    settings = load_settings(home=tmp_home, default_model=MODEL)
    registry = Registry(settings)
    # a trained context long enough for every num_ctx the tests ask for (plans check it)
    registry.import_file(make_gguf(context_length=32768), MODEL)
    registry.import_file(
        make_gguf("other.gguf", seed=1, context_length=32768), "hf.co/someone/Some-Repo-GGUF:Q8_0"
    )
    app = create_app(settings, registry=registry, engine_factory=fake_factory(engine))  # type: ignore[arg-type]
    with TestClient(app, base_url="http://localhost") as test_client:  # a Host the edge serves
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
