"""POST /recommend over the app with synthetic models: answers, 4xx bodies, the server keeps on."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient


def test_recommend_answers_from_rules_with_two_lines_of_reason(client: TestClient) -> None:
    response = client.post(
        "/recommend", json={"model": "fake", "memory": "8GiB", "ctx": 1024, "kv_type": "q8_0"}
    )
    assert response.status_code == 200
    answer = response.json()
    assert answer["model"] == "fake:1b" and answer["quant"] == "Q8_0"
    assert answer["basis"] == "rules"
    assert (answer["memory_budget"], answer["budget_source"]) == (8 * 2**30, "given")
    assert (answer["context"], answer["type_k"], answer["type_v"]) == (1024, "q8_0", "q8_0")
    assert len(answer["reason"]) == 2 and answer["reason"][0].startswith("fake:1b (Q8_0) needs")
    assert [c["model"] for c in answer["candidates"]] == ["fake:1b"]


def test_recommend_says_when_nothing_fits(client: TestClient) -> None:
    answer = client.post("/recommend", json={"model": "fake:1b", "memory": 1000}).json()
    assert answer["model"] is None and answer["basis"] == "none"
    assert answer["reason"][0].startswith("Nothing fits")
    assert answer["candidates"][0]["fits"] is False


def test_recommend_detects_memory_when_none_is_given(client: TestClient) -> None:
    answer = client.post("/recommend", json={"model": "fake"}).json()
    assert answer["budget_source"] == "detected" and answer["memory_budget"] > 0


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": "fake", "memory": "lots"}, 400, "memory"),
        ({"model": "fake", "memory": 0}, 400, "memory"),
        ({"model": "fake", "ctx": 0}, 400, "ctx"),
        ({"model": "fake", "kv_type": "q9"}, 400, "kv_type"),
        ({"model": "fake", "color": "red"}, 400, "color"),
        ({"memory": "8GiB"}, 400, "model"),
        ({"model": "Not A Name!"}, 400, None),
        ({"model": "nosuch"}, 404, None),
        ({"model": "fake:2b"}, 404, None),
    ],
)
def test_bad_requests_get_a_4xx_in_openai_shape(
    client: TestClient, body: dict[str, object], status: int, param: str | None
) -> None:
    response = client.post("/recommend", json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    assert client.get("/health").status_code == 200  # still serving
