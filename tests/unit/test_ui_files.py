"""The web page's files at /ui: served with their headers, off when the setting says so."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from server.api.ui import UI_DIR
from server.app import create_app
from server.settings import load_settings
from tests.fakes import FakeEngine, fake_factory


def app_client(home: Path, **settings: object) -> TestClient:
    app = create_app(
        load_settings(home=home, **settings),
        engine_factory=fake_factory(FakeEngine()),  # type: ignore[arg-type]
        preload=False,
    )
    return TestClient(app, base_url="http://localhost")  # a Host the edge serves


def test_the_page_and_its_modules_are_served_with_a_strict_policy(tmp_home: Path) -> None:
    with app_client(tmp_home) as client:
        redirect = client.get("/ui", follow_redirects=False)
        assert redirect.status_code in (307, 308) and redirect.headers["location"].endswith("/ui/")
        page = client.get("/ui/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "default-src 'none'" in policy
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert page.headers["x-content-type-options"] == "nosniff"
        for name in ("app.js", "api.js", "render.js", "store.js"):
            module = client.get(f"/ui/{name}")
            assert module.status_code == 200
            assert module.headers["content-type"].startswith("text/javascript")
        assert client.get("/ui/style.css").headers["content-type"].startswith("text/css")
        assert client.get("/").text == "Ollama is running"  # clients that probe / still work


def test_the_page_loads_nothing_from_elsewhere() -> None:
    """No CDN, no remote fonts: every URL in the page's files is relative or same-origin."""
    for path in UI_DIR.iterdir():
        text = path.read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, path
        assert ".innerHTML" not in text and "outerHTML" not in text, path  # text only, as DOM


def test_the_page_can_be_turned_off(tmp_home: Path) -> None:
    with app_client(tmp_home, ui=False) as client:
        assert client.get("/ui/").status_code == 404
        assert client.get("/ui/app.js").status_code == 404
        assert client.get("/").text == "Ollama is running"
