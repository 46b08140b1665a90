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

    # --- loop ---
    def run(self, stop: threading.Event) -> None:
        log.info("worker %s started", self.id)
        while not stop.is_set():
            try:
                if not self.run_once():
                    continue
            except Exception:  # the loop must outlive any one batch
                log.exception("worker iteration failed")
                stop.wait(self.config.poll_interval_s)
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
        beat = _Heartbeat(self, [j.id for j in jobs])
        beat.start()
        started = time.perf_counter()
        try:
            output = self._generate(batch_request(jobs, inputs.load), jobs)
        except SdserveError as exc:
            beat.stop()
            self._fail_all(jobs, exc, retryable=exc.retryable)
            return
        except Exception as exc:
            beat.stop()
            log.exception("batch failed")
            self._fail_all(jobs, exc, retryable=True)
            return
        beat.stop()
        elapsed = time.perf_counter() - started
        self.batches_done += 1
        if self._finisher is None:
            self._finish(jobs, output, elapsed)
            return
        # One batch in flight at most: memory stays bounded and results stay in order.
        self.flush()
        self._pending.append(self._finisher.submit(self._finish, jobs, output, elapsed))

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
        progress = _Progress(self, req)
        try:
            return self.engine.generate(req, progress.on_step)
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
            log_job(log, job, "job %s finished", job.id)
            self.wakeups.notify_job(job.id)

    def _complete(self, job: Job, output: BatchOutput, elapsed: float) -> None:
        item = output.items[job.id]
        if self.moderation is not None:
            return self.moderation.complete(self, job, item, elapsed)
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
        elif self.results is not None:
            self.results.remember(job, result)

    def _fail_all(self, jobs: list[Job], exc: BaseException, retryable: bool) -> None:
        for job in jobs:
            self.queue.fail(
                job.id,
                self.id,
                _job_error(exc),
                retryable=retryable,
                retry_delay=self.config.retry_delay_s,
            )
            self.wakeups.notify_job(job.id)
        self.wakeups.notify_workers()


def _job_error(exc: BaseException) -> JobError:
    info = ErrorInfo.from_exception(exc)
    return JobError(type=info.type, message=info.message)


class _Progress:
    """Step callback: reports progress (throttled) and picks up cancel requests."""

    def __init__(self, worker: Worker, req: BatchRequest) -> None:
        self.worker = worker
        self.ids = [it.job_id for it in req.items]
        self.last_report = 0.0
        self.last_cancel_check = float("-inf")
        self.canceled: set[str] = set()

    def on_step(self, step: int, total: int) -> set[str]:
        w = self.worker
        now = time.monotonic()
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
