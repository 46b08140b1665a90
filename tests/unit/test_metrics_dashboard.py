"""Every query of the Grafana dashboard names metrics the service really exports
(collected from the API's and a worker's registries, not read from source)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from sdserve.observability.metrics import ApiMetrics
from sdserve.observability.prom import WorkerMetrics, _GpuCollector
from sdserve.queue.base import QueueStats

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "sdserve.json"


def _sample_names(registry: CollectorRegistry) -> set[str]:
    return {s.name for family in registry.collect() for s in family.samples}


def exported() -> set[str]:
    api = ApiMetrics()
    stats = QueueStats(queued={"high": 1, "normal": 2, "low": 0}, running=1, dead_letters=0)
    api.watch_queue(lambda: stats, lambda: 1)
    # Label sets appear once used: touch every labelled family once.
    api.requests.labels("GET", "/v1/models", "200").inc()
    api.latency.labels("GET", "/v1/models").observe(0.01)
    api.errors.labels("not_found").inc()
    api.webhook_outcome("delivered")
    worker = WorkerMetrics()
    worker.generation.labels("m", "txt2img").observe(1)
    worker.queue_wait.labels("normal").observe(1)
    worker.images.labels("m").inc()
    worker.jobs.labels("succeeded").inc()
    worker.errors.labels("generation_failed").inc()
    worker.model_load.labels("m").observe(1)
    worker.cache.labels("hit").inc()
    worker.step.observe(0.1)
    worker.batch_size.observe(2)
    gpu = CollectorRegistry()
    gpu.register(_GpuCollector(lambda: [("cuda:0", 1 << 30, 80 << 30, 2 << 30, 0.5)]))
    return _sample_names(api.registry) | _sample_names(worker.registry) | _sample_names(gpu)


def test_every_panel_query_names_an_exported_metric() -> None:
    names = exported()
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["panels"], "an empty dashboard"
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used = set(re.findall(r"\bsdserve_\w+", target["expr"]))
            assert used, f"{panel['title']}: no sdserve metric in {target['expr']}"
            assert used <= names, f"{panel['title']}: not exported: {used - names}"


def test_the_dashboard_covers_the_issue_list() -> None:
    exprs = " ".join(
        t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]
    )
    for metric in (
        "sdserve_generation_seconds_bucket",
        "sdserve_step_seconds_bucket",
        "sdserve_queue_wait_seconds_bucket",
        "sdserve_batch_images_sum",
        "sdserve_images_generated_total",
        "sdserve_jobs_finished_total",
        "sdserve_worker_errors_total",
        "sdserve_webhook_deliveries_total",
        "sdserve_model_load_seconds_bucket",
        "sdserve_model_cache_events_total",
        "sdserve_gpu_memory_used_bytes",
    ):
        assert metric in exprs, metric


def test_gpu_series_appear_only_with_a_gpu_and_utilisation_only_when_read() -> None:
    def families(rows: list[tuple[str, int, int, int, float | None]]) -> dict[str, float]:
        registry = CollectorRegistry()
        registry.register(_GpuCollector(lambda: rows))
        return {s.name: s.value for f in registry.collect() for s in f.samples}

    assert families([]) == {}
    got = families([("cuda:0", 30, 80, 20, None)])
    assert got == {
        "sdserve_gpu_memory_used_bytes": 50,
        "sdserve_gpu_memory_total_bytes": 80,
        "sdserve_gpu_memory_reserved_bytes": 20,
    }
    assert families([("cuda:0", 30, 80, 20, 0.75)])["sdserve_gpu_utilization_ratio"] == 0.75
