"""Worker faults: the lease lives until results are stored, SIGTERM drains or releases,
the supervisor's back-off resets, workers serve health and metrics on their own port."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from sdserve.config import Settings
from sdserve.domain.jobs import Job, JobStatus, NewJob
from sdserve.engine.fake import FakeEngine
from sdserve.observability.prom import WorkerMetrics
from sdserve.observability.worker_http import WorkerHttp
from sdserve.queue.memory import MemoryQueue
from sdserve.queue.wakeups import LocalWakeupBus
from sdserve.storage.local import LocalBlobStore
from sdserve.supervisor import WorkerSupervisor
from sdserve.testing import job_spec
from sdserve.worker.loop import Worker, WorkerConfig

KEY = b"k" * 32


class SlowBlobs(LocalBlobStore):
    """Stores slowly and, after each write, lets expired leases be reclaimed: were the
    heartbeat stopped when the engine returned, the job would be taken away here."""

    def __init__(self, root: Path, queue: MemoryQueue, delay: float) -> None:
        super().__init__(root)
        self.queue = queue
        self.delay = delay

    def put(self, *args: Any, **kwargs: Any) -> Any:
        time.sleep(self.delay)
        self.queue.reclaim_expired()
        return super().put(*args, **kwargs)


def _worker(q: MemoryQueue, engine: FakeEngine, blobs: LocalBlobStore, **cfg: Any) -> Worker:
    config = WorkerConfig(max_batch_images=8, batch_window_s=0, retry_delay_s=0, **cfg)
    return Worker(q, engine, blobs, LocalWakeupBus(), config, image_key=KEY)


def test_the_lease_is_renewed_until_the_results_are_stored(tmp_path: Path) -> None:
    q = MemoryQueue()
    worker = _worker(q, FakeEngine(), SlowBlobs(tmp_path, q, delay=0.4), lease_s=0.3)
    job = q.enqueue(NewJob(spec=job_spec(num_images=2)))[0]
    assert worker.run_once()
    done = q.get(job.id)
    assert done is not None and done.status is JobStatus.succeeded
    assert done.attempts == 1


def _running(q: MemoryQueue, job_id: str) -> Callable[[], bool]:
    def check() -> bool:
        job = q.get(job_id)
        return job is not None and job.status is JobStatus.running and job.progress_step >= 1

    return check


def _until(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.01)


def _drain(worker: Worker, q: MemoryQueue, job: Job) -> threading.Thread:
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    _until(_running(q, job.id))
    worker.request_drain()  # what the SIGTERM handler does
    stop.set()
    thread.join(timeout=30)
    assert not thread.is_alive()
    return thread


def test_sigterm_releases_a_batch_that_cannot_finish_in_the_grace_period(tmp_path: Path) -> None:
    q = MemoryQueue()
    worker = _worker(q, FakeEngine(step_delay=0.05), LocalBlobStore(tmp_path), drain_s=0.2)
    job = q.enqueue(NewJob(spec=job_spec(num_inference_steps=200)))[0]
    _drain(worker, q, job)
    back = q.get(job.id)
    assert back is not None and back.status is JobStatus.queued
    assert back.attempts == 0  # a release is not a failed attempt
    assert back.lease_owner is None
    assert not list(tmp_path.rglob("*.png"))  # nothing written for a released job


def test_sigterm_finishes_a_batch_that_fits_the_grace_period(tmp_path: Path) -> None:
    q = MemoryQueue()
    worker = _worker(q, FakeEngine(step_delay=0.01), LocalBlobStore(tmp_path), drain_s=30)
    job = q.enqueue(NewJob(spec=job_spec(num_inference_steps=40)))[0]
    other = q.enqueue(NewJob(spec=job_spec(prompt="later", num_inference_steps=40)))[0]
    worker.config = WorkerConfig(**{**worker.config.__dict__, "max_batch_images": 1})
    _drain(worker, q, job)
    done = q.get(job.id)
    assert done is not None and done.status is JobStatus.succeeded
    waiting = q.get(other.id)
    assert waiting is not None and waiting.status is JobStatus.queued  # claimed nothing more


class _Proc:
    def __init__(self, pid: int) -> None:
        self.pid = pid

    def poll(self) -> None:
        return None


def test_the_restart_back_off_resets_once_a_worker_has_been_ready_a_while(
    make_settings: Callable[..., Settings],
) -> None:
    ready: set[int] = set()
    sup = WorkerSupervisor(make_settings(workers=1), ready_pids=lambda: set(ready))
    delays = [sup.next_delay(0) for _ in range(6)]
    assert delays == [1.0, 2.0, 5.0, 10.0, 30.0, 30.0]  # a crash loop backs off
    sup.procs[0] = _Proc(4242)  # type: ignore[assignment]
    sup.note_ready(100.0)  # up but not ready: nothing changes
    sup.note_ready(100.0 + sup.stable_s + 1)
    assert sup.next_delay(0) == 30.0
    ready.add(4242)
    sup.note_ready(200.0)  # ready from now on
    sup.note_ready(200.0 + sup.stable_s / 2)
    assert sup.restarts[0] == 7  # not long enough yet
    sup.note_ready(200.0 + sup.stable_s)
    assert sup.restarts[0] == 0
    assert sup.next_delay(0) == 1.0


def test_worker_http_serves_health_readiness_and_moving_metrics(tmp_path: Path) -> None:
    q = MemoryQueue()
    metrics = WorkerMetrics()
    ready = threading.Event()
    http = WorkerHttp(metrics.registry, ready=ready.is_set, host="127.0.0.1", port=0).start()
    try:
        base = f"http://127.0.0.1:{http.port}"
        assert httpx.get(base + "/healthz").status_code == 200
        assert httpx.get(base + "/readyz").status_code == 503
        ready.set()
        assert httpx.get(base + "/readyz").json() == {"ready": True}
        worker = _worker(q, FakeEngine(), LocalBlobStore(tmp_path))
        worker.metrics = metrics
        q.enqueue(NewJob(spec=job_spec(num_images=3, num_inference_steps=4)))
        assert worker.run_once()
        text = httpx.get(base + "/metrics").text
    finally:
        http.close()
    assert 'sdserve_jobs_finished_total{status="succeeded"} 1.0' in text
    assert 'sdserve_images_generated_total{model="tiny"} 3.0' in text
    assert "sdserve_step_seconds_count 4.0" in text
    assert 'sdserve_generation_seconds_count{model="tiny",task="txt2img"} 1.0' in text
    assert 'sdserve_queue_wait_seconds_count{priority="normal"} 1.0' in text
    assert "sdserve_batch_images_sum 3.0" in text
    assert 'sdserve_model_cache_events_total{event="miss"} 1.0' in text


def test_healthz_fails_for_a_wedged_worker(tmp_path: Path) -> None:
    worker = _worker(MemoryQueue(), FakeEngine(), LocalBlobStore(tmp_path))
    http = WorkerHttp(
        WorkerMetrics().registry,
        ready=lambda: True,
        alive=lambda: not worker.stuck(60),
        host="127.0.0.1",
        port=0,
    ).start()
    try:
        url = f"http://127.0.0.1:{http.port}/healthz"
        assert httpx.get(url).status_code == 200
        worker.last_progress -= 61  # no loop round, no step for a minute
        stuck = httpx.get(url)
        assert stuck.status_code == 503 and stuck.json() == {"status": "stuck"}
        worker.last_progress = time.monotonic()  # what the next loop round does
        assert httpx.get(url).status_code == 200
    finally:
        http.close()


def test_jobs_ended_by_the_image_check_are_counted_by_status(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from sdserve.safety.images import ColourRangeChecker
    from sdserve.safety.metrics import SafetyMetrics
    from sdserve.safety.quarantine import Quarantine
    from sdserve.safety.records import MemoryDecisionLog
    from sdserve.worker.moderation import ImageModeration

    q = MemoryQueue()
    blobs = LocalBlobStore(tmp_path)
    metrics = WorkerMetrics()
    worker = _worker(q, FakeEngine(), blobs)
    worker.metrics = metrics
    flag_all = ColourRangeChecker(low=(0, 0, 0), high=(255, 255, 255))
    worker.moderation = ImageModeration(
        checker_for=lambda _model: flag_all,
        quarantine=Quarantine(blobs, b"q" * 32),
        log=MemoryDecisionLog(),
        metrics=SafetyMetrics(CollectorRegistry()),
        review="hold",
    )
    job = q.enqueue(NewJob(spec=job_spec(num_images=1)))[0]
    assert worker.run_once()
    after = q.get(job.id)
    assert after is not None and after.status is JobStatus.held
    text = generate_latest(metrics.registry).decode()
    assert 'sdserve_jobs_finished_total{status="held"} 1.0' in text
