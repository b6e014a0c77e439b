"""Prometheus metrics: one registry per application, made in `create_app`, never module globals.

The HTTP edge counts requests (`metrics_http.py`); the request lifecycle, the engine and the
scheduler report through the small interfaces they are given (`RunObserver`, `EngineReporter`,
`SchedulerReporter`), which this class implements; what is true at one moment (slots, queue, KV cells, memory) is read from the loaded
models when Prometheus scrapes (`metrics_loaded.py`). Every name starts with `gguf_serve_` and
carries its unit; labels take bounded values only: API, route template, status, model name (a
model in the store), reason and outcome from fixed lists. No prompt text, no client strings.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder

from server.api.lifecycle import RunOutcome
from server.engine.types import EngineReporter, RequestReport
from server.scheduler import ModelManager, UnloadReason

PREFIX = "gguf_serve"

# Seconds. Wide enough for a 135M model on a laptop CPU and a 70B one on a busy GPU.
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_PER_TOKEN_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5)
_QUEUE_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_LOAD_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

# Why a request was refused: the only values the `reason` label takes.
REJECTION_REASONS = (
    "queue_full",
    "too_large",
    "context_too_long",
    "unauthorized",
    "forbidden",
)


class Metrics:
    """The application's metrics and the reporters that feed them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter(
            f"{PREFIX}_http_requests_total",
            "HTTP requests by API (openai, ollama, ui, system), route template and status.",
            ["api", "route", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            f"{PREFIX}_http_request_duration_seconds",
            "Time from a request's arrival to the end of its response body (streams included).",
            ["api", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.rejections = Counter(
            f"{PREFIX}_rejections_total",
            "Requests refused before any work: " + ", ".join(REJECTION_REASONS) + ".",
            ["reason"],
            registry=r,
        )
        self.requests = Counter(
            f"{PREFIX}_requests_total",
            "Generation requests (chat, completions, generate; n choices count once) by API and"
            " how they ended: completed, cancelled (the client left first), failed.",
            ["api", "model", "outcome"],
            registry=r,
        )
        self.prompt_tokens = Counter(
            f"{PREFIX}_prompt_tokens_total",
            "Prompt tokens of finished requests (evaluated or reused from the cache).",
            ["model"],
            registry=r,
        )
        self.cached_tokens = Counter(
            f"{PREFIX}_prompt_tokens_cached_total",
            "Prompt tokens reused from a slot's KV cache instead of evaluated.",
            ["model"],
            registry=r,
        )
        self.generated_tokens = Counter(
            f"{PREFIX}_generation_tokens_total",
            "Tokens generated (including those of answers stopped early).",
            ["model"],
            registry=r,
        )
        self.engine_requests = Counter(
            f"{PREFIX}_engine_requests_total",
            "Sequences the engine ran (one per choice), by how they ended: stop, length,"
            " cancelled, error.",
            ["model", "outcome"],
            registry=r,
        )
        self.ttft = Histogram(
            f"{PREFIX}_time_to_first_token_seconds",
            "From a request's submission to the engine to its first token (queue + prefill).",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            f"{PREFIX}_time_per_output_token_seconds",
            "Mean time between a request's output tokens after the first (per request).",
            ["model"],
            buckets=_PER_TOKEN_BUCKETS,
            registry=r,
        )
        self.queue_time = Histogram(
            f"{PREFIX}_request_queue_time_seconds",
            "Time a request waited for a free slot.",
            ["model"],
            buckets=_QUEUE_BUCKETS,
            registry=r,
        )
        self.loads = Counter(
            f"{PREFIX}_model_loads_total",
            "Model loads, by outcome: loaded, failed.",
            ["model", "outcome"],
            registry=r,
        )
        self.load_duration = Histogram(
            f"{PREFIX}_model_load_duration_seconds",
            "Time a successful model load took (file, context, engine start).",
            ["model"],
            buckets=_LOAD_BUCKETS,
            registry=r,
        )
        self.unloads = Counter(
            f"{PREFIX}_model_unloads_total",
            "Model unloads, by reason: expired, evicted, reload, requested, shutdown.",
            ["model", "reason"],
            registry=r,
        )

    def watch(self, manager: ModelManager) -> None:
        """Read the loaded models' slots, queue, KV cells and memory at each scrape."""
        from server.api.metrics_loaded import LoadedModelsCollector

        self.registry.register(LoadedModelsCollector(manager))

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The registry in the text format the scraper asked for (Prometheus or OpenMetrics)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    # ---- the HTTP edge ---------------------------------------------------------------------

    def http_request(
        self, api: str, route: str, status: int, seconds: float, rejection: str | None
    ) -> None:
        self.http_requests.labels(api, route, str(status)).inc()
        self.http_duration.labels(api, route).observe(seconds)
        if rejection is not None:
            self.rejections.labels(rejection).inc()

    # ---- RunObserver (the request lifecycle) ------------------------------------------------

    def run_ended(self, api: str, model: str, outcome: RunOutcome) -> None:
        self.requests.labels(api, model, outcome).inc()

    # ---- SchedulerReporter -----------------------------------------------------------------

    def model_loaded(self, name: str, seconds: float) -> None:
        self.loads.labels(name, "loaded").inc()
        self.load_duration.labels(name).observe(seconds)

    def model_load_failed(self, name: str) -> None:
        self.loads.labels(name, "failed").inc()

    def model_unloaded(self, name: str, reason: UnloadReason) -> None:
        self.unloads.labels(name, reason).inc()

    def engine_reporter(self, name: str) -> EngineReporter:
        return _ModelReporter(self, name)


class _ModelReporter:
    """One model's EngineReporter: label children resolved once, so a report costs a few
    lock-protected additions on the engine's worker thread."""

    def __init__(self, metrics: Metrics, model: str) -> None:
        self._metrics = metrics
        self._model = model
        self._prompt = metrics.prompt_tokens.labels(model)
        self._cached = metrics.cached_tokens.labels(model)
        self._generated = metrics.generated_tokens.labels(model)
        self._ttft = metrics.ttft.labels(model)
        self._tpot = metrics.tpot.labels(model)
        self._queue = metrics.queue_time.labels(model)

    def admitted(self, queue_seconds: float) -> None:
        self._queue.observe(queue_seconds)

    def first_token(self, seconds: float) -> None:
        self._ttft.observe(seconds)

    def finished(self, report: RequestReport) -> None:
        self._metrics.engine_requests.labels(self._model, report.outcome).inc()
        self._prompt.inc(report.prompt_tokens)
        self._cached.inc(report.cached_tokens)
        self._generated.inc(report.generated_tokens)
        if report.generated_tokens > 1 and report.generation_seconds > 0:
            self._tpot.observe(report.generation_seconds / (report.generated_tokens - 1))
