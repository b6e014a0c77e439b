"""Which URLs a pull may use: https, or plain http only to loopback or with --insecure."""

from __future__ import annotations

import pytest

from server.errors import InvalidName, PullError
from server.registry import parse_name
from server.registry.sources import OllamaRegistrySource, choose_url_source
from server.registry.sources.transport import check_url, is_loopback, scheme_for


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("localhost:5000", True),
        ("LOCALHOST", True),
        ("registry.localhost", True),
        ("127.0.0.1", True),
        ("127.3.4.5:8080", True),
        ("[::1]:80", True),
        ("::1", True),
        ("registry.ollama.ai", False),
        ("10.0.0.1", False),
        ("192.168.1.2:5000", False),
        ("localhost.example.com", False),
        ("127.0.0.1.example.com", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    assert scheme_for(host, insecure=False) == ("http" if loopback else "https")
    assert scheme_for(host, insecure=True) == "http"


def test_registry_urls_follow_the_name_host() -> None:
    assert OllamaRegistrySource(parse_name("llama3.1:8b")).base == "https://registry.ollama.ai"
    local = OllamaRegistrySource(parse_name("localhost:5000/team/model"))
    assert local.base == "http://localhost:5000"
    insecure = OllamaRegistrySource(parse_name("registry.lan/team/model"), insecure=True)
    assert insecure.base == "http://registry.lan"


@pytest.mark.parametrize(
    ("url", "insecure", "problem"),
    [
        ("https://example.com/m.gguf", False, None),
        ("http://127.0.0.1:8000/m.gguf", False, None),
        ("http://example.com/m.gguf", True, None),
        ("http://example.com/m.gguf", False, "refusing plain http to example.com"),
        ("ftp://example.com/m.gguf", True, "only http(s) URLs"),
        ("file:///etc/passwd", True, "only http(s) URLs"),
        ("https:///nohost", False, "only http(s) URLs"),
    ],
)
def test_check_url(url: str, insecure: bool, problem: str | None) -> None:
    if problem is None:
        assert str(check_url(url, insecure=insecure)) == url
    else:
        with pytest.raises(PullError, match=problem.replace("(", r"\(").replace(")", r"\)")):
            check_url(url, insecure=insecure)


def test_url_sources_check_scheme_and_digest() -> None:
    with pytest.raises(PullError, match="refusing plain http"):
        choose_url_source("http://example.com/m.gguf")
    with pytest.raises(InvalidName, match="invalid digest"):
        choose_url_source("https://example.com/m.gguf", digest="sha256:../../x")
    source = choose_url_source("https://example.com/m.gguf", digest="sha256-" + "a" * 64)
    assert source.describe() == "https://example.com/m.gguf (URL)"
