"""The OpenAI HTTP layer over a fake engine: framing, schemas and error bodies (milliseconds)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.registry import Registry
from server.settings import load_settings
from tests.conftest import MakeGGUF
from tests.fakes import REPLY, FakeEngine, fake_factory
from tests.unit.conftest import MODEL, chat, sse_payloads


def test_non_stream_chat(client: TestClient, engine: FakeEngine) -> None:
    r = client.post("/v1/chat/completions", json=chat())
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == MODEL
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": REPLY,
        "tool_calls": None,
    }
    assert body["choices"][0]["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["prompt_tokens"] == len(engine.submitted[0].prompt_tokens)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    # the chat template was applied (ChatML fallback of the fake model)
    prompt = "".join(chr(t) for t in engine.submitted[0].prompt_tokens)
    assert prompt.endswith("<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n")


def test_stream_framing_with_usage(client: TestClient) -> None:
    with client.stream(
        "POST",
        "/v1/chat/completions",
        json=chat(stream=True, stream_options={"include_usage": True}),
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        payloads = sse_payloads(r.read().decode())
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert len({c["id"] for c in chunks}) == 1
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = "".join(
        c["choices"][0]["delta"].get("content", "") for c in chunks[1:] if c["choices"]
    )
    assert content == REPLY
    finish = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finish) == 1 and finish[0]["choices"][0]["delta"] == {}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    assert chunks.index(finish[0]) == len(chunks) - 2


def test_stream_without_usage_has_no_usage_chunk(client: TestClient) -> None:
    with client.stream("POST", "/v1/chat/completions", json=chat(stream=True)) as r:
        payloads = sse_payloads(r.read().decode())
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all(c["choices"] for c in chunks)
    assert all(c.get("usage") is None for c in chunks)


def test_sampling_fields_reach_the_engine(client: TestClient, engine: FakeEngine) -> None:
    r = client.post(
        "/v1/chat/completions",
        json=chat(
            max_tokens=3,
            max_completion_tokens=2,
            stop=["x"],
            temperature=0.3,
            top_p=0.5,
            seed=7,
            presence_penalty=0.5,
            frequency_penalty=-0.5,
            top_k=5,
            min_p=0.1,
            repeat_penalty=1.2,
            repeat_last_n=32,
            logit_bias={"42": -100, "7": 5.5},
        ),
    )
    assert r.status_code == 200
    req = engine.submitted[-1]
    assert req.max_tokens == 2  # max_completion_tokens wins
    assert req.stop == ("x",)
    s = req.sampling
    assert (s.top_k, s.min_p, s.repeat_penalty, s.repeat_last_n) == (5, 0.1, 1.2, 32)
    assert s.logit_bias == ((7, 5.5), (42, -100.0))
    assert (s.temperature, s.top_p, s.seed, s.presence_penalty, s.frequency_penalty) == (
        0.3,
        0.5,
        7,
        0.5,
        -0.5,
    )
    assert r.json()["choices"][0]["finish_reason"] == "length"


def test_stop_text_is_not_returned(client: TestClient) -> None:
    r = client.post("/v1/chat/completions", json=chat(stop="nice"))
    assert r.json()["choices"][0]["message"]["content"] == "Hello from the fake engine , "


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": MODEL, "messages": []}, "messages"),
        ({"model": MODEL}, "messages"),
        ({"model": MODEL, "messages": "hi"}, "messages"),
        ({"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
        (chat(temperature=3), "temperature"),
        (chat(temperature="hot"), "temperature"),
        (chat(top_p=-1), "top_p"),
        (chat(max_tokens=0), "max_tokens"),
        (chat(presence_penalty=9), "presence_penalty"),
        (chat(stop=["a"] * 17), "stop"),
        (chat(stream="sometimes"), "stream"),
        (chat(n=0), "n"),
        (chat(logit_bias={"5": 101}), "logit_bias"),
        (chat(logit_bias={"x": 1}), "logit_bias.x.[key]"),
        (chat(top_k=-1), "top_k"),
    ],
)
def test_bad_requests_are_400_in_openai_shape(
    client: TestClient, body: dict[str, Any], param: str
) -> None:
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param
    assert client.get("/health").status_code == 200  # still serving


@pytest.mark.parametrize("raw", [b"{bad json", b"", b"[1, 2]", b"null"])
def test_malformed_json_is_400(client: TestClient, raw: bytes) -> None:
    r = client.post(
        "/v1/chat/completions", content=raw, headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_form_encoded_json_body_is_accepted_like_curl_d(client: TestClient) -> None:
    r = client.post(
        "/v1/chat/completions",
        content=json.dumps(chat()).encode(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200


def test_unknown_model_is_404_model_not_found(client: TestClient) -> None:
    r = client.post("/v1/chat/completions", json={**chat(), "model": "nope:7b"})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found"
    r = client.post("/v1/chat/completions", json={**chat(), "model": "../../etc/passwd"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_model_name"


@pytest.mark.parametrize("stream", [False, True])
def test_context_length_exceeded_is_400_before_streaming(client: TestClient, stream: bool) -> None:
    body = chat(stream=stream)
    body["messages"][0]["content"] = "x" * 1000
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["error"]["code"] == "context_length_exceeded"


def test_overload_is_503_with_retry_after(client: TestClient, engine: FakeEngine) -> None:
    engine.overloaded = True
    r = client.post("/v1/chat/completions", json=chat(stream=True))
    assert r.status_code == 503
    assert r.headers["retry-after"] == "2"
    assert r.json()["error"]["type"] == "server_overloaded"


def test_image_parts_are_refused(client: TestClient) -> None:
    body = chat()
    body["messages"][0]["content"] = [{"type": "image_url", "image_url": {"url": "data:,"}}]
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "messages.0"
    assert r.json()["error"]["code"] == "unsupported_parameter"


def test_text_parts_and_developer_role(client: TestClient, engine: FakeEngine) -> None:
    body = {
        "model": MODEL,
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}],
            },
        ],
    }
    assert client.post("/v1/chat/completions", json=body).status_code == 200
    prompt = "".join(chr(t) for t in engine.submitted[-1].prompt_tokens)
    assert "<|im_start|>system\nBe brief.<|im_end|>" in prompt
    assert "<|im_start|>user\nHello<|im_end|>" in prompt


def test_models_list_and_get(client: TestClient) -> None:
    data = client.get("/v1/models").json()
    assert data["object"] == "list"
    ids = {m["id"] for m in data["data"]}
    assert ids == {MODEL, "hf.co/someone/Some-Repo-GGUF:Q8_0"}
    r = client.get("/v1/models/hf.co/someone/Some-Repo-GGUF:Q8_0")
    assert r.status_code == 200 and r.json()["owned_by"] == "someone"
    assert client.get("/v1/models/FAKE:1B").json()["id"] == MODEL  # case-insensitive
    r = client.get("/v1/models/missing:1b")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_unknown_route_and_wrong_method(client: TestClient) -> None:
    r = client.get("/v1/nothing")
    assert r.status_code == 404 and "error" in r.json()
    r = client.get("/v1/chat/completions")
    assert r.status_code == 405 and r.json()["error"]["type"] == "invalid_request_error"


def test_health_version_slots(client: TestClient) -> None:
    assert client.get("/health").json()["status"] == "ok"
    assert client.get("/version").json()["version"]
    slots = client.get("/slots").json()
    assert slots[0]["model"] == MODEL and slots[0]["slots"][0]["state"] == "idle"


def test_missing_model_field_uses_the_default_model(client: TestClient) -> None:
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200 and r.json()["model"] == MODEL


def test_health_is_503_while_the_default_model_loads(tmp_home: Path, make_gguf: MakeGGUF) -> None:
    import threading

    gate = threading.Event()
    engine = FakeEngine()
    inner = fake_factory(engine)

    def slow_factory(*args: Any) -> Any:
        gate.wait(5)
        return inner(*args)  # type: ignore[operator]

    settings = load_settings(home=tmp_home, default_model=MODEL)
    registry = Registry(settings)
    registry.import_file(make_gguf(context_length=32768), MODEL)
    app = create_app(settings, registry=registry, engine_factory=slow_factory)
    with TestClient(app, base_url="http://localhost") as c:
        r = c.get("/health")
        assert r.status_code == 503 and r.json()["status"] == "starting"
        gate.set()
        deadline = time.monotonic() + 5
        while c.get("/health").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert c.get("/health").json() == {"status": "ok", "models_loaded": 1}


@pytest.mark.parametrize(
    "text", ["plain", 'quo"te \\ back', "line\nbreak\ttab", "héllo 世界 🙂", "\u2028\x01", ""]
)
def test_fast_content_chunks_equal_the_pydantic_schema(text: str) -> None:
    from server.api.openai.chat_protocol import ChatCompletionChunk, ChunkChoice, Delta
    from server.api.openai.chunks import ChunkEncoder

    enc = ChunkEncoder("chatcmpl-x", 123, "m:1b", "fp")
    for index in (0, 3):
        fast = json.loads(enc.content(index, text))
        slow = ChatCompletionChunk(
            id="chatcmpl-x",
            created=123,
            model="m:1b",
            system_fingerprint="fp",
            choices=[ChunkChoice(index=index, delta=Delta(content=text))],
        ).model_dump(mode="json")
        assert fast == slow
