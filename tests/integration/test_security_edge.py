"""The HTTP edge of a real server process, tried as an attacker and as a user would.

Two servers: the shared one (loopback, every default), and an exposed one (bound to 0.0.0.0
with API keys, a listed CORS origin, a small blob limit and a small n_ctx_cap), as a LAN or
container deployment would run it. docs/SECURITY.md describes each defence tried here.
"""

from __future__ import annotations

import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest

from server.registry import Registry
from server.settings import load_settings
from tests.integration import raw_http
from tests.integration.conftest import DEFAULT_MODEL, RunningServer, start_server

KEY_ENV = "env-key-0123456789"
KEY_FILE = "file-key-9876543210"
LISTED_ORIGIN = "https://chat.example.com"
EVIL = "http://evil.example"
SMALL = {"temperature": 0, "num_predict": 2}
CHAT = {"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
MiB = 1024 * 1024
GEN = 120  # seconds a short generation may take on a busy CI machine


def openai_error(r: httpx.Response | raw_http.RawResponse) -> dict[str, Any]:
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    return dict(error)


def ollama_error(r: httpx.Response | raw_http.RawResponse) -> str:
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str), body
    return str(body["error"])


def store_files(home: Path) -> set[Path]:
    return {p.relative_to(home) for p in home.rglob("*") if p.is_file()}


def lan_address() -> str | None:
    """An address of this machine that is not loopback (None on a machine with no network)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the route
        except OSError:
            return None
        address = str(s.getsockname()[0])
    return None if address.startswith("127.") else address


@pytest.fixture(scope="module")
def exposed_home(default_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("exposed-home")
    Registry(load_settings(home=home)).import_file(default_model_path, DEFAULT_MODEL)
    return home


@pytest.fixture(scope="module")
def exposed(
    exposed_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    home = exposed_home
    key_file = tmp_path_factory.mktemp("keys") / "keys.txt"
    key_file.write_text(f"# one key per line\n\n{KEY_FILE}\n")
    srv = start_server(
        home,
        tmp_path_factory.mktemp("exposed-logs"),
        "--host",
        "0.0.0.0",
        "--parallel",
        "1",
        GGUF_SERVE_API_KEYS=KEY_ENV,
        GGUF_SERVE_API_KEY_FILE=str(key_file),
        GGUF_SERVE_CORS_ORIGINS=LISTED_ORIGIN,
        GGUF_SERVE_MAX_BLOB_BYTES=str(MiB),
        GGUF_SERVE_N_CTX_CAP="1024",
        GGUF_SERVE_LOAD__N_CTX="512",
    )
    yield srv
    srv.stop()


def authed(key: str = KEY_ENV) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# ---- cross-site requests ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/copy", {"source": DEFAULT_MODEL, "destination": "stolen:1"}),
        ("/api/pull", {"model": "127.0.0.1:9/x/y", "insecure": True}),
        ("/api/create", {"model": "made:1", "from": DEFAULT_MODEL}),
        ("/api/delete", {"model": DEFAULT_MODEL}),
        ("/api/generate", {"model": DEFAULT_MODEL, "prompt": "Hi", "options": SMALL}),
        ("/api/chat", {"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "x"}]}),
        ("/api/embed", {"model": DEFAULT_MODEL, "input": "x"}),
        ("/v1/chat/completions", CHAT),
        ("/v1/completions", {"model": DEFAULT_MODEL, "prompt": "Hi", "max_tokens": 2}),
        ("/v1/embeddings", {"model": DEFAULT_MODEL, "input": "x"}),
    ],
)
def test_cross_site_simple_post_is_403_and_changes_nothing(
    server: RunningServer, model_home: Path, path: str, body: dict[str, Any]
) -> None:
    before = store_files(model_home)
    method = "DELETE" if path == "/api/delete" else "POST"
    r = httpx.request(
        method,
        server.url + path,
        content=httpx.Request("POST", "/", json=body).content,
        headers={"Content-Type": "text/plain", "Origin": EVIL},
    )
    assert r.status_code == 403
    assert "access-control-allow-origin" not in r.headers  # the page cannot read even this
    message = ollama_error(r) if path.startswith("/api/") else openai_error(r)["message"]
    assert "origin" in message
    assert store_files(model_home) == before


def test_a_foreign_origin_is_refused_even_with_json_and_on_reads(server: RunningServer) -> None:
    r = httpx.post(server.url + "/v1/chat/completions", json=CHAT, headers={"Origin": EVIL})
    assert r.status_code == 403 and openai_error(r)["code"] == "origin_not_allowed"
    r = httpx.get(server.url + "/api/tags", headers={"Origin": "null"})  # sandboxed frame
    assert r.status_code == 403
    preflight = httpx.options(
        server.url + "/api/chat",
        headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 403
    assert "access-control-allow-origin" not in preflight.headers


@pytest.mark.parametrize("origin", ["http://localhost:5173", "http://127.0.0.1:8080"])
def test_preflight_and_call_from_a_local_origin_are_allowed(
    server: RunningServer, origin: str
) -> None:
    preflight = httpx.options(
        server.url + "/v1/chat/completions",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == origin
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "content-type" in preflight.headers["access-control-allow-headers"]
    r = httpx.post(
        server.url + "/v1/chat/completions", json=CHAT, headers={"Origin": origin}, timeout=GEN
    )
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == origin


def test_an_allowed_origin_must_still_send_json(server: RunningServer) -> None:
    r = httpx.post(
        server.url + "/api/generate",
        content=b'{"model": "smollm2:135m", "prompt": "Hi"}',
        headers={"Content-Type": "text/plain", "Origin": "http://localhost:3000"},
    )
    assert r.status_code == 415
    assert "application/json" in ollama_error(r)


def test_same_origin_and_curl_without_content_type_are_served(server: RunningServer) -> None:
    body = (
        b'{"model": "smollm2:135m", "prompt": "Hi", "stream": false, "options": {"num_predict": 2}}'
    )
    # The server's own page (same origin) may post text/plain; curl -d posts form encoding.
    for headers in (
        {"Content-Type": "text/plain", "Origin": server.url},
        {"Content-Type": "application/x-www-form-urlencoded"},
        {},
    ):
        r = httpx.post(server.url + "/api/generate", content=body, headers=headers, timeout=GEN)
        assert r.status_code == 200, (headers, r.text)
        assert r.json()["done"] is True


# ---- Host header (DNS rebinding) --------------------------------------------------------------


@pytest.mark.parametrize("host", ["evil.example", "evil.example:11434", "localhost.evil.example"])
def test_a_foreign_host_is_403_on_a_loopback_server(server: RunningServer, host: str) -> None:
    port = server.url.rsplit(":", 1)[1]
    r = raw_http.request(server.url, "GET", "/api/tags", headers={"Host": host})
    assert r.status_code == 403 and "host" in ollama_error(r)
    r = raw_http.request(
        server.url,
        "POST",
        "/v1/chat/completions",
        headers={"Host": host, "Content-Type": "application/json"},
        body=httpx.Request("POST", "/", json=CHAT).content,
    )
    assert r.status_code == 403 and openai_error(r)["code"] == "host_not_allowed"
    for ok in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "localhost"):
        r = raw_http.request(server.url, "GET", "/api/tags", headers={"Host": ok})
        assert r.status_code == 200, ok


def test_any_host_is_served_when_bound_to_all_interfaces(exposed: RunningServer) -> None:
    r = raw_http.request(
        exposed.url, "GET", "/api/tags", headers={"Host": "gpu-box.lan:11434", **authed()}
    )
    assert r.status_code == 200


# ---- body limits ------------------------------------------------------------------------------


def test_a_50_mb_body_is_413_within_a_second_without_being_read(server: RunningServer) -> None:
    size = 50 * 1024 * 1024
    r = raw_http.request(
        server.url,
        "POST",
        "/v1/chat/completions",
        headers={"Content-Type": "application/json"},
        body=raw_http.repeated(b"x" * 65536, size),
        content_length=size,
    )
    assert r.status_code == 413 and r.seconds < 1.0, r.seconds
    assert openai_error(r)["code"] == "payload_too_large"
    assert r.headers.get("connection") == "close"
    # Chunked, so no length to judge by: refused once the bytes pass the limit.
    r = raw_http.request(
        server.url,
        "POST",
        "/api/chat",
        headers={"Content-Type": "application/json"},
        body=raw_http.repeated(b"x" * 65536, size),
    )
    assert r.status_code == 413 and r.seconds < 1.0, r.seconds
    assert "max_body_bytes" in ollama_error(r)
    assert httpx.get(server.url + "/health").status_code == 200


def test_blob_uploads_have_their_own_limit_and_leave_nothing(
    exposed: RunningServer, exposed_home: Path
) -> None:
    before = store_files(exposed_home)
    digest = "sha256:" + "ab" * 32
    declared = raw_http.request(
        exposed.url,
        "POST",
        f"/api/blobs/{digest}",
        headers=authed(),
        body=raw_http.repeated(b"\0" * 65536, 2 * MiB),
        content_length=2 * MiB,
    )
    assert declared.status_code == 413 and "max_blob_bytes" in ollama_error(declared)
    streamed = raw_http.request(
        exposed.url,
        "POST",
        f"/api/blobs/{digest}",
        headers=authed(),
        body=raw_http.repeated(b"\0" * 65536, 2 * MiB),
    )
    assert streamed.status_code == 413 and "max_blob_bytes" in ollama_error(streamed)
    assert httpx.head(exposed.url + f"/api/blobs/{digest}", headers=authed()).status_code == 404
    assert store_files(exposed_home) == before  # no partial file left behind


def test_a_blob_larger_than_the_free_disk_is_refused_up_front(
    server: RunningServer, model_home: Path
) -> None:
    free = shutil.disk_usage(model_home).free
    digest = "sha256:" + "cd" * 32
    r = raw_http.request(
        server.url,
        "POST",
        f"/api/blobs/{digest}",
        body=raw_http.repeated(b"\0" * 65536, 4 * MiB),
        content_length=free + 1024**3,
    )
    assert r.status_code == 413
    assert "free disk" in ollama_error(r) or free + 1024**3 > 512 * 1024**3
    assert not any("cd" * 32 in p.name for p in (model_home / "blobs").iterdir())


# ---- API keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong-key"}, 401),
        ({"Authorization": f"Bearer {KEY_ENV}x"}, 401),
        ({"Authorization": f"Basic {KEY_ENV}"}, 401),
        (authed(KEY_ENV), 200),
        (authed(KEY_FILE), 200),
        ({"authorization": f"bearer {KEY_FILE}"}, 200),
        ({"X-Api-Key": KEY_ENV}, 200),
    ],
)
def test_api_key_missing_wrong_right(
    exposed: RunningServer, headers: dict[str, str], status: int
) -> None:
    r = httpx.get(exposed.url + "/v1/models", headers=headers)
    assert r.status_code == status
    if status == 401:
        assert openai_error(r)["type"] == "authentication_error"
        assert r.headers["www-authenticate"] == "Bearer"
    r = httpx.post(exposed.url + "/api/show", json={"model": DEFAULT_MODEL}, headers=headers)
    assert r.status_code == status
    if status == 401:
        assert "API key" in ollama_error(r)


def test_open_routes_need_no_key(exposed: RunningServer) -> None:
    assert httpx.get(exposed.url + "/health").status_code == 200
    assert httpx.get(exposed.url + "/ui").status_code != 401  # the chat page asks for the key
    preflight = httpx.options(
        exposed.url + "/v1/chat/completions",
        headers={"Origin": LISTED_ORIGIN, "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 204
    for path in ("/", "/api/version", "/api/tags", "/v1/models", "/slots", "/version"):
        assert httpx.get(exposed.url + path).status_code == 401, path


def test_a_listed_origin_with_a_key_reads_the_answer(exposed: RunningServer) -> None:
    r = httpx.post(
        exposed.url + "/v1/chat/completions",
        json=CHAT,
        headers={"Origin": LISTED_ORIGIN, **authed()},
        timeout=GEN,
    )
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == LISTED_ORIGIN
    r = httpx.post(
        exposed.url + "/v1/chat/completions", json=CHAT, headers={"Origin": LISTED_ORIGIN}
    )
    assert r.status_code == 401
    assert r.headers["access-control-allow-origin"] == LISTED_ORIGIN  # the page can show why


def test_the_openai_sdk_with_and_without_a_key(exposed: RunningServer) -> None:
    ask = [{"role": "user", "content": "Hi"}]
    anonymous = openai.OpenAI(base_url=exposed.url + "/v1", api_key="not-the-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        anonymous.chat.completions.create(model=DEFAULT_MODEL, messages=ask, max_tokens=2)  # type: ignore[arg-type]
    client = openai.OpenAI(base_url=exposed.url + "/v1", api_key=KEY_FILE, max_retries=0)
    stream = client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=ask,
        max_tokens=4,
        temperature=0,
        stream=True,  # type: ignore[arg-type]
    )
    finish = [c.choices[0].finish_reason for c in stream if c.choices]
    assert finish[-1] in ("stop", "length")


def test_the_ollama_client_with_and_without_a_key(
    exposed: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OLLAMA_API_KEY", raising=False)
    with pytest.raises(ollama.ResponseError) as info:
        ollama.Client(host=exposed.url).generate(model=DEFAULT_MODEL, prompt="Hi", options=SMALL)
    assert info.value.status_code == 401
    with_headers = ollama.Client(host=exposed.url, headers=authed())
    assert with_headers.generate(model=DEFAULT_MODEL, prompt="Hi", options=SMALL).done
    monkeypatch.setenv("OLLAMA_API_KEY", KEY_FILE)  # what the official client reads
    assert [m.model for m in ollama.Client(host=exposed.url).list().models] == [DEFAULT_MODEL]


# ---- what a request may ask of the server ------------------------------------------------------


def test_num_ctx_is_capped_by_n_ctx_cap(exposed: RunningServer) -> None:
    client = ollama.Client(host=exposed.url, headers=authed())
    r = client.generate(model=DEFAULT_MODEL, prompt="Hi", options={**SMALL, "num_ctx": 100_000})
    assert r.done
    assert [m.context_length for m in client.ps().models] == [1024]


def test_insecure_pulls_only_from_this_machine(exposed: RunningServer) -> None:
    body = {"model": "127.0.0.1:9/library/nothing:latest", "insecure": True, "stream": False}
    local = httpx.post(exposed.url + "/api/pull", json=body, headers=authed(), timeout=60)
    assert local.status_code != 403  # loopback client: tried (and failed: nothing listens)
    address = lan_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to call from")
    port = exposed.url.rsplit(":", 1)[1]
    remote = httpx.post(
        f"http://{address}:{port}/api/pull", json=body, headers=authed(), timeout=60
    )
    assert remote.status_code == 403
    assert "allow_insecure_pulls" in ollama_error(remote)
    secure = httpx.post(
        f"http://{address}:{port}/api/pull",
        json={**body, "insecure": False},
        headers=authed(),
        timeout=60,
    )
    assert secure.status_code != 403


def test_the_server_keeps_serving_during_refusals(server: RunningServer) -> None:
    """Refusals cost nothing: a stream started first finishes while 50 refusals go by."""
    done: list[bool] = []

    def stream() -> None:
        client = ollama.Client(host=server.url)
        parts = list(
            client.generate(
                model=DEFAULT_MODEL,
                prompt="Count",
                stream=True,
                options={"num_predict": 32, "temperature": 0},
            )
        )
        done.append(bool(parts and parts[-1].done))

    worker = threading.Thread(target=stream)
    worker.start()
    for _ in range(50):
        r = httpx.post(server.url + "/api/copy", content=b"{}", headers={"Origin": EVIL})
        assert r.status_code == 403
    worker.join(120)
    assert done == [True]
