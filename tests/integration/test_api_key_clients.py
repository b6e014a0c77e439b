"""A server with `api_keys`: the web page asks for the key once and keeps it, `gguf-serve run`
sends the key from the settings, and /metrics wants it too while counting the refusals.

The key check itself is the HTTP edge's (server/api/edge.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser

from tests.integration.conftest import RunningServer, start_server
from tests.integration.test_cli_run import run_env, run_once
from tests.integration.test_metrics import delta, value

KEY = "test-key-4f1c9a0b"
MODEL = "smollm2:135m"
ANSWER_TIMEOUT_MS = 180_000


@pytest.fixture(scope="module")
def keyed(model_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    srv = start_server(
        model_home, tmp_path_factory.mktemp("keyed"), "--parallel", "1", GGUF_SERVE_API_KEYS=KEY
    )
    yield srv
    srv.stop()


def scrape(server: RunningServer) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    response = httpx.get(
        f"{server.url}/metrics", headers={"Authorization": f"Bearer {KEY}"}, timeout=10
    )
    assert response.status_code == 200
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def test_the_page_asks_for_the_key_once_and_keeps_it(
    browser: Browser, keyed: RunningServer
) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{keyed.url}/ui")  # the page itself is served without a key
    page.wait_for_selector("#key-dialog[open]")
    assert "API key" in page.inner_text("#key-reason")
    page.fill("#key-input", "not-the-key")
    page.press("#key-input", "Enter")
    page.wait_for_function(
        "() => document.getElementById('key-reason').textContent.startsWith('The key was refused')"
    )
    page.fill("#key-input", KEY)
    page.press("#key-input", "Enter")
    page.wait_for_function("() => document.querySelectorAll('#model option').length > 0")
    page.click("#settings summary")
    page.fill("#max-tokens", "6")
    page.dispatch_event("#max-tokens", "change")
    page.click("#settings summary")
    page.fill("#prompt", "Hello!")
    page.press("#prompt", "Enter")
    page.wait_for_selector("#stop:not([hidden])")
    page.wait_for_selector("#send:not([hidden])", timeout=ANSWER_TIMEOUT_MS)
    assert page.inner_text(".msg.assistant .content").strip()
    assert "tok/s" in page.inner_text(".msg.assistant .stats")

    page.reload()  # the key is remembered: no dialog
    page.wait_for_function("() => document.querySelectorAll('#model option').length > 0")
    assert not page.is_visible("#key-dialog")
    page.click("#settings summary")
    page.click("#forget-key")
    page.reload()
    page.wait_for_selector("#key-dialog[open]")
    page.click("#key-cancel")
    page.wait_for_function(
        "() => document.getElementById('status').textContent.includes('Could not list')"
    )
    context.close()


def test_run_sends_the_key_from_the_settings(
    keyed: RunningServer, model_home: Path, tmp_path: Path
) -> None:
    port = int(keyed.url.rsplit(":", 1)[1])
    with_key = run_env(model_home, port, tmp_path, GGUF_SERVE_API_KEYS=KEY)
    done = run_once(with_key, MODEL, "-p", "num_predict=6", "Say hello.")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
    without = run_env(model_home, port, tmp_path)
    done = run_once(without, MODEL, "Say hello.")
    assert done.returncode == 1
    assert "API key" in done.stderr and "GGUF_SERVE_API_KEYS" in done.stderr


def test_metrics_want_the_key_and_count_refusals(keyed: RunningServer) -> None:
    before = scrape(keyed)
    assert httpx.get(f"{keyed.url}/metrics", timeout=10).status_code == 401
    assert httpx.get(f"{keyed.url}/v1/models", timeout=10).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert httpx.get(f"{keyed.url}/api/tags", headers=wrong, timeout=10).status_code == 401
    after = scrape(keyed)
    assert delta(before, after, "gguf_serve_rejections_total", reason="unauthorized") == 3
    refused = {"api": "system", "route": "unmatched", "status": "401"}
    # refused before routing: the route is unknown to the edge, so no template is guessed
    assert value(after, "gguf_serve_http_requests_total", **refused) >= 1
