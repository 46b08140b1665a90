"""The worker loop: claim a compatible batch -> engine -> store -> complete."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sdserve.domain.errors import ErrorInfo, GenerationFailed, OutOfMemory, SdserveError
from sdserve.domain.jobs import ImageRef, Job, JobError, JobResult, image_id
from sdserve.engine.base import BatchOutput, BatchRequest, GenerationEngine
from sdserve.observability.context import log_job
from sdserve.queue.base import JobQueue
from sdserve.queue.batching import DEFAULT_AFFINITY_MAX_WAIT_S
from sdserve.queue.events import WakeupBus
from sdserve.results.cache import ResultCache
from sdserve.storage.base import BlobStore
from sdserve.worker.batching import batch_request, merge_outputs, split_request
from sdserve.worker.encode import encode_image
from sdserve.worker.inputs import InputCache
from sdserve.worker.moderation import ImageModeration
from sdserve.worker.previews import JobPreviews, drop_previews

if TYPE_CHECKING:
    from sdserve.observability.prom import WorkerMetrics

log = logging.getLogger("sdserve.worker")


@dataclass(frozen=True)
class WorkerConfig:
    max_batch_images: int = 4
    batch_window_s: float = 0.01
    lease_s: float = 30.0
    poll_interval_s: float = 0.25
    retry_delay_s: float = 1.0
    progress_every_s: float = 0.2
    # Cancel requests are read at most this often during denoising: each check is a
    # queue round trip, which per step would cost more than a small model's step.
    cancel_check_every_s: float = 0.1
    # Encode, store and complete a finished batch on a helper thread while the engine
    # starts the next one (the accelerator idles otherwise: ~50 ms per 512² PNG).
    background_finish: bool = False
    # Model affinity: how long a job may be passed over for one of a loaded model.
    affinity_max_wait_s: float = DEFAULT_AFFINITY_MAX_WAIT_S
    # SIGTERM grace: a running batch that will not be done within it is released.
    drain_s: float = 25.0
    # Live previews (worker/previews.py): at most one per job this often; 0: none.
    preview_every_s: float = 0.0


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    def __init__(
        self,
        queue: JobQueue,
        engine: GenerationEngine,
        blobs: BlobStore,
        wakeups: WakeupBus,
        config: WorkerConfig,
        worker_id: str | None = None,
        *,
        image_key: bytes,
        moderation: ImageModeration | None = None,
        results: ResultCache | None = None,
    ) -> None:
        self.queue = queue
        self.engine = engine
        self.blobs = blobs
        self.wakeups = wakeups
        self.config = config
        self.id = worker_id or new_worker_id()
        self.image_key = image_key  # ServerKey.image_key: output ids are HMACs with it
        self.moderation = moderation  # image checks before storing (docs/safety.md)
        self.results = results  # the result cache (None: off)
        self.batches_done = 0
        self._finisher = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="finish")
            if config.background_finish
            else None
        )
        self._pending: list[Future[None]] = []
        self.metrics: WorkerMetrics | None = None  # set by the worker process
        # SIGTERM: the monotonic time by which this worker must be gone (None: running).
        self.drain_deadline: float | None = None
        # Touched by every loop round and engine step: /healthz tells a wedged worker
        # (a hung CUDA call) from a busy one.
        self.last_progress = time.monotonic()
        self._inflight: set[str] = set()  # job ids being generated or finished
        self._inflight_lock = threading.Lock()

    # --- shutdown ---
    def stuck(self, after_s: float) -> bool:
        """No loop round and no engine step for ``after_s``."""
        return time.monotonic() - self.last_progress > after_s

    def request_drain(self) -> None:
        """SIGTERM: claim nothing more; the running batch finishes only if it fits
        ``drain_s`` (checked at every step), else its jobs are released."""
        if self.drain_deadline is None:
            self.drain_deadline = time.monotonic() + self.config.drain_s

    def release_inflight(self) -> list[str]:
        """Give the running batch back at once, its attempts refunded (a release is not
        a failure); this worker's lease is gone, so it can no longer write results."""
        with self._inflight_lock:
            ids, self._inflight = sorted(self._inflight), set()
        if ids:
            self.queue.release(ids, self.id, refund_attempt=True)
            for job_id in ids:
                self.wakeups.notify_job(job_id)
            self.wakeups.notify_workers()
            log.warning("released %d job(s) on shutdown", len(ids))
        return ids

    # --- loop ---
    def run(self, stop: threading.Event) -> None:
        log.info("worker %s started", self.id)
        while not stop.is_set():
            if self.drain_deadline is not None:
                break
            self.last_progress = time.monotonic()
            try:
                if not self.run_once():
                    continue
            except Exception:  # the loop must outlive any one batch
                log.exception("worker iteration failed")
                stop.wait(self.config.poll_interval_s)
        self.request_drain()
        self.flush()
        log.info("worker %s stopped", self.id)

    def flush(self) -> None:
        """Wait until every finished batch is stored and completed."""
        for fut in self._pending:
            try:
                fut.result()
            except Exception:  # its jobs keep their leases and are retried on expiry
                log.exception("finishing a batch failed")
        self._pending.clear()

    def run_once(self) -> bool:
        """Claim and run one batch; when there is nothing to do, wait for a wake-up."""
        claim = self.queue.claim_batch(
            self.id,
            self.config.max_batch_images,
            self.config.lease_s,
            self.config.batch_window_s,
            prefer_models=frozenset(self.engine.loaded_models()),
            affinity_max_wait=self.config.affinity_max_wait_s,
        )
        if not claim.jobs:
            timeout = self.config.poll_interval_s
            if claim.retry_after is not None:
                timeout = min(timeout, max(claim.retry_after, 0.0005))
                time.sleep(timeout)  # a window closing is not an event anyone sends
            else:
                self.wakeups.wait_for_work(timeout)
            return False
        if self.metrics is not None:
            self.metrics.claimed(claim.jobs)
        self.process(claim.jobs)
        return True

    # --- one batch ---
    def process(self, jobs: list[Job]) -> None:
        for job in jobs:
            self.wakeups.notify_job(job.id)  # running now
        if self.results is not None:  # exact repeats: answered without the engine
            jobs = self.results.answer(jobs, self.queue, self.id, self.wakeups, self.image_key)
            if not jobs:
                return
        inputs = InputCache(self.blobs)
        jobs = self._drop_unloadable(jobs, inputs)
        if not jobs:
            return
        for job in jobs:
            log_job(log, job, "job %s running (batch of %d)", job.id, len(jobs))
        # The heartbeat runs until the batch is encoded, stored and completed (or
        # failed): a lease may not lapse while its results are being written.
        beat = _Heartbeat(self, [j.id for j in jobs])
        beat.start()
        ids = {j.id for j in jobs}
        with self._inflight_lock:
            self._inflight |= ids
        started = time.perf_counter()
        loaded_before = set(self.engine.loaded_models())
        try:
            output = self._generate(batch_request(jobs, inputs.load), jobs)
        except SdserveError as exc:
            self._end_batch(beat, ids)
            self._fail_all(jobs, exc, retryable=exc.retryable)
            return
        except Exception as exc:
            self._end_batch(beat, ids)
            log.exception("batch failed")
            self._fail_all(jobs, exc, retryable=True)
            return
        finally:
            if self.config.preview_every_s > 0:
                drop_previews(self.blobs, self.image_key, jobs)
        elapsed = time.perf_counter() - started
        if not self._holds(ids):  # released on shutdown: the results are not ours
            beat.stop()
            return
        self.batches_done += 1
        if self.metrics is not None:
            self.metrics.batch_done(jobs, output, elapsed, loaded_before, self.engine)
        if self._finisher is None:
            self._finish_and_end(jobs, output, elapsed, beat)
            return
        # One batch in flight at most: memory stays bounded and results stay in order.
        self.flush()
        self._pending.append(
            self._finisher.submit(self._finish_and_end, jobs, output, elapsed, beat)
        )

    def _holds(self, ids: set[str]) -> bool:
        with self._inflight_lock:
            return ids <= self._inflight

    def _end_batch(self, beat: _Heartbeat, ids: set[str]) -> None:
        beat.stop()
        with self._inflight_lock:
            self._inflight -= ids

    def _finish_and_end(
        self, jobs: list[Job], output: BatchOutput, elapsed: float, beat: _Heartbeat
    ) -> None:
        try:
            self._finish(jobs, output, elapsed)
        finally:
            self._end_batch(beat, {j.id for j in jobs})

    def _drop_unloadable(self, jobs: list[Job], inputs: InputCache) -> list[Job]:
        """Fail (for good) the jobs whose input images can no longer be read; the rest
        of the batch goes on."""
        keep: list[Job] = []
        for job in jobs:
            try:
                inputs.preload(job)
            except SdserveError as exc:
                self.queue.fail(job.id, self.id, _job_error(exc), retryable=False)
                self.wakeups.notify_job(job.id)
                continue
            keep.append(job)
        return keep

    def _generate(self, req: BatchRequest, jobs: list[Job]) -> BatchOutput:
        progress = _Progress(self, req, jobs)
        try:
            return self.engine.generate(req, progress)
        except OutOfMemory:
            halves = split_request(req)
            if halves is None:
                raise
            log.warning("out of memory on %d images; splitting", req.num_images)
            first = self._generate(halves[0], jobs)
            second = self._generate(halves[1], jobs)
            return merge_outputs(first, second)

    def _finish(self, jobs: list[Job], output: BatchOutput, elapsed: float) -> None:
        for job in jobs:
            if job.id in output.canceled:
                self.queue.mark_canceled(job.id, self.id)
            elif job.id in output.items:
                self._complete(job, output, elapsed)
            else:
                err = GenerationFailed("engine returned no images for this job")
                self.queue.fail(job.id, self.id, _job_error(err), retryable=True)
                self._count_error(err)
            log_job(log, job, "job %s finished", job.id)
            self.wakeups.notify_job(job.id)

    def _count_error(self, exc: BaseException) -> None:
        if self.metrics is not None:
            self.metrics.error(_job_error(exc).type)

    def _complete(self, job: Job, output: BatchOutput, elapsed: float) -> None:
        item = output.items[job.id]
        if self.moderation is not None:
            settled = self.moderation.complete(self, job, item, elapsed)
            if settled is not None and self.metrics is not None:
                self.metrics.job_finished(settled.value)
            return
        fmt = job.spec.output_format
        refs: list[ImageRef] = []
        for index, (image, seed) in enumerate(zip(item.images, job.spec.seeds, strict=True)):
            ident = image_id(job.id, index, fmt, self.image_key)
            self.blobs.put(ident, encode_image(image, fmt), tenant=job.owner)
            refs.append(ImageRef(id=ident, seed=seed))
        result = JobResult(
            images=refs,
            generation_time=round(elapsed, 4),
            seed_used=job.spec.seed,
            warnings=item.warnings,
        )
        if not self.queue.complete(job.id, self.id, result):
            log.warning("job %s: lease lost before completion; result dropped", job.id)
        else:
            if self.metrics is not None:
                self.metrics.job_finished("succeeded")
            if self.results is not None:
                self.results.remember(job, result)

    def _fail_all(self, jobs: list[Job], exc: BaseException, retryable: bool) -> None:
        self._count_error(exc)
        for job in jobs:
            after = self.queue.fail(
                job.id,
                self.id,
                _job_error(exc),
                retryable=retryable,
                retry_delay=self.config.retry_delay_s,
            )
            if after is not None and after.status.terminal and self.metrics is not None:
                self.metrics.job_finished(after.status.value)
            self.wakeups.notify_job(job.id)
        self.wakeups.notify_workers()


def _job_error(exc: BaseException) -> JobError:
    info = ErrorInfo.from_exception(exc)
    return JobError(type=info.type, message=info.message)


class _Progress:
    """Step callback: reports progress (throttled) and picks up cancel requests."""

    def __init__(self, worker: Worker, req: BatchRequest, jobs: list[Job]) -> None:
        self.worker = worker
        self.ids = [it.job_id for it in req.items]
        every_s = worker.config.preview_every_s
        # Never with an image checker: a preview is an unchecked image.
        self.previews = (
            JobPreviews(worker.blobs, worker.image_key, jobs, every_s)
            if every_s > 0 and worker.moderation is None
            else None
        )
        self.last_report = 0.0
        self.last_cancel_check = float("-inf")
        self.canceled: set[str] = set()
        self.started = time.monotonic()
        self.last_step_at = self.started

    def __call__(self, step: int, total: int) -> set[str]:
        return self.on_step(step, total)

    def on_step(self, step: int, total: int) -> set[str]:
        w = self.worker
        now = time.monotonic()
        w.last_progress = now
        if w.metrics is not None:
            w.metrics.step_time(now - self.last_step_at)
        self.last_step_at = now
        if w.drain_deadline is not None and self._misses_deadline(step, total, now):
            # Stop the engine (all ids "canceled") and hand the jobs back right away.
            w.release_inflight()
            return set(self.ids)
        if now - self.last_cancel_check >= w.config.cancel_check_every_s:
            self.last_cancel_check = now
            self._pick_up_cancels()
        if step == total or now - self.last_report >= w.config.progress_every_s:
            self.last_report = now
            for job_id in self.ids:
                if job_id not in self.canceled:
                    w.queue.update_progress(job_id, w.id, step, total)
                    w.wakeups.notify_job(job_id)
        return set(self.canceled)

    def _pick_up_cancels(self) -> None:
        w = self.worker
        live = [i for i in self.ids if i not in self.canceled]
        newly = w.queue.cancel_requested(live) if live else set()
        for job_id in newly:
            # Canceled now, not when the batch ends: the client sees it at this step.
            w.queue.mark_canceled(job_id, w.id)
            w.wakeups.notify_job(job_id)
        self.canceled |= newly

    def _misses_deadline(self, step: int, total: int, now: float) -> bool:
        """Would the rest of this batch (its steps at the pace so far, plus as long
        again as one step for encoding and storing) end after the drain deadline?"""
        deadline = self.worker.drain_deadline
        assert deadline is not None
        per_step = (now - self.started) / max(step, 1)
        return now + per_step * (total - step + 1) > deadline


class _Heartbeat:
    """Extends the batch's leases while the engine runs (a third of the lease apart)."""

    def __init__(self, worker: Worker, job_ids: list[str]) -> None:
        self.worker = worker
        self.job_ids = job_ids
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        interval = self.worker.config.lease_s / 3
        while not self._stop.wait(interval):
            try:
                self.worker.queue.heartbeat(
                    self.worker.id, self.job_ids, self.worker.config.lease_s
                )
            except Exception:
                log.exception("heartbeat failed")
