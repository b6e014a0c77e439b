"""The edge in front of the app (fake engine): the rules that need no model, over HTTP."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from tests.unit.conftest import MODEL, chat


def test_insecure_pull_from_a_client_not_on_loopback_is_403(client: TestClient) -> None:
    # TestClient's peer address is "testclient": not loopback, as a LAN client would be.
    r = client.post("/api/pull", json={"model": "127.0.0.1:9/a/b", "insecure": True})
    assert r.status_code == 403
    assert "allow_insecure_pulls" in r.json()["error"]


def test_declared_oversize_body_is_413_in_each_shape(client: TestClient) -> None:
    big = b"x" * (4 * 1024 * 1024 + 1)
    r = client.post(
        "/v1/chat/completions", content=big, headers={"content-type": "application/json"}
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    r = client.post("/api/chat", content=big)
    assert r.status_code == 413 and "max_body_bytes" in r.json()["error"]


def test_form_encoded_body_without_origin_is_json_and_cross_origin_is_415(
    client: TestClient,
) -> None:
    body = json.dumps(chat()).encode()
    form = {"content-type": "application/x-www-form-urlencoded"}
    assert client.post("/v1/chat/completions", content=body, headers=form).status_code == 200
    r = client.post(
        "/v1/chat/completions",
        content=body,
        headers={**form, "origin": "http://localhost:5173"},
    )
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"


def test_union_errors_name_the_field_not_the_type(client: TestClient) -> None:
    parts = [{"type": "text", "text": "x"}] * 257
    r = client.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": parts}]},
    )
    error = r.json()["error"]
    assert r.status_code == 400 and error["param"] == "messages.0.content"
    assert "at most 256" in error["message"] and "valid string" not in error["message"]
