"""A model that cannot load (issue: it evicted the serving model, said `llama.cpp could not
load sha256-...`, and answered a 500 the OpenAI SDK retried twice).

Real broken models (copies of the default model without a required key, or without a
tensor), a real server with `max_loaded_models: 1`, the official clients.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from server.registry import Registry
from server.settings import load_settings
from tests.integration.conftest import DEFAULT_MODEL, RunningServer, start_server
from tests.integration.gguf_edit import copy_without

NO_KEY = "broken:nokey"
NO_TENSOR = "broken:notensor"


@pytest.fixture(scope="module")
def broken_server(
    default_model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    home = tmp_path_factory.mktemp("broken-home")
    scratch = tmp_path_factory.mktemp("broken-files")
    registry = Registry(load_settings(home=home))
    registry.import_file(default_model_path, DEFAULT_MODEL)
    no_key = copy_without(default_model_path, scratch / "a.gguf", key="llama.context_length")
    registry.import_file(no_key, NO_KEY)
    no_tensor = copy_without(default_model_path, scratch / "b.gguf", tensor="blk.3.attn_q.weight")
    registry.import_file(no_tensor, NO_TENSOR)
    for path in scratch.iterdir():
        path.unlink()
    srv = start_server(
        home,
        tmp_path_factory.mktemp("broken-logs"),
        "--parallel",
        "2",
        GGUF_SERVE_MAX_LOADED_MODELS="1",
    )
    yield srv
    srv.stop()


def ask(client: openai.OpenAI, model: str, text: str) -> openai.types.chat.ChatCompletion:
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}], temperature=0, max_tokens=2
    )


def test_openai_sdk_gets_one_422_naming_the_model_and_llama_cpps_reason(
    broken_server: RunningServer,
) -> None:
    attempts: list[httpx.Request] = []
    http = httpx.Client(event_hooks={"request": [attempts.append]}, timeout=120)
    client = openai.OpenAI(base_url=f"{broken_server.url}/v1", api_key="x", http_client=http)
    question = "What is the capital of France? Answer in one word."
    first = ask(client, DEFAULT_MODEL, question)  # the model that serves
    attempts.clear()
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        ask(client, NO_KEY, "Hi")
    assert len(attempts) == 1  # the SDK (max_retries=2 by default) did not retry
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["code"] == "model_load_failed"
    assert error["message"] == (
        f"cannot load '{NO_KEY}': llama.cpp refuses it: error loading model hyperparameters: "
        "key not found in model: llama.context_length"
    )
    # The serving model was never unloaded: the same question finds its cache in place.
    again = ask(client, DEFAULT_MODEL, question)
    assert again.choices[0].message.content == first.choices[0].message.content
    details = again.usage.prompt_tokens_details if again.usage else None
    assert details is not None and details.cached_tokens and details.cached_tokens > 10


def test_ollama_api_names_the_missing_tensor_and_keeps_serving(
    broken_server: RunningServer,
) -> None:
    url = broken_server.url
    before = httpx.get(f"{url}/api/ps", timeout=30).json()["models"]
    r = httpx.post(
        f"{url}/api/chat",
        json={"model": NO_TENSOR, "messages": [{"role": "user", "content": "Hi"}]},
        timeout=120,
    )
    assert r.status_code == 422
    assert r.json() == {
        "error": f"cannot load '{NO_TENSOR}': llama.cpp refuses it: check_tensor_dims: "
        "tensor 'blk.3.attn_q.weight' not found"
    }
    after = httpx.get(f"{url}/api/ps", timeout=30).json()["models"]
    assert [m["name"] for m in after] == [m["name"] for m in before]
    served = httpx.post(
        f"{url}/api/generate",
        json={
            "model": DEFAULT_MODEL,
            "prompt": "Hi",
            "stream": False,
            "options": {"num_predict": 2},
        },
        timeout=120,
    ).json()
    assert served["done"] and served["load_duration"] < 50_000_000  # no reload: under 50 ms
