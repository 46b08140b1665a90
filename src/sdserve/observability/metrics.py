"""Prometheus metrics for the API process (GET /metrics).

One registry per app (nothing global at import time, so tests can build many apps).
Queue gauges are read from the job store at scrape time: they are the numbers an
autoscaler needs (depth by priority, age of the oldest waiting job) and stay right
across API restarts and multiple API processes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sdserve.queue.base import QueueStats


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "sdserve_http_requests_total",
            "HTTP requests by route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "sdserve_http_request_duration_seconds",
            "HTTP request latency by route template.",
            ["method", "route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=self.registry,
        )
        self.jobs_submitted = Counter(
            "sdserve_jobs_submitted_total",
            "Jobs accepted, by priority.",
            ["priority"],
            registry=self.registry,
        )
        self.model_choices = Counter(
            "sdserve_model_choices_total",
            "Model choices at submit: the alias or rollout named (empty: a model name), "
            "the model (version) used and the routing rule that fired (empty: none).",
            ["alias", "model", "rule"],
            registry=self.registry,
        )
        self.errors = Counter(
            "sdserve_errors_total",
            "Error responses by stable error type.",
            ["type"],
            registry=self.registry,
        )

    def watch_queue(
        self, stats: Callable[[], QueueStats], ready_workers: Callable[[], int]
    ) -> None:
        self.registry.register(_QueueCollector(stats, ready_workers))


class _QueueCollector(Collector):
    def __init__(self, stats: Callable[[], QueueStats], ready_workers: Callable[[], int]) -> None:
        self.stats = stats
        self.ready_workers = ready_workers

    def collect(self) -> Iterator[GaugeMetricFamily]:
        s = self.stats()
        depth = GaugeMetricFamily(
            "sdserve_queue_depth", "Jobs waiting, by priority.", labels=["priority"]
        )
        for priority, count in s.queued.items():
            depth.add_metric([priority], count)
        yield depth
        yield GaugeMetricFamily("sdserve_jobs_running", "Jobs running now.", value=s.running)
        yield GaugeMetricFamily(
            "sdserve_dead_letters", "Jobs failed into the dead letters.", value=s.dead_letters
        )
        yield GaugeMetricFamily(
            "sdserve_oldest_queued_age_seconds",
            "Age of the oldest waiting job (0 when none).",
            value=s.oldest_queued_age or 0.0,
        )
        yield GaugeMetricFamily(
            "sdserve_workers_ready", "Workers with a model loaded.", value=self.ready_workers()
        )

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())


class MetricsMiddleware:
    """Counts and times every HTTP request by its route template (bounded labels)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def tracking_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - started)
