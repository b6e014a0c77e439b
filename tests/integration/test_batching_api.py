"""Continuous batching seen through HTTP: concurrency, seeds, disconnects, prefix reuse, UTF-8."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import AsyncOpenAI, OpenAI

from tests.integration.conftest import DEFAULT_MODEL, RunningServer, start_server


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def stream_text(client: AsyncOpenAI, messages: list[dict[str, str]], **kw: object) -> str:
    out = []
    stream = await client.chat.completions.create(
        model=DEFAULT_MODEL, messages=messages, stream=True, **kw
    )  # type: ignore[call-overload]
    async for chunk in stream:
        for choice in chunk.choices:
            out.append(choice.delta.content or "")
    return "".join(out)


def test_eight_concurrent_streams_complete(base_url: str) -> None:
    topics = ["the sea", "a forest", "the moon", "a city", "winter", "a river", "music", "bread"]

    async def main() -> list[str]:
        client = AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=120)
        try:
            return await asyncio.gather(
                *(
                    stream_text(
                        client,
                        user(f"Write two sentences about {t}."),
                        temperature=0,
                        max_tokens=48,
                    )
                    for t in topics
                )
            )
        finally:
            await client.close()

    texts = asyncio.run(main())
    assert len(texts) == 8
    for topic, text in zip(topics, texts, strict=True):
        assert len(text.split()) >= 5, (topic, text)
    assert len(set(texts)) == 8  # each stream got its own answer, not a neighbour's


def test_seeded_request_is_identical_alone_and_among_seven_others(base_url: str) -> None:
    messages = user("Invent a short poem about a fox.")

    async def main() -> tuple[str, str]:
        client = AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=120)
        try:
            alone = await stream_text(client, messages, temperature=1.0, seed=77, max_tokens=40)
            crowd = await asyncio.gather(
                stream_text(client, messages, temperature=1.0, seed=77, max_tokens=40),
                *(
                    stream_text(
                        client,
                        user(f"Tell me about the number {i}."),
                        temperature=1.0,
                        seed=i,
                        max_tokens=40,
                    )
                    for i in range(7)
                ),
            )
            return alone, crowd[0]
        finally:
            await client.close()

    alone, among_others = asyncio.run(main())
    assert alone and alone == among_others


def test_disconnect_frees_the_slot_within_a_second(server: RunningServer, base_url: str) -> None:
    body = {
        "model": DEFAULT_MODEL,
        "messages": user("Write a very long story about a dragon."),
        "stream": True,
        "max_tokens": 1500,
        "temperature": 0,
    }
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=30) as r:
        lines = r.iter_lines()  # kept referenced: closing this iterator would close the socket
        seen = 0
        for line in lines:
            if line.startswith("data: "):
                seen += 1
            if seen >= 5:
                break
        assert any(s["state"] == "generating" for s in server.slots()), httpx.get(
            f"{server.url}/slots"
        ).text
    closed = time.monotonic()
    while any(s["state"] != "idle" for s in server.slots()):
        assert time.monotonic() - closed < 1.0, server.slots()
        time.sleep(0.02)
    client = OpenAI(base_url=base_url, api_key="x", max_retries=0)
    started = time.monotonic()
    first_token_at = None
    for chunk in client.chat.completions.create(
        model=DEFAULT_MODEL, messages=user("Say hi."), stream=True, max_tokens=8
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            first_token_at = time.monotonic()
            break
    assert first_token_at is not None and first_token_at - started < 1.0


def test_second_turn_reports_cached_tokens(base_url: str) -> None:
    client = OpenAI(base_url=base_url, api_key="x", max_retries=0)
    turn1 = user("My favourite colour is green. Please remember it.")
    first = client.chat.completions.create(
        model=DEFAULT_MODEL, messages=turn1, temperature=0, max_tokens=32
    )  # type: ignore[arg-type]
    reply = first.choices[0].message.content or ""
    turn2 = [
        *turn1,
        {"role": "assistant", "content": reply},
        {"role": "user", "content": "What is my favourite colour?"},
    ]
    second = client.chat.completions.create(
        model=DEFAULT_MODEL, messages=turn2, temperature=0, max_tokens=16
    )  # type: ignore[arg-type]
    assert first.usage is not None and second.usage is not None
    cached = second.usage.prompt_tokens_details.cached_tokens  # type: ignore[union-attr]
    assert cached >= first.usage.prompt_tokens
    assert cached < second.usage.prompt_tokens


def long_history() -> list[dict[str, str]]:
    """A conversation of about a thousand tokens."""
    facts = [
        f"Fact {i}: the {colour} lighthouse on island {i} was painted in {1900 + 7 * i} "
        f"by a keeper who kept {i + 2} cats and a logbook of every storm."
        for i, colour in enumerate(["red", "blue", "green", "white", "black", "grey"] * 4)
    ]
    history: list[dict[str, str]] = []
    for i in range(0, len(facts), 4):
        history.append({"role": "user", "content": "Remember these: " + " ".join(facts[i : i + 4])})
        history.append({"role": "assistant", "content": "Noted, I will remember them."})
    history.append({"role": "user", "content": "Now tell me a long story about the keepers."})
    return history


def test_next_turn_after_a_stopped_answer_reuses_the_history(server: RunningServer) -> None:
    """A Stop button (the client closes the stream after the first token) keeps the slot's
    cache: the next turn of the conversation pays only for what is new."""
    client = OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=120)
    history = long_history()
    stream = client.chat.completions.create(
        model=DEFAULT_MODEL, messages=history, stream=True, temperature=0, max_tokens=400
    )  # type: ignore[call-overload]
    partial = ""
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            partial = chunk.choices[0].delta.content
            break
    stream.close()
    deadline = time.monotonic() + 30
    while any(s["state"] != "idle" for s in server.slots()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(s["state"] == "idle" for s in server.slots())
    nxt = [
        *history,
        {"role": "assistant", "content": partial},
        {"role": "user", "content": "Go on."},
    ]
    second = client.chat.completions.create(
        model=DEFAULT_MODEL, messages=nxt, temperature=0, max_tokens=4
    )  # type: ignore[arg-type]
    assert second.usage is not None
    prompt = second.usage.prompt_tokens
    cached = second.usage.prompt_tokens_details.cached_tokens  # type: ignore[union-attr]
    assert prompt > 900
    assert cached >= prompt - 40, (cached, prompt)  # all but the new turn's few tokens


def test_non_ascii_stream_is_valid_utf8_and_equals_non_stream(server: RunningServer) -> None:
    body = {
        "model": DEFAULT_MODEL,
        "messages": user("Translate 'good morning, how are you?' into Chinese."),
        "temperature": 0,
        "max_tokens": 40,
    }
    plain = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60).json()
    expected = plain["choices"][0]["message"]["content"]
    assert any(ord(c) > 0x2E80 for c in expected)  # the model does answer in CJK characters
    pieces = []
    with httpx.stream(
        "POST", f"{server.url}/v1/chat/completions", json={**body, "stream": True}, timeout=60
    ) as r:
        for raw in r.iter_raw():
            raw.decode("utf-8")  # strict: every network chunk is whole UTF-8 (events are)
            pieces.append(raw)
    text = b"".join(pieces).decode("utf-8")
    deltas = [
        json.loads(e[6:])["choices"][0]["delta"].get("content", "")
        for e in text.split("\n\n")
        if e.startswith("data: {") and json.loads(e[6:])["choices"]
    ]
    assert "\ufffd" not in "".join(deltas)
    assert "".join(deltas) == expected


@pytest.fixture(scope="module")
def tiny_server(
    model_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    srv = start_server(
        model_home, tmp_path_factory.mktemp("tiny"), "--parallel", "1", GGUF_SERVE_MAX_QUEUE="0"
    )
    yield srv
    srv.stop()


def test_queue_overflow_is_503_with_retry_after(tiny_server: RunningServer) -> None:
    body = {
        "model": DEFAULT_MODEL,
        "messages": user("Write a long story."),
        "stream": True,
        "max_tokens": 400,
    }
    with httpx.stream(
        "POST", f"{tiny_server.url}/v1/chat/completions", json=body, timeout=30
    ) as busy:
        assert busy.status_code == 200
        lines = busy.iter_lines()
        next(lines)  # the only slot is taken
        r = httpx.post(
            f"{tiny_server.url}/v1/chat/completions", json={**body, "stream": False}, timeout=30
        )
        assert r.status_code == 503
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["code"] == "queue_full"
    deadline = time.monotonic() + 10  # the stream was closed before its first token
    while any(s["state"] != "idle" for s in tiny_server.slots()) and time.monotonic() < deadline:
        time.sleep(0.02)
    ok = httpx.post(
        f"{tiny_server.url}/v1/chat/completions",
        json={**body, "stream": False, "max_tokens": 4},
        timeout=30,
    )
    assert ok.status_code == 200  # and it keeps serving
