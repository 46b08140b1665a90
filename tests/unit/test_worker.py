"""The worker loop with the in-memory queue and scripted engines."""

from __future__ import annotations

import threading
from pathlib import Path

from PIL import Image

from sdserve.domain.errors import GenerationFailed, OutOfMemory
from sdserve.domain.jobs import JobStatus, NewJob
from sdserve.domain.requests import JobSpec, OutputFormat
from sdserve.engine.base import BatchItem, BatchOutput, BatchRequest, ItemOutput, StepCallback
from sdserve.queue.memory import MemoryQueue
from sdserve.queue.wakeups import LocalWakeupBus
from sdserve.storage.local import LocalBlobStore
from sdserve.testing import job_spec
from sdserve.worker.batching import merge_outputs, split_request
from sdserve.worker.loop import Worker, WorkerConfig


def spec(prompt: str = "p", seed: int = 1, n: int = 1, steps: int = 2) -> JobSpec:
    return job_spec(prompt=prompt, seed=seed, num_images=n, num_inference_steps=steps)


class ScriptedEngine:
    """Colours each image by its seed; fails as told."""

    def __init__(self, max_images: int = 100, fail_prompt: str | None = None) -> None:
        self.max_images = max_images
        self.fail_prompt = fail_prompt
        self.calls: list[int] = []
        self.ran: list[int] = []

    def load(self) -> None: ...

    def ready(self) -> bool:
        return True

    def loaded_models(self) -> list[str]:
        return ["tiny"]

    def generate(self, request: BatchRequest, on_step: StepCallback) -> BatchOutput:
        self.calls.append(request.num_images)
        if request.num_images > self.max_images:
            raise OutOfMemory("CUDA out of memory")
        if any(it.prompt == self.fail_prompt for it in request.items):
            raise GenerationFailed("boom")
        for step in range(1, request.num_inference_steps + 1):
            on_step(step, request.num_inference_steps)
        self.ran.append(request.num_images)
        return BatchOutput(
            {
                it.job_id: ItemOutput(
                    it.job_id, [Image.new("RGB", (8, 8), (s % 256, 0, 0)) for s in it.seeds]
                )
                for it in request.items
            }
        )


KEY = b"k" * 32  # the image-id key (ServerKey.image_key in a deployment)


def make_worker(tmp_path: Path, engine: ScriptedEngine, **cfg: float) -> tuple[Worker, MemoryQueue]:
    q = MemoryQueue()
    config = WorkerConfig(max_batch_images=8, batch_window_s=0, retry_delay_s=0, **cfg)  # type: ignore[arg-type]
    worker = Worker(q, engine, LocalBlobStore(tmp_path), LocalWakeupBus(), config, image_key=KEY)
    return worker, q


def test_split_and_merge_keep_every_image_with_its_seed() -> None:
    req = BatchRequest(
        "m",
        "txt2img",
        64,
        64,
        2,
        7.5,
        "euler_a",
        [BatchItem("a", "x", "", [1, 2, 3]), BatchItem("b", "y", "", [9])],
    )
    halves = split_request(req)
    assert halves is not None
    assert [(i.job_id, i.seeds) for i in halves[0].items] == [("a", [1, 2])]
    assert [(i.job_id, i.seeds) for i in halves[1].items] == [("a", [3]), ("b", [9])]
    single = BatchRequest("m", "txt2img", 64, 64, 2, 7.5, "euler_a", [BatchItem("a", "x", "", [1])])
    assert split_request(single) is None
    img = Image.new("RGB", (1, 1))
    merged = merge_outputs(
        BatchOutput({"a": ItemOutput("a", [img, img])}),
        BatchOutput({"a": ItemOutput("a", [img]), "b": ItemOutput("b", [img])}, {"b"}),
    )
    assert len(merged.items["a"].images) == 3 and "b" not in merged.items


def test_out_of_memory_splits_until_it_fits(tmp_path: Path) -> None:
    engine = ScriptedEngine(max_images=2)
    worker, q = make_worker(tmp_path, engine)
    jobs = [q.enqueue(NewJob(spec=spec(seed=10 * i, n=2)))[0] for i in range(3)]
    assert worker.run_once()
    assert engine.calls[0] == 6
    assert max(engine.ran) <= 2 and sum(engine.ran) == 6
    for job in jobs:
        done = q.get(job.id)
        assert done is not None and done.status is JobStatus.succeeded
        assert [im.seed for im in done.result.images] == job.spec.seeds  # type: ignore[union-attr]


def test_a_failing_batch_retries_only_its_own_jobs_then_dead_letters(tmp_path: Path) -> None:
    engine = ScriptedEngine(fail_prompt="bad")
    worker, q = make_worker(tmp_path, engine)
    bad = q.enqueue(NewJob(spec=spec(prompt="bad", steps=3), max_attempts=2))[0]
    good = q.enqueue(NewJob(spec=spec(prompt="good", steps=2)))[0]  # other batch key
    for _ in range(4):
        worker.run_once()
    final_bad, final_good = q.get(bad.id), q.get(good.id)
    assert final_good is not None and final_good.status is JobStatus.succeeded
    assert final_bad is not None and final_bad.status is JobStatus.failed
    assert final_bad.dead_lettered and final_bad.attempts == 2
    assert final_bad.error is not None and final_bad.error.type == "generation_failed"
    assert [j.id for j in q.dead_letters()] == [bad.id]


def test_a_single_image_out_of_memory_fails_the_job(tmp_path: Path) -> None:
    worker, q = make_worker(tmp_path, ScriptedEngine(max_images=0))
    job = q.enqueue(NewJob(spec=spec(), max_attempts=1))[0]
    worker.run_once()
    done = q.get(job.id)
    assert done is not None and done.status is JobStatus.failed
    assert done.error is not None and done.error.type == "out_of_memory"


def test_outputs_are_idempotent_per_job(tmp_path: Path) -> None:
    worker, q = make_worker(tmp_path, ScriptedEngine())
    job = q.enqueue(NewJob(spec=spec(n=2)))[0]
    worker.run_once()
    first = q.get(job.id)
    assert first is not None and first.result is not None
    assert [im.id for im in first.result.images] == [im.id for im in first.result.images] and len(
        {im.id for im in first.result.images}
    ) == 2
    # the ids derive from the job id and index: a retry writes the same blobs
    from sdserve.domain.jobs import image_id

    assert first.result.images[1].id == image_id(job.id, 1, OutputFormat.png, KEY)


def test_run_stops_on_event(tmp_path: Path) -> None:
    worker, _ = make_worker(tmp_path, ScriptedEngine(), poll_interval_s=0.01)
    stop = threading.Event()
    t = threading.Thread(target=worker.run, args=(stop,))
    t.start()
    stop.set()
    t.join(timeout=5)
    assert not t.is_alive()


def test_background_finish_completes_every_job_in_order(tmp_path: Path) -> None:
    q = MemoryQueue()
    config = WorkerConfig(max_batch_images=1, batch_window_s=0, background_finish=True)
    worker = Worker(
        q, ScriptedEngine(), LocalBlobStore(tmp_path), LocalWakeupBus(), config, image_key=KEY
    )
    jobs = [q.enqueue(NewJob(spec=spec(prompt=f"p{i}", seed=i)))[0] for i in range(3)]
    for _ in range(3):
        assert worker.run_once()
    worker.flush()
    done = [q.get(j.id) for j in jobs]
    assert all(d is not None and d.status is JobStatus.succeeded for d in done)
    finished = [d.finished_at for d in done if d is not None]
    assert finished == sorted(finished)


class _CountingQueue(MemoryQueue):
    def __init__(self) -> None:
        super().__init__()
        self.cancel_checks = 0

    def cancel_requested(self, job_ids: list[str]) -> set[str]:
        self.cancel_checks += 1
        return super().cancel_requested(job_ids)


def _run_steps(tmp_path: Path, steps: int, every_s: float) -> tuple[_CountingQueue, str]:
    q = _CountingQueue()
    config = WorkerConfig(max_batch_images=1, batch_window_s=0, cancel_check_every_s=every_s)
    worker = Worker(
        q, ScriptedEngine(), LocalBlobStore(tmp_path), LocalWakeupBus(), config, image_key=KEY
    )
    job, _ = q.enqueue(NewJob(spec=spec(steps=steps)))
    assert worker.run_once()
    return q, job.id


def test_cancel_checks_are_rate_limited_not_one_per_step(tmp_path: Path) -> None:
    # 200 steps of a scripted engine take far less than an hour: one check, at step 1.
    q, job_id = _run_steps(tmp_path, steps=200, every_s=3600)
    assert q.cancel_checks == 1
    done = q.get(job_id)
    assert done is not None and done.status is JobStatus.succeeded


def test_cancel_checks_every_step_when_the_interval_is_zero(tmp_path: Path) -> None:
    q, _ = _run_steps(tmp_path, steps=50, every_s=0)
    assert q.cancel_checks == 50


def test_a_cancel_requested_before_the_first_step_is_picked_up_at_once(tmp_path: Path) -> None:
    q = MemoryQueue()
    config = WorkerConfig(max_batch_images=1, batch_window_s=0, cancel_check_every_s=3600)
    seen: list[set[str]] = []

    class CancelingEngine(ScriptedEngine):
        def generate(self, request: BatchRequest, on_step: StepCallback) -> BatchOutput:
            q.cancel(request.items[0].job_id)
            seen.append(on_step(1, 3))
            return super().generate(request, on_step)

    worker = Worker(
        q, CancelingEngine(), LocalBlobStore(tmp_path), LocalWakeupBus(), config, image_key=KEY
    )
    job, _ = q.enqueue(NewJob(spec=spec(steps=3)))
    assert worker.run_once()
    assert seen == [{job.id}]
    done = q.get(job.id)
    assert done is not None and done.status is JobStatus.canceled
