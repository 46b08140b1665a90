"""Chaos runs: real worker processes (the production worker entry point with the
simulated engine) killed and terminated at random while they drain a queue.

Workers are forked from the test process (modules already imported: a restart costs
milliseconds, not a second of imports), then run ``run_worker_process`` exactly as
`sdserve worker` does: its signal handlers, drain, heartbeat, registry and HTTP port.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from sdserve.config import Settings
from sdserve.domain.jobs import JobStatus, NewJob
from sdserve.queue.base import JobQueue
from sdserve.testing import job_spec
from sdserve.worker.process import run_worker_process

_FORK = multiprocessing.get_context("fork")


def _worker_main(settings: Settings) -> None:
    import logging

    logging.basicConfig(level=logging.ERROR)
    run_worker_process(settings, embedded=False)


@dataclass
class ChaosReport:
    jobs: int = 0
    succeeded: int = 0
    lost: int = 0  # acknowledged, yet failed, canceled or gone
    stuck: int = 0  # not finished when the run ended
    duplicated: int = 0  # images stored more than once, or ids shared between jobs
    kills: int = 0
    terms: int = 0
    term_exit_codes: list[int | None] = field(default_factory=list)
    dead_letters: int = 0
    missing_images: int = 0  # in a result, not in storage
    seconds: float = 0.0

    def line(self, name: str) -> str:
        return (
            f"chaos[{name}]: jobs={self.jobs} succeeded={self.succeeded} lost={self.lost} "
            f"stuck={self.stuck} duplicated={self.duplicated} missing_images={self.missing_images} "
            f"dead_letters={self.dead_letters} "
            f"sigkill={self.kills} sigterm={self.terms} "
            f"sigterm_exit_codes={sorted({c for c in self.term_exit_codes}, key=str)} "
            f"seconds={self.seconds:.1f}"
        )


class Fleet:
    """``size`` worker processes, each replaced as soon as it is stopped."""

    def __init__(self, settings: Settings, size: int) -> None:
        self.settings = settings
        self.procs: list[BaseProcess] = []
        for _ in range(size):
            self.procs.append(self._spawn())

    def _spawn(self) -> BaseProcess:
        proc = _FORK.Process(target=_worker_main, args=(self.settings,), daemon=True)
        proc.start()
        return proc

    def strike(self, index: int, sig: int, report: ChaosReport) -> None:
        proc = self.procs[index]
        assert proc.pid is not None
        os.kill(proc.pid, sig)
        if sig == signal.SIGKILL:
            report.kills += 1
            proc.join(10)
        else:
            report.terms += 1
            proc.join(self.settings.drain_seconds + 10)
            report.term_exit_codes.append(proc.exitcode)
        self.procs[index] = self._spawn()

    def stop(self) -> None:
        for proc in self.procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.join(10)


def chaos_settings(make_settings: Callable[..., Settings], **overrides: object) -> Settings:
    values: dict[str, object] = {
        "engine": "fake",
        "fake_step_ms": 15,
        "max_batch_images": 2,
        "lease_seconds": 1.5,
        "drain_seconds": 1.0,
        "poll_interval_ms": 100,
        "worker_metrics_port": 0,
        "max_attempts": 3,
    }
    values.update(overrides)
    return make_settings(**values)


def submit(queue: JobQueue, count: int, start: int = 0) -> list[str]:
    ids = []
    for i in range(start, start + count):
        spec = job_spec(prompt=f"chaos {i}", seed=i, num_inference_steps=10, model="fake")
        ids.append(queue.enqueue(NewJob(spec=spec, max_attempts=3))[0].id)
    return ids


def run_chaos(
    settings: Settings,
    queue: JobQueue,
    images_dir: Path,
    *,
    jobs: int = 200,
    workers: int = 4,
    kills: int = 20,
    terms: int = 10,
    interval: float = 0.25,
    midway: Callable[[], None] | None = None,
    finish_timeout: float = 60.0,
    seed: int = 7,
) -> ChaosReport:
    """Submit half the jobs, start the fleet, strike ``kills`` SIGKILLs and ``terms``
    SIGTERMs at random workers (``midway`` runs halfway through, e.g. a Redis restart),
    submit the other half, then wait for every job to end and count."""
    rng = random.Random(seed)
    report = ChaosReport()
    started = time.monotonic()
    ids = submit(queue, jobs // 2)
    fleet = Fleet(settings, workers)
    try:
        strikes = [signal.SIGKILL] * kills + [signal.SIGTERM] * terms
        rng.shuffle(strikes)
        for n, sig in enumerate(strikes):
            if n == len(strikes) // 2:
                if midway is not None:
                    midway()
                ids += submit(queue, jobs - jobs // 2, start=jobs // 2)
            time.sleep(interval * rng.uniform(0.5, 1.5))
            fleet.strike(rng.randrange(workers), sig, report)
        _wait_all(queue, ids, finish_timeout)
    finally:
        fleet.stop()
    _count(report, queue, ids, images_dir)
    report.seconds = time.monotonic() - started
    return report


def _wait_all(queue: JobQueue, ids: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = set(ids)
    while pending and time.monotonic() < deadline:
        for job_id in list(pending):
            job = queue.get(job_id)
            if job is not None and job.status.terminal:
                pending.discard(job_id)
        time.sleep(0.1)


def _count(report: ChaosReport, queue: JobQueue, ids: list[str], images_dir: Path) -> None:
    report.jobs = len(ids)
    expected_images: set[str] = set()
    for job_id in ids:
        job = queue.get(job_id)
        if job is None:
            report.lost += 1
        elif not job.status.terminal:
            report.stuck += 1
        elif job.status is JobStatus.succeeded and job.result is not None:
            report.succeeded += 1
            got = {im.id for im in job.result.images}
            if len(got) != job.num_images or got & expected_images:
                report.duplicated += 1
            expected_images |= got
        else:
            report.lost += 1
    report.dead_letters = len(queue.dead_letters(1000))
    # One stored file per image: a re-run after a lost lease overwrote, never added.
    stored = [p.name for p in images_dir.rglob("*") if p.is_file()]
    report.duplicated += max(len(stored) - len(expected_images), 0)
    report.missing_images = sum(
        1 for ident in expected_images if not any(ident in name for name in stored)
    )


def _poisoned_worker_main(settings: Settings, poison: str) -> None:
    """A worker whose engine dies (the whole process, as a CUDA fault or a segfault
    would) on any batch holding the ``poison`` prompt."""
    from sdserve.engine.fake import FakeEngine

    real = FakeEngine.generate

    def generate(self: FakeEngine, request: Any, on_step: Any) -> Any:
        if any(it.prompt == poison for it in request.items):
            os._exit(70)
        return real(self, request, on_step)

    FakeEngine.generate = generate  # type: ignore[method-assign]
    _worker_main(settings)


def run_poison(
    settings: Settings, queue: JobQueue, innocents: int, workers: int, timeout: float = 60.0
) -> tuple[str, list[str]]:
    """Submit one poison job among ``innocents``, keep ``workers`` poisoned workers
    alive (each crash replaced at once) until every job has ended."""
    poison = "poison"
    ids = submit(queue, innocents // 2)
    spec = job_spec(prompt=poison, seed=0, num_inference_steps=10, model="fake")
    bad = queue.enqueue(NewJob(spec=spec, max_attempts=settings.max_attempts))[0].id
    ids += submit(queue, innocents - innocents // 2, start=innocents // 2)

    def spawn() -> BaseProcess:
        proc = _FORK.Process(target=_poisoned_worker_main, args=(settings, poison), daemon=True)
        proc.start()
        return proc

    procs = [spawn() for _ in range(workers)]
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            jobs = [queue.get(i) for i in [*ids, bad]]
            if all(j is not None and j.status.terminal for j in jobs):
                break
            procs = [p if p.is_alive() else spawn() for p in procs]
            time.sleep(0.05)
    finally:
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.join(10)
    return bad, ids
