"""Prometheus metrics of a worker process (served on its own port by worker_http).

One registry per worker (nothing global at import time, so tests can build many).
Buckets fit diffusion timings: a denoising step takes ~5 ms (tiny models, H100) to a
few seconds (SDXL on a small GPU); a whole generation 50 ms to several minutes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from sdserve.domain.jobs import Job
    from sdserve.engine.base import BatchOutput

GENERATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300, 600)
STEP_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5)
QUEUE_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)
MODEL_LOAD_BUCKETS = (0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
BATCH_SIZE_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)
# device, free bytes, total bytes, bytes reserved by torch, utilisation 0..1 (or None)
GpuRow = tuple[str, int, int, int, float | None]


class _Engine(Protocol):
    def loaded_models(self) -> list[str]: ...


class WorkerMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.generation = Histogram(
            "sdserve_generation_seconds",
            "Engine time of one batch, by model and task.",
            ["model", "task"],
            buckets=GENERATION_BUCKETS,
            registry=r,
        )
        self.step = Histogram(
            "sdserve_step_seconds",
            "Time of one denoising step (the whole batch).",
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "sdserve_queue_wait_seconds",
            "From submission to the claim that ran the job, by priority.",
            ["priority"],
            buckets=QUEUE_WAIT_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "sdserve_batch_images",
            "Images in one engine call.",
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.images = Counter(
            "sdserve_images_generated_total",
            "Images generated (rate() = images per second), by model.",
            ["model"],
            registry=r,
        )
        self.jobs = Counter(
            "sdserve_jobs_finished_total",
            "Jobs this worker ended, by final status.",
            ["status"],
            registry=r,
        )
        self.errors = Counter(
            "sdserve_worker_errors_total",
            "Failed batches and jobs, by stable error type.",
            ["type"],
            registry=r,
        )
        self.model_load = Histogram(
            "sdserve_model_load_seconds",
            "Time to load (and warm) a model.",
            ["model"],
            buckets=MODEL_LOAD_BUCKETS,
            registry=r,
        )
        self.cache = Counter(
            "sdserve_model_cache_events_total",
            "Model cache: hit (model already loaded), miss (loaded for the batch), evict.",
            ["event"],
            registry=r,
        )
        self.ready = Gauge("sdserve_worker_ready", "1 once a model is loaded.", registry=r)
        self.started = Gauge(
            "sdserve_worker_start_time_seconds", "Unix time the worker started.", registry=r
        )
        self.started.set(time.time())
        r.register(_GpuCollector())

    # --- hooks called by the worker loop (small, so other code can add more) ---
    def claimed(self, jobs: list[Job], now: float | None = None) -> None:
        ts = time.time() if now is None else now
        for job in jobs:
            self.queue_wait.labels(job.spec.priority.value).observe(max(ts - job.created_at, 0))

    def batch_done(
        self,
        jobs: list[Job],
        output: BatchOutput,
        elapsed: float,
        loaded_before: set[str],
        engine: _Engine,
    ) -> None:
        spec = jobs[0].spec
        self.generation.labels(spec.model, spec.task.value).observe(elapsed)
        images = sum(len(item.images) for item in output.items.values())
        self.batch_size.observe(sum(j.num_images for j in jobs))
        self.images.labels(spec.model).inc(images)
        self.cache.labels("hit" if spec.model in loaded_before else "miss").inc()
        evicted = loaded_before - set(engine.loaded_models())
        if evicted:
            self.cache.labels("evict").inc(len(evicted))

    def step_time(self, seconds: float) -> None:
        self.step.observe(seconds)

    def job_finished(self, status: str) -> None:
        self.jobs.labels(status).inc()

    def error(self, error_type: str) -> None:
        self.errors.labels(error_type).inc()

    def model_loaded(self, model: str, seconds: float) -> None:
        self.model_load.labels(model).observe(seconds)


class _GpuCollector(Collector):
    """GPU memory (bytes, per device) read at scrape time; nothing without CUDA (and
    torch is never imported for it: a worker that uses torch has it loaded)."""

    def __init__(self, probe: Callable[[], list[GpuRow]] | None = None) -> None:
        self.probe = probe or _cuda_memory

    def collect(self) -> Iterator[GaugeMetricFamily]:
        rows = self.probe()
        if not rows:
            return
        used = GaugeMetricFamily(
            "sdserve_gpu_memory_used_bytes", "GPU memory in use.", labels=["device"]
        )
        total = GaugeMetricFamily(
            "sdserve_gpu_memory_total_bytes", "GPU memory size.", labels=["device"]
        )
        busy = GaugeMetricFamily(
            "sdserve_gpu_utilization_ratio",
            "Share of the last sample period the GPU was busy (NVML; absent without it).",
            labels=["device"],
        )
        reserved = GaugeMetricFamily(
            "sdserve_gpu_memory_reserved_bytes",
            "GPU memory held by torch's caching allocator.",
            labels=["device"],
        )
        for device, free_b, total_b, reserved_b, utilization in rows:
            used.add_metric([device], total_b - free_b)
            total.add_metric([device], total_b)
            reserved.add_metric([device], reserved_b)
            if utilization is not None:
                busy.add_metric([device], utilization)
        yield used
        yield total
        yield reserved
        if busy.samples:
            yield busy

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())


def _cuda_memory() -> list[GpuRow]:
    import sys

    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return []
    rows: list[GpuRow] = []
    for index in range(torch.cuda.device_count()):
        free_b, total_b = torch.cuda.mem_get_info(index)
        reserved = int(torch.cuda.memory_reserved(index))
        rows.append(
            (f"cuda:{index}", int(free_b), int(total_b), reserved, _utilization(torch, index))
        )
    return rows


def _utilization(torch: Any, index: int) -> float | None:
    """torch reads utilisation through NVML (the nvidia-ml-py package); without it,
    none is reported rather than a wrong 0."""
    try:
        return float(torch.cuda.utilization(index)) / 100
    except Exception:
        return None
