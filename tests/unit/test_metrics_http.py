"""/metrics over the fake engine: label values stay bounded, scrapers get their format, off works."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

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


def http_counts(client: TestClient) -> dict[tuple[str, str, str], float]:
    text = client.get("/metrics").text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "gguf_serve_http_requests_total":
                out[(s.labels["api"], s.labels["route"], s.labels["status"])] = s.value
    return out


def test_routes_are_templates_and_unknown_paths_share_one_label(tmp_home: Path) -> None:
    with app_client(tmp_home) as client:
        for i in range(5):
            client.get(f"/scanner/{i}/probe.php")
            client.get(f"/v1/models/no-such-model-{i}")
        client.get("/ui/")
        client.get("/ui/app.js")
        client.delete("/v1/models")
        counts = http_counts(client)
    assert counts[("system", "unmatched", "404")] == 5
    assert counts[("openai", "/v1/models/{model_id:path}", "404")] == 5
    assert counts[("ui", "/ui", "200")] == 2
    assert counts[("openai", "/v1/models", "405")] == 1
    routes = {route for _, route, _ in counts}
    assert not any("no-such-model" in r or "scanner" in r for r in routes)


def test_openmetrics_when_asked(tmp_home: Path) -> None:
    with app_client(tmp_home) as client:
        plain = client.get("/metrics")
        assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")
        open_metrics = client.get(
            "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
        assert open_metrics.headers["content-type"].startswith("application/openmetrics-text")
        assert open_metrics.text.rstrip().endswith("# EOF")


def test_metrics_can_be_turned_off(tmp_home: Path) -> None:
    with app_client(tmp_home, metrics=False) as client:
        response = client.get("/metrics")
        assert response.status_code == 404
        assert "turned off" in response.json()["error"]["message"]


def test_loaded_model_gauges_and_memory_by_device() -> None:
    """The scrape-time gauges, over a model whose memory plan puts bytes on two devices."""
    from types import SimpleNamespace

    from prometheus_client import CollectorRegistry, generate_latest

    from server.api.metrics_loaded import LoadedModelsCollector

    devices = [SimpleNamespace(name="CPU", total=300), SimpleNamespace(name="CUDA0", total=700)]
    model = SimpleNamespace(
        name="m:1", engine=FakeEngine(n_ctx_slot=512), plan=SimpleNamespace(devices=devices)
    )
    manager = SimpleNamespace(loaded=lambda: [model])
    registry = CollectorRegistry()
    registry.register(LoadedModelsCollector(manager))  # type: ignore[arg-type]
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
    }
    assert samples[("gguf_serve_models_loaded", ())] == 1
    assert samples[("gguf_serve_slots", (("model", "m:1"),))] == 1
    assert samples[("gguf_serve_kv_cells", (("model", "m:1"),))] == 512
    assert samples[("gguf_serve_queue_depth", (("model", "m:1"),))] == 0
    memory = "gguf_serve_model_memory_bytes"
    assert samples[(memory, (("device", "CPU"), ("model", "m:1")))] == 300
    assert samples[(memory, (("device", "CUDA0"), ("model", "m:1")))] == 700
