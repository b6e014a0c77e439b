"""/metrics after real traffic: parsed with prometheus-client's own parser, compared with what
the answers themselves reported (usage, eval counts), on a server of one slot and no queue so
that a second concurrent request is refused (queue_full) and a scrape sees an idle server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import RunningServer, start_server

MODEL = "smollm2:135m"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def one_slot(model_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    srv = start_server(
        model_home,
        tmp_path_factory.mktemp("metrics"),
        "--parallel",
        "1",
        GGUF_SERVE_MAX_QUEUE="0",
    )
    yield srv
    srv.stop()


def scrape(server: RunningServer) -> Samples:
    response = httpx.get(f"{server.url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        assert family.name.startswith("gguf_serve_"), family.name
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def chat(server: RunningServer, content: str, max_tokens: int) -> dict[str, Any]:
    response = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={
            "model": MODEL,
            "messages": [{"role": "user", "content": content}],
            "temperature": 0,
            "max_tokens": max_tokens,
        },
        timeout=300,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_idle(server: RunningServer) -> None:
    deadline = time.monotonic() + 15
    while any(s["state"] != "idle" for s in server.slots()) and time.monotonic() < deadline:
        time.sleep(0.05)


def test_counters_and_histograms_follow_known_requests(one_slot: RunningServer) -> None:
    before = scrape(one_slot)
    answers = [
        chat(one_slot, "Write a poem about the sea.", 5),
        chat(one_slot, "Write a poem about the sea.", 5),  # same prompt: its prefix is reused
        chat(one_slot, "Name three colours.", 6),
    ]
    with httpx.stream(
        "POST",
        f"{one_slot.url}/api/chat",
        json={
            "model": MODEL,
            "messages": [{"role": "user", "content": "Count to ten."}],
            "options": {"temperature": 0, "num_predict": 4},
        },
        timeout=300,
    ) as response:
        lines = [json.loads(line) for line in response.iter_lines() if line.strip()]
    ollama = lines[-1]
    assert ollama["done"] is True
    after = scrape(one_slot)

    usages = [a["usage"] for a in answers]
    assert usages[1]["prompt_tokens_details"]["cached_tokens"] > 0
    model = {"model": MODEL}
    prompt = sum(u["prompt_tokens"] for u in usages) + ollama["prompt_eval_count"]
    generated = sum(u["completion_tokens"] for u in usages) + ollama["eval_count"]
    cached = sum(u["prompt_tokens_details"]["cached_tokens"] for u in usages)
    assert delta(before, after, "gguf_serve_prompt_tokens_total", **model) == prompt
    assert delta(before, after, "gguf_serve_generation_tokens_total", **model) == generated
    assert delta(before, after, "gguf_serve_prompt_tokens_cached_total", **model) >= cached
    finished = {"model": MODEL, "outcome": "length"}
    assert delta(before, after, "gguf_serve_engine_requests_total", **finished) == 4
    for api, count in (("openai", 3), ("ollama", 1)):
        completed = {"api": api, "model": MODEL, "outcome": "completed"}
        assert delta(before, after, "gguf_serve_requests_total", **completed) == count

    # One observation per request in each histogram.
    for histogram in (
        "gguf_serve_time_to_first_token_seconds",
        "gguf_serve_request_queue_time_seconds",
        "gguf_serve_time_per_output_token_seconds",  # every answer had more than one token
    ):
        assert delta(before, after, f"{histogram}_count", **model) == 4, histogram
        assert delta(before, after, f"{histogram}_sum", **model) > 0, histogram
        inf = {"model": MODEL, "le": "+Inf"}
        assert delta(before, after, f"{histogram}_bucket", **inf) == 4, histogram

    openai = {"api": "openai", "route": "/v1/chat/completions", "status": "200"}
    ollama_route = {"api": "ollama", "route": "/api/chat", "status": "200"}
    assert delta(before, after, "gguf_serve_http_requests_total", **openai) == 3
    assert delta(before, after, "gguf_serve_http_requests_total", **ollama_route) == 1
    duration = {"api": "openai", "route": "/v1/chat/completions"}
    assert delta(before, after, "gguf_serve_http_request_duration_seconds_count", **duration) == 3
    scrapes = {"api": "system", "route": "/metrics", "status": "200"}
    assert delta(before, after, "gguf_serve_http_requests_total", **scrapes) == 1

    # What is true now: one model, one idle slot, nothing waiting, its KV cells in use.
    assert value(after, "gguf_serve_models_loaded") == 1
    assert value(after, "gguf_serve_slots", **model) == 1
    assert value(after, "gguf_serve_slots_busy", **model) == 0
    assert value(after, "gguf_serve_queue_depth", **model) == 0
    assert value(after, "gguf_serve_kv_cells", **model) == 2048
    assert 0 < value(after, "gguf_serve_kv_cells_used", **model) <= 2048
    loaded = {"model": MODEL, "outcome": "loaded"}
    assert value(after, "gguf_serve_model_loads_total", **loaded) >= 1
    assert value(after, "gguf_serve_model_load_duration_seconds_count", **model) >= 1


def test_refusals_and_cancellations_are_counted(one_slot: RunningServer) -> None:
    wait_idle(one_slot)
    before = scrape(one_slot)
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Write a long story about a dragon."}],
        "max_tokens": 400,
        "stream": True,
    }
    with httpx.stream("POST", f"{one_slot.url}/v1/chat/completions", json=body, timeout=300) as r:
        chunks = r.iter_lines()
        while "content" not in next(chunks):  # the one slot is generating
            pass
        refused = httpx.post(f"{one_slot.url}/v1/chat/completions", json=body, timeout=30)
        assert refused.status_code == 503
    # the stream was closed early: the engine cancels it at its next step
    long_prompt = "word " * 3000  # more than the 2048-token context
    too_long = httpx.post(
        f"{one_slot.url}/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": long_prompt}]},
        timeout=60,
    )
    assert too_long.status_code == 400
    wait_idle(one_slot)
    time.sleep(0.2)
    after = scrape(one_slot)

    assert delta(before, after, "gguf_serve_rejections_total", reason="queue_full") == 1
    assert delta(before, after, "gguf_serve_rejections_total", reason="context_too_long") == 1
    chat_route = {"api": "openai", "route": "/v1/chat/completions"}
    assert delta(before, after, "gguf_serve_http_requests_total", **chat_route, status="503") == 1
    assert delta(before, after, "gguf_serve_http_requests_total", **chat_route, status="400") == 1
    cancelled = {"model": MODEL, "outcome": "cancelled"}
    assert delta(before, after, "gguf_serve_engine_requests_total", **cancelled) == 1
    left = {"api": "openai", "model": MODEL, "outcome": "cancelled"}
    assert delta(before, after, "gguf_serve_requests_total", **left) == 1
    # the stopped answer's tokens count: at least the one that was streamed
    assert delta(before, after, "gguf_serve_generation_tokens_total", model=MODEL) >= 1


def test_memory_by_device_comes_from_the_plan(one_slot: RunningServer) -> None:
    after = scrape(one_slot)
    memory = {
        dict(labels)["device"]: v
        for (name, labels), v in after.items()
        if name == "gguf_serve_model_memory_bytes" and dict(labels)["model"] == MODEL
    }
    assert memory and all(device for device in memory)
    tags = httpx.get(f"{one_slot.url}/api/tags", timeout=10).json()["models"]
    weights = next(m["size"] for m in tags if m["name"] == MODEL)
    assert sum(memory.values()) >= weights * 0.9  # at least the weights (less the header, ...)
