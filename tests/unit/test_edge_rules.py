"""The edge's rules as pure functions: Host, Origin, API keys, bad text, settings parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.api.edge_rules import (
    HostRule,
    KeyRing,
    OriginRule,
    host_name,
    presented_key,
    same_origin,
)
from server.api.text_guard import find_bad_text
from server.settings import SettingsError, load_settings


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("LocalHost:11434", "localhost"),
        ("[::1]:8080", "::1"),
        ("[::1]", "::1"),
        ("example.com.", "example.com"),
        ("127.0.0.1", "127.0.0.1"),
        ("::1", "::1"),
    ],
)
def test_host_name(header: str, name: str) -> None:
    assert host_name(header) == name


def test_loopback_binding_serves_only_local_names_by_default() -> None:
    rule = HostRule("127.0.0.1", None)
    for ok in ("localhost", "localhost:1", "127.0.0.1:11434", "127.9.9.9", "[::1]:5", ""):
        assert rule.allows(ok), ok
    for bad in ("evil.example", "localhost.evil.example", "192.168.1.5", "0.0.0.0", "evil:11434"):
        assert not rule.allows(bad), bad


@pytest.mark.parametrize("bind", ["0.0.0.0", "::", "192.168.1.5", "gpu-box.lan"])
def test_other_bindings_serve_any_name_unless_a_list_is_set(bind: str) -> None:
    assert HostRule(bind, None).allows("whatever.example:11434")
    listed = HostRule(bind, ["gpu-box.lan", "*.internal.example"])
    assert listed.allows("gpu-box.lan:11434") and listed.allows("a.internal.example")
    assert listed.allows("localhost") and not listed.allows("evil.example")
    assert not listed.allows("internal.example")  # the wildcard needs a label before the dot
    assert HostRule("127.0.0.1", ["*"]).allows("evil.example")


def test_local_origins_are_allowed_others_only_when_listed() -> None:
    rule = OriginRule([])
    for ok in (
        "http://localhost",
        "http://localhost:5173",
        "https://127.0.0.1:8443",
        "http://[::1]:3000",
        "vscode-webview://abc123",
        "HTTP://LOCALHOST:80/",
    ):
        assert rule.allows(ok), ok
    for bad in (
        "http://evil.example",
        "http://localhost.evil.example",
        "http://127.0.0.1.evil.example",
        "null",
        "file://",
        "http://localhost:1/x",
    ):
        assert not rule.allows(bad), bad
    listed = OriginRule(["https://chat.example.com", "https://*.example.org", "null"])
    assert listed.allows("https://chat.example.com:443") and listed.allows("https://a.example.org")
    assert listed.allows("null") and not listed.allows("http://chat.example.com")
    assert OriginRule(["*"]).allows("http://evil.example")


def test_same_origin_is_the_scheme_and_host_the_request_came_in_on() -> None:
    assert same_origin("http://localhost:11434", "http", "localhost:11434")
    assert same_origin("http://gpu-box.lan", "http", "gpu-box.lan:80")
    assert not same_origin("http://localhost:11435", "http", "localhost:11434")
    assert not same_origin("https://localhost:11434", "http", "localhost:11434")
    assert not same_origin("http://localhost:11434", "http", "")


def test_keys_match_exactly() -> None:
    ring = KeyRing(["alpha-key", "beta-key"])
    assert ring.enabled and not KeyRing([]).enabled
    assert ring.matches(b"alpha-key") and ring.matches(b"beta-key")
    for wrong in (b"", b"alpha", b"alpha-key ", b"ALPHA-KEY", b"beta-keyx"):
        assert not ring.matches(wrong)


@pytest.mark.parametrize(
    ("headers", "key"),
    [
        ([(b"authorization", b"Bearer abc")], b"abc"),
        ([(b"authorization", b"bearer   abc ")], b"abc"),
        ([(b"x-api-key", b"abc")], b"abc"),
        ([(b"authorization", b"Basic abc")], None),
        ([(b"authorization", b"Bearer ")], None),
        ([], None),
    ],
)
def test_presented_key(headers: list[tuple[bytes, bytes]], key: bytes | None) -> None:
    assert presented_key(headers) == key


@pytest.mark.parametrize(
    ("body", "found"),
    [
        ({"messages": [{"content": "ok"}, {"content": "a\x00b"}]}, ("messages.1.content", "NUL")),
        (
            {"tools": [{"function": {"description": "\ud800"}}]},
            ("tools.0.function.description", "surrogate"),
        ),
        ({"options": {"st\udc00op": 1}}, ("options", "surrogate")),
        (["\x00"], ("0", "NUL")),
        ("\ud83d", ("body", "surrogate")),
        ({"fine": ["😀 \U0001f600", 1, None, {"x": "y"}]}, None),
    ],
)
def test_find_bad_text(body: object, found: tuple[str, str] | None) -> None:
    result = find_bad_text(body)
    if found is None:
        assert result is None
    else:
        assert result is not None and result[0] == found[0] and found[1] in result[1]


def test_list_settings_take_commas_or_json(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GGUF_SERVE_CORS_ORIGINS", "https://a.example, https://*.b.example")
    monkeypatch.setenv("GGUF_SERVE_ALLOWED_HOSTS", '["gpu-box.lan"]')
    monkeypatch.setenv("GGUF_SERVE_API_KEYS", "k1,k2")
    keys = tmp_path / "keys"
    keys.write_text("# comment\nk3\n\nk1\n")
    s = load_settings(api_key_file=keys)
    assert s.cors_origins == ["https://a.example", "https://*.b.example"]
    assert s.allowed_hosts == ["gpu-box.lan"]
    assert s.api_keys == ["k1", "k2", "k3"]
    assert "k1" not in repr(s)


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"api_keys": "has space"}, "API key"),
        ({"api_key_file": "/nonexistent/keys"}, "cannot read"),
        ({"max_body_bytes": 10}, "max_body_bytes"),
    ],
)
def test_bad_edge_settings_stop_start_up(kw: dict[str, object], needle: str) -> None:
    with pytest.raises(SettingsError, match=needle):
        load_settings(**kw)
