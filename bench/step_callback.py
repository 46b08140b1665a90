"""Per-step cost of the worker's step callback (cancel check + progress) on SQLite.

Runs the real worker callback against a real SQLite queue holding a running batch of
4 jobs, once checking for cancels at every step (the old behaviour) and once at the
default bounded rate, and prints microseconds per step and their ratio.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from sdserve.domain.jobs import NewJob
from sdserve.engine.base import BatchItem, BatchRequest
from sdserve.queue.sqlite import SqliteQueue
from sdserve.queue.wakeups import LocalWakeupBus
from sdserve.storage.local import LocalBlobStore
from sdserve.testing import job_spec
from sdserve.worker.loop import Worker, WorkerConfig, _Progress

STEPS = 2000


def per_step_us(every_s: float) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        q = SqliteQueue(Path(tmp) / "q.db")
        config = WorkerConfig(cancel_check_every_s=every_s)
        worker = Worker(
            q, _NoEngine(), LocalBlobStore(Path(tmp)), LocalWakeupBus(), config, image_key=b"k" * 32
        )
        ids = [q.enqueue(NewJob(spec=job_spec(prompt=f"p{i}")))[0].id for i in range(4)]
        claimed = q.claim_batch(worker.id, max_images=4, lease_seconds=60)
        items = [BatchItem(job.id, "p", "", [1]) for job in claimed.jobs]
        req = BatchRequest("m", "txt2img", 64, 64, STEPS, 7.5, "ddim", items)
        progress = _Progress(worker, req)
        start = time.perf_counter()
        for step in range(1, STEPS + 1):
            progress.on_step(step, STEPS)
        elapsed = time.perf_counter() - start
        assert sorted(ids) == sorted(it.job_id for it in items)
        q.close()
        return elapsed / STEPS * 1e6


class _NoEngine:
    def load(self) -> None: ...

    def ready(self) -> bool:
        return True

    def loaded_models(self) -> list[str]:
        return []


def main() -> None:
    every = per_step_us(0.0)
    bounded = per_step_us(WorkerConfig().cancel_check_every_s)
    print(f"step callback, cancel check every step: {every:.1f} us/step")
    print(f"step callback, cancel check <= 10/s:    {bounded:.1f} us/step")
    print(f"ratio (bounded / every step): {bounded / every:.3f}")


if __name__ == "__main__":
    main()
