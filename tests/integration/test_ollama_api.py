"""The Ollama API of a real server on the real default model, driven by the official `ollama` client."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import ollama
import pytest

from server.registry import Registry
from server.settings import load_settings
from tests.integration.conftest import DEFAULT_MODEL, RunningServer, start_server
from tests.integration.fake_servers import FakeOllamaRegistry

ASK = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
GREEDY = {"temperature": 0, "num_predict": 24}


@pytest.fixture(scope="module")
def client(server: RunningServer) -> ollama.Client:
    return ollama.Client(host=server.url, timeout=120)


@pytest.fixture(scope="module")
def own_server(
    default_model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """A server with a store of its own (pull, create, copy and delete change it)."""
    home = tmp_path_factory.mktemp("ollama-home")
    Registry(load_settings(home=home)).import_file(default_model_path, DEFAULT_MODEL)
    srv = start_server(home, tmp_path_factory.mktemp("ollama-logs"), "--parallel", "2")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def own(own_server: RunningServer) -> ollama.Client:
    return ollama.Client(host=own_server.url, timeout=300)


def assert_final_stats(obj: object) -> None:
    for field in (
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_count",
        "eval_duration",
    ):
        value = getattr(obj, field)
        assert isinstance(value, int) and value >= 0, (field, value)
    assert obj.total_duration >= obj.eval_duration  # type: ignore[attr-defined]
    assert obj.eval_count > 0 and obj.prompt_eval_count > 0  # type: ignore[attr-defined]


def test_root_and_version(server: RunningServer) -> None:
    assert httpx.get(server.url + "/").text == "Ollama is running"
    assert httpx.head(server.url + "/").status_code == 200
    assert httpx.get(server.url + "/api/version").json()["version"]


def test_tags_details_come_from_the_gguf_header(client: ollama.Client) -> None:
    models = {m.model: m for m in client.list().models}
    m = models[DEFAULT_MODEL]
    assert m.details is not None
    assert (
        m.details.format,
        m.details.family,
        m.details.parameter_size,
        m.details.quantization_level,
    ) == (
        "gguf",
        "llama",
        "135M",
        "Q4_1",
    )
    assert m.details.families == ["llama"]
    assert m.size is not None and m.size > 90_000_000
    assert m.digest is not None and len(m.digest) == 64
    assert m.modified_at is not None


def test_show(client: ollama.Client) -> None:
    info = client.show(DEFAULT_MODEL)
    assert info.details is not None and info.details.quantization_level == "Q4_1"
    assert info.modelinfo is not None
    assert info.modelinfo["general.architecture"] == "llama"
    assert info.modelinfo["llama.context_length"] == 8192
    assert info.modelinfo["llama.block_count"] == 30
    assert info.template is not None and "<|im_start|>" in info.template
    assert info.capabilities is not None and {"completion", "tools", "embedding"} <= set(
        info.capabilities
    )
    assert info.modelfile is not None and info.modelfile.startswith("# Modelfile")


@pytest.mark.parametrize("stream", [False, True])
def test_chat(client: ollama.Client, stream: bool) -> None:
    if stream:
        parts = list(client.chat(model=DEFAULT_MODEL, messages=ASK, options=GREEDY, stream=True))
        text = "".join(p.message.content or "" for p in parts)
        final = parts[-1]
        assert all(not p.done for p in parts[:-1])
    else:
        final = client.chat(model=DEFAULT_MODEL, messages=ASK, options=GREEDY)
        text = final.message.content or ""
    assert "Paris" in text
    assert final.done and final.done_reason in ("stop", "length")
    assert final.message.role == "assistant"
    assert_final_stats(final)


@pytest.mark.parametrize("stream", [False, True])
def test_generate_returns_context_that_continues(client: ollama.Client, stream: bool) -> None:
    if stream:
        parts = list(
            client.generate(
                model=DEFAULT_MODEL, prompt="Name a colour.", options=GREEDY, stream=True
            )
        )
        final = parts[-1]
        text = "".join(p.response for p in parts)
    else:
        final = client.generate(model=DEFAULT_MODEL, prompt="Name a colour.", options=GREEDY)
        text = final.response
    assert text and final.done
    assert_final_stats(final)
    ctx = list(final.context or [])
    assert len(ctx) == final.prompt_eval_count + final.eval_count - (
        1 if final.done_reason == "stop" else 0
    )
    nxt = client.generate(
        model=DEFAULT_MODEL, prompt="And another one.", context=ctx, options=GREEDY
    )
    assert nxt.prompt_eval_count > len(ctx)  # the old context came first
    assert list(nxt.context or [])[: len(ctx)] == ctx


def test_ndjson_framing(server: RunningServer) -> None:
    body = {"model": DEFAULT_MODEL, "messages": ASK, "options": {"num_predict": 6}}
    with httpx.stream("POST", f"{server.url}/api/chat", json=body, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/x-ndjson")
        raw = r.read().decode()
    assert raw.endswith("}\n")
    lines = raw.split("\n")[:-1]
    objects = [json.loads(line) for line in lines]  # every line is one JSON object
    assert [o["done"] for o in objects] == [False] * (len(objects) - 1) + [True]
    assert objects[-1]["done_reason"] == "length" and objects[-1]["eval_count"] == 6
    for o in objects:
        datetime.fromisoformat(o["created_at"].replace("Z", "+00:00"))
    plain = httpx.post(f"{server.url}/api/chat", json={**body, "stream": False}, timeout=60)
    assert plain.headers["content-type"].startswith("application/json")
    assert plain.json()["done"] is True


def test_runtime_options_shape_sampling(client: ollama.Client) -> None:
    short = client.generate(
        model=DEFAULT_MODEL, prompt="Write a long story.", options={"num_predict": 5}
    )
    assert short.eval_count == 5 and short.done_reason == "length"
    kw = {"model": DEFAULT_MODEL, "prompt": "Invent a name for a dog."}
    seeded = [
        client.generate(**kw, options={"seed": 3, "temperature": 1.0, "num_predict": 16}).response
        for _ in range(2)
    ]
    assert seeded[0] == seeded[1]
    greedy = [
        client.generate(**kw, options={"temperature": 0, "num_predict": 16}).response
        for _ in range(2)
    ]
    assert greedy[0] == greedy[1]
    counted = client.generate(
        model=DEFAULT_MODEL,
        prompt="Count from 1 to 10 separated by commas.",
        options={"temperature": 0, "num_predict": 40},
    )
    assert "4" in counted.response
    stopped = client.generate(
        model=DEFAULT_MODEL,
        prompt="Count from 1 to 10 separated by commas.",
        options={"temperature": 0, "num_predict": 40, "stop": ["4"]},
    )
    assert "4" not in stopped.response and counted.response.startswith(stopped.response)
    other = [
        client.generate(**kw, options={**GREEDY, key: value}).response
        for key, value in [
            ("repeat_penalty", 1.8),
            ("top_k", 1),
            ("min_p", 0.5),
            ("presence_penalty", 1.5),
            ("frequency_penalty", 1.5),
            ("top_p", 0.1),
            ("repeat_last_n", 0),
        ]
    ]
    assert all(isinstance(o, str) and o for o in other)


def test_load_time_option_reloads_with_new_context(client: ollama.Client) -> None:
    client.generate(model=DEFAULT_MODEL, prompt="Hi", options={"num_predict": 2, "num_ctx": 1024})
    running = {m.model: m for m in client.ps().models}
    assert running[DEFAULT_MODEL].context_length == 1024
    client.generate(model=DEFAULT_MODEL, prompt="Hi", options={"num_predict": 2, "num_ctx": 2048})
    assert {m.model: m for m in client.ps().models}[DEFAULT_MODEL].context_length == 2048


def test_ps_and_keep_alive(client: ollama.Client) -> None:
    client.generate(model=DEFAULT_MODEL, prompt="Hi", options={"num_predict": 2}, keep_alive="10m")
    m = {m.model: m for m in client.ps().models}[DEFAULT_MODEL]
    assert m.size is not None and m.size > 90_000_000
    assert m.size_vram == 0
    assert m.details is not None and m.details.family == "llama"
    assert m.expires_at is not None
    assert (
        timedelta(minutes=9) < m.expires_at - datetime.now(UTC) <= timedelta(minutes=10, seconds=5)
    )
    client.generate(model=DEFAULT_MODEL, prompt="Hi", options={"num_predict": 2}, keep_alive=-1)
    forever = {m.model: m for m in client.ps().models}[DEFAULT_MODEL]
    assert forever.expires_at is not None and forever.expires_at.year > 2100
    client.generate(model=DEFAULT_MODEL, prompt="Hi", options={"num_predict": 2}, keep_alive=0)
    deadline = time.monotonic() + 5
    while client.ps().models and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.ps().models == []
    loaded = client.generate(
        model=DEFAULT_MODEL, prompt="", keep_alive="5m"
    )  # empty prompt: just load
    assert loaded.done_reason == "load" and [m.model for m in client.ps().models] == [DEFAULT_MODEL]
    unloaded = client.chat(model=DEFAULT_MODEL, messages=[], keep_alive=0)
    assert unloaded.done_reason == "unload" and client.ps().models == []


def test_system_raw_and_template_in_generate(client: ollama.Client) -> None:
    rendered = "<|im_start|>user\nName a fruit.<|im_end|>\n<|im_start|>assistant\n"
    raw = client.generate(model=DEFAULT_MODEL, prompt=rendered, raw=True, options=GREEDY)
    templated = client.generate(
        model=DEFAULT_MODEL,
        prompt="Name a fruit.",
        options=GREEDY,
        template="<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n",
    )
    assert raw.prompt_eval_count == templated.prompt_eval_count
    assert raw.response == templated.response  # same tokens in, greedy: same answer
    with_system = client.generate(
        model=DEFAULT_MODEL,
        prompt="Name a fruit.",
        options=GREEDY,
        system="You only answer in French.",
    )
    default = client.generate(model=DEFAULT_MODEL, prompt="Name a fruit.", options=GREEDY)
    assert list(with_system.context or []) != list(default.context or [])
    go = client.generate(
        model=DEFAULT_MODEL,
        prompt="Name a fruit.",
        options=GREEDY,
        system="Be brief.",
        template="{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
        "<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n",
    )
    assert go.response


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/api/chat", {"model": "nope:1b", "messages": ASK}, 404),
        ("/api/generate", {"model": "nope:1b", "prompt": "x"}, 404),
        ("/api/show", {"model": "nope:1b"}, 404),
        ("/api/chat", {"messages": ASK}, 400),
        ("/api/chat", {"model": DEFAULT_MODEL, "messages": "hi"}, 400),
        (
            "/api/generate",
            {"model": DEFAULT_MODEL, "prompt": "x", "options": {"temperature": "hot"}},
            400,
        ),
        ("/api/generate", {"model": DEFAULT_MODEL, "prompt": "x", "keep_alive": "soon"}, 400),
        ("/api/generate", {"model": DEFAULT_MODEL, "prompt": "x", "suffix": "y"}, 400),
        ("/api/generate", {"model": DEFAULT_MODEL, "prompt": "x", "format": 7}, 400),
        (
            "/api/generate",
            {"model": DEFAULT_MODEL, "prompt": "x", "template": "{{ range .X }}"},
            400,
        ),
        ("/api/generate", {"model": "../../etc/passwd", "prompt": "x"}, 400),
        ("/api/generate", {"model": DEFAULT_MODEL, "prompt": "word " * 5000}, 400),
        ("/api/copy", {"source": "nope:1b", "destination": "x:1"}, 404),
    ],
)
def test_errors_use_ollama_shape_and_status(
    server: RunningServer, path: str, body: dict[str, object], status: int
) -> None:
    r = httpx.post(server.url + path, json=body, timeout=60)
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"} and r.json()["error"]
    assert httpx.get(server.url + "/api/version").status_code == 200


def test_error_codes_through_the_client(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        client.chat(model="nope:1b", messages=ASK)
    assert info.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as info:
        client.delete("nope:1b")
    assert info.value.status_code == 404


def test_copy_delete_and_create(own: ollama.Client) -> None:
    own.copy(DEFAULT_MODEL, "copied:v1")
    names = {m.model for m in own.list().models}
    assert {"copied:v1", DEFAULT_MODEL} <= names
    own.delete("copied:v1")
    assert "copied:v1" not in {m.model for m in own.list().models}
    with pytest.raises(ollama.ResponseError):
        own.delete("copied:v1")

    progress = list(
        own.create(
            model="terse:v1",
            from_=DEFAULT_MODEL,
            system="Answer with one word.",
            parameters={"num_predict": 3, "temperature": 0},
            stream=True,
        )
    )
    assert progress[-1].status == "success"
    shown = own.show("terse:v1")
    assert shown.system == "Answer with one word." if hasattr(shown, "system") else True
    assert "num_predict" in (shown.parameters or "")
    out = own.generate(model="terse:v1", prompt="Tell me about the sea.")
    assert out.eval_count == 3  # the model's own parameters apply without request options
    plain = own.generate(
        model=DEFAULT_MODEL,
        prompt="Tell me about the sea.",
        options={"num_predict": 3, "temperature": 0},
    )
    assert list(out.context or []) != list(plain.context or [])  # the system prompt is in there


def test_create_from_uploaded_gguf(
    own: ollama.Client, default_model_path: Path, own_server: RunningServer
) -> None:
    digest = (
        "sha256:"
        + __import__("hashlib").file_digest(default_model_path.open("rb"), "sha256").hexdigest()
    )
    assert httpx.head(f"{own_server.url}/api/blobs/{digest}").status_code == 200  # already stored
    bogus = "sha256:" + "0" * 64
    assert httpx.head(f"{own_server.url}/api/blobs/{bogus}").status_code == 404
    r = httpx.post(f"{own_server.url}/api/blobs/{bogus}", content=b"not matching", timeout=30)
    assert r.status_code == 400 and "do not match" in r.json()["error"]
    assert httpx.head(f"{own_server.url}/api/blobs/{bogus}").status_code == 404  # nothing kept
    assert httpx.head(f"{own_server.url}/api/blobs/..%2F..%2Fetc").status_code in (400, 404)
    status = own.create(
        model="uploaded:q4", files={"model.gguf": own.create_blob(default_model_path)}
    )
    assert status.status == "success"
    out = own.generate(model="uploaded:q4", prompt="Hi", options={"num_predict": 3})
    assert out.eval_count == 3


def test_pull_streams_progress(own: ollama.Client) -> None:
    own.delete(DEFAULT_MODEL)
    lines = list(own.pull(DEFAULT_MODEL, stream=True))
    statuses = [p.status for p in lines]
    assert statuses[-1] == "success"
    sized = [p for p in lines if p.total]
    assert sized and sized[-1].completed == sized[-1].total and sized[-1].digest
    assert DEFAULT_MODEL in {m.model for m in own.list().models}


def test_pull_from_an_ollama_registry_keeps_its_modelfile(
    own: ollama.Client, default_model_path: Path
) -> None:
    template = "<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n"
    with contextlib.closing(FakeOllamaRegistry()) as registry:
        registry.add_model(
            "library/smol",
            "1",
            default_model_path.read_bytes(),
            template=template,
            params={"num_predict": 4, "temperature": 0},
        )
        name = f"{registry.host}/library/smol:1"
        statuses = [p.status for p in own.pull(name, insecure=True, stream=True)]
        assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
        shown = own.show(name)
        assert shown.template == template
        assert "num_predict" in (shown.parameters or "")
        out = own.generate(model=name, prompt="Name a fruit.")
        assert out.eval_count == 4  # the pulled Modelfile parameters apply
        raw = own.generate(
            model=name, prompt=template.replace("{{ .Prompt }}", "Name a fruit."), raw=True
        )
        assert (
            out.prompt_eval_count == raw.prompt_eval_count
        )  # and its Go template renders the prompt
        with pytest.raises(ollama.ResponseError) as info:
            own.pull(f"{registry.host}/library/smol:missing", insecure=True)
        assert info.value.status_code == 404


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.mark.parametrize("stream", [False, True])
def test_format_json_and_schema(client: ollama.Client, stream: bool) -> None:
    def run(fmt: object) -> str:
        if stream:
            parts = list(
                client.chat(
                    model=DEFAULT_MODEL,
                    messages=[{"role": "user", "content": "Invent a person."}],
                    format=fmt,
                    options={"temperature": 0, "num_predict": 120},
                    stream=True,
                )
            )  # type: ignore[arg-type]
            assert parts[-1].done_reason == "stop"
            return "".join(p.message.content or "" for p in parts)
        r = client.chat(
            model=DEFAULT_MODEL,
            messages=[{"role": "user", "content": "Invent a person."}],
            format=fmt,
            options={"temperature": 0, "num_predict": 120},
        )  # type: ignore[arg-type]
        assert r.done_reason == "stop"
        return r.message.content or ""

    assert isinstance(json.loads(run("json")), dict)
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    value = json.loads(run(schema))
    assert (
        set(value) == {"name", "age"}
        and isinstance(value["name"], str)
        and isinstance(value["age"], int)
    )
    gen = client.generate(
        model=DEFAULT_MODEL,
        prompt="List two colours.",
        format="json",
        options={"temperature": 0, "num_predict": 120},
    )
    json.loads(gen.response)


def assert_no_call_syntax(text: str) -> None:
    for piece in ("<tool_call>", "</tool_call>", '"arguments"'):
        assert piece not in text, text


def test_tools_auto_lets_the_model_answer_in_text(client: ollama.Client) -> None:
    r = client.chat(
        model=DEFAULT_MODEL,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER],
        options={"temperature": 0, "num_predict": 40},
    )
    # this small model, greedy, answers this one in prose: text, no call, no call syntax
    assert not r.message.tool_calls
    assert r.message.content and r.done_reason in ("stop", "length")
    assert_no_call_syntax(r.message.content)


@pytest.mark.parametrize("stream", [False, True])
def test_forced_tool_call_comes_back_as_tool_calls(server: RunningServer, stream: bool) -> None:
    body = {
        "model": DEFAULT_MODEL,
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "tools": [WEATHER],
        "tool_choice": "required",
        "stream": stream,
        "options": {"temperature": 0},  # no num_predict: the answer ends by itself
    }
    r = httpx.post(f"{server.url}/api/chat", json=body, timeout=120)
    assert r.status_code == 200
    objects = [json.loads(line) for line in r.text.splitlines()] if stream else [r.json()]
    final = ollama.ChatResponse(**objects[-1])  # the official client's own model parses it
    assert final.done and final.done_reason == "stop"
    assert "".join(o["message"].get("content", "") for o in objects) == ""
    [call] = final.message.tool_calls or []  # one call, not the same one repeated
    assert call.function.name == "get_weather"
    assert set(call.function.arguments) == {"city"} and isinstance(
        call.function.arguments["city"], str
    )
    assert final.eval_count is not None and final.eval_count < 100


def test_tool_history_is_accepted(client: ollama.Client) -> None:
    history = [
        {"role": "user", "content": "What is the weather in Berlin?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Berlin"}}}],
        },
        {"role": "tool", "content": "12 degrees and cloudy", "tool_name": "get_weather"},
    ]
    r = client.chat(
        model=DEFAULT_MODEL,
        messages=history,
        tools=[WEATHER],
        options={"temperature": 0, "num_predict": 30},
    )
    assert r.done
    assert_no_call_syntax(r.message.content or "")
    if r.message.tool_calls:  # auto: a new call, and nothing else
        assert not r.message.content and r.done_reason == "stop"
        assert [c.function.name for c in r.message.tool_calls] == ["get_weather"]
    else:  # or an answer from the result
        assert r.message.content and r.done_reason in ("stop", "length")


def test_embed_and_legacy_embeddings(client: ollama.Client, server: RunningServer) -> None:
    out = client.embed(
        model=DEFAULT_MODEL,
        input=["The cat sat on the mat.", "A feline rested on a rug.", "Stock prices fell."],
    )
    vectors = out.embeddings
    assert len(vectors) == 3 and len(vectors[0]) == 576
    norms = [sum(v * v for v in vec) ** 0.5 for vec in vectors]
    assert all(abs(n - 1) < 1e-3 for n in norms)
    cos = lambda a, b: sum(x * y for x, y in zip(a, b, strict=True))  # noqa: E731
    assert cos(vectors[0], vectors[1]) > cos(vectors[0], vectors[2])
    single = client.embed(model=DEFAULT_MODEL, input="The cat sat on the mat.")
    assert len(single.embeddings) == 1
    assert max(abs(a - b) for a, b in zip(single.embeddings[0], vectors[0], strict=True)) < 1e-4
    short = client.embed(model=DEFAULT_MODEL, input="The cat sat on the mat.", dimensions=64)
    assert len(short.embeddings[0]) == 64
    legacy = client.embeddings(model=DEFAULT_MODEL, prompt="The cat sat on the mat.")
    assert len(legacy.embedding) == 576
    too_long = httpx.post(
        f"{server.url}/api/embed",
        timeout=60,
        json={"model": DEFAULT_MODEL, "input": "word " * 5000, "truncate": False},
    )
    assert too_long.status_code == 400 and "error" in too_long.json()
    truncated = client.embed(model=DEFAULT_MODEL, input="word " * 5000)
    assert len(truncated.embeddings[0]) == 576
