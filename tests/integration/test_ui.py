"""The web chat page at /ui in a real headless Chromium (Debian's, driven by Playwright).

Nothing downloads a browser: Playwright drives `/usr/bin/chromium` (installed by `make browser`,
which `make test` runs; the `browser` fixture is in conftest.py). The page talks to the shared real server and the real default model.
A screenshot of the finished chat is written to `test-artifacts/ui-chat.png` (git-ignored).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from tests.integration.conftest import REPO, RunningServer

ARTIFACTS = REPO / "test-artifacts"
MODEL = "smollm2:135m"
ANSWER_TIMEOUT_MS = 180_000
# What the page's renderer must show as text, never as markup.
PAYLOAD = '<img src=x onerror="window.__pwned=1">'


@pytest.fixture
def page(browser: Browser, server: RunningServer) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{server.url}/ui")
    page.wait_for_function("() => document.querySelectorAll('#model option').length > 0")
    yield page
    context.close()
    assert errors == [], errors


def settings(page: Page, *, temperature: str, max_tokens: str) -> None:
    """Set the sampling settings the way a person does: open Settings, type, close."""
    page.click("#settings summary")
    page.fill("#temperature", temperature)
    page.dispatch_event("#temperature", "change")
    page.fill("#max-tokens", max_tokens)
    page.dispatch_event("#max-tokens", "change")
    page.click("#settings summary")


def send(page: Page, text: str) -> None:
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")
    page.wait_for_selector("#stop:not([hidden])")


def wait_answered(page: Page) -> None:
    page.wait_for_selector("#send:not([hidden])", timeout=ANSWER_TIMEOUT_MS)


def assistant_texts(page: Page) -> list[str]:
    texts: list[str] = page.eval_on_selector_all(
        ".msg.assistant .content", "nodes => nodes.map(n => n.textContent)"
    )
    return texts


def stored_conversations(page: Page) -> list[dict[str, Any]]:
    raw = page.evaluate("localStorage.getItem('gguf-serve.conversations')")
    conversations: list[dict[str, Any]] = json.loads(raw)
    return conversations


def watch_answer_length(page: Page) -> None:
    """Record the length of the newest answer each time the page redraws it."""
    page.evaluate(
        """() => {
          window.__lengths = [];
          new MutationObserver(() => {
            const answers = document.querySelectorAll('.msg.assistant .content');
            const last = answers[answers.length - 1];
            const n = last ? last.textContent.length : 0;
            if (n && n !== window.__lengths[window.__lengths.length - 1]) window.__lengths.push(n);
          }).observe(document.getElementById('messages'), {childList: true, subtree: true});
        }"""
    )


def test_chat_streams_stops_and_follows_up(page: Page, server: RunningServer) -> None:
    options = page.eval_on_selector_all("#model option", "os => os.map(o => o.value)")
    assert MODEL in options  # the picker lists the store's models (from /v1/models)
    page.select_option("#model", MODEL)
    settings(page, temperature="0", max_tokens="400")
    watch_answer_length(page)
    send(page, "Write a long story about a dragon named Ember.")
    # The answer grows on screen piece by piece while the stream runs.
    page.wait_for_function(
        "() => window.__lengths.length >= 4 && window.__lengths.at(-1) > 40",
        timeout=ANSWER_TIMEOUT_MS,
    )
    assert page.is_visible("#stop")
    lengths: list[int] = page.evaluate("window.__lengths")
    assert lengths == sorted(lengths)
    page.click("#stop")
    wait_answered(page)
    stopped_text = assistant_texts(page)[-1]
    assert len(stopped_text) >= 40
    assert page.inner_text(".msg.assistant .stats").startswith("stopped")
    deadline = time.monotonic() + 10  # the server frees the slot at its next decode step
    while any(s["state"] != "idle" for s in server.slots()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(s["state"] == "idle" for s in server.slots())

    settings(page, temperature="0", max_tokens="24")
    send(page, "Now say hello in one short sentence.")
    wait_answered(page)
    texts = assistant_texts(page)
    assert len(texts) == 2 and texts[0] == stopped_text and texts[1].strip()
    stats = page.eval_on_selector_all(".msg.assistant .stats", "ns => ns.map(n => n.textContent)")
    assert "tok/s" in stats[1] and "tokens" in stats[1], stats

    conversations = stored_conversations(page)
    assert len(conversations) == 1
    messages = conversations[0]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[1]["content"] == stopped_text and messages[1]["stats"]["stopped"] is True
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui-chat.png"), full_page=True)

    page.reload()  # the conversation is still there, from local storage
    page.wait_for_function("() => document.querySelectorAll('.msg').length === 4")
    assert assistant_texts(page) == texts


def test_model_output_with_html_shows_as_text(page: Page) -> None:
    settings(page, temperature="0", max_tokens="40")
    send(page, f"Repeat exactly: {PAYLOAD}")
    wait_answered(page)
    # The real model, at temperature 0, echoes the tag back: its output carries the payload.
    answer = assistant_texts(page)[-1]
    assert "<img src=x onerror=" in answer, answer
    assert PAYLOAD in page.inner_text(".msg.user .content")
    assert page.eval_on_selector_all("#messages img", "ns => ns.length") == 0
    assert page.evaluate("window.__pwned") is None
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui-html-as-text.png"))


def test_stored_answers_with_markup_and_code_render_safely(page: Page) -> None:
    """Answers are redrawn from local storage by the same renderer the stream uses."""
    answer = (
        f"Prose with {PAYLOAD} and **bold** and `<b>inline</b>`.\n\n"
        f"```html\n{PAYLOAD}\n<script>window.__pwned = 2</script>\n```\n"
    )
    conversation = {
        "id": "c-crafted",
        "title": "crafted",
        "model": MODEL,
        "updated": 1,
        "messages": [
            {"role": "user", "content": "show me"},
            {"role": "assistant", "content": answer, "stats": None},
        ],
    }
    page.evaluate(
        """c => {
          localStorage.setItem('gguf-serve.conversations', JSON.stringify([c]));
          localStorage.setItem('gguf-serve.current', c.id);
        }""",
        conversation,
    )
    page.reload()
    page.wait_for_selector(".msg.assistant .code-block")
    content = page.locator(".msg.assistant .content")
    assert page.inner_text(".code-block code") == f"{PAYLOAD}\n<script>window.__pwned = 2</script>"
    assert page.inner_text(".code-block .code-head span") == "html"
    assert PAYLOAD in content.locator("p").first.inner_text()
    assert content.locator("strong").inner_text() == "bold"
    assert content.locator("p code").inner_text() == "<b>inline</b>"
    assert (
        page.eval_on_selector_all("#messages img, #messages script, #messages b", "n => n.length")
        == 0
    )
    assert page.evaluate("window.__pwned") is None
