"""Answer exact repeats from stored images, without engine work.

The worker asks before a claimed batch reaches the engine: a job whose key (key.py:
tenant, model revision, adapters, every parameter, seed, input bytes) matches a result
stored within the TTL is completed at once with copies of that result's images (new
ids of its own, so deleting either job's images never breaks the other) and
``cached: true``. Every job the engine completes is remembered under its key. A job
without a named seed gets a random one, so it matches only by a 1-in-2^32 chance,
and then its cached images are exactly what the engine would have drawn.

The cache never fails a job: any error in it counts as a miss and is logged.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from sdserve.config import Settings
from sdserve.domain.jobs import ImageRef, Job, JobResult, image_id
from sdserve.engine.lora_files import lora_path
from sdserve.observability.cache_metrics import CacheMetrics
from sdserve.queue.base import JobQueue
from sdserve.queue.events import WakeupBus
from sdserve.results.key import result_key
from sdserve.results.revision import weights_hash
from sdserve.results.store import CachedResult, ResultStore
from sdserve.storage.base import BlobStore

log = logging.getLogger(__name__)
_MAX_PENDING = 4096  # far above the jobs one worker has in flight


class ResultCache:
    def __init__(
        self,
        store: ResultStore,
        ttl: float,
        blobs: BlobStore,
        revision_of: Callable[[str], str],
        metrics: CacheMetrics | None = None,
        clock: Callable[[], float] = time.time,
        adapter_revision_of: Callable[[str], str] | None = None,
    ) -> None:
        self.store = store
        self.ttl = ttl
        self.blobs = blobs
        self.revision_of = revision_of
        self.metrics = metrics or CacheMetrics()
        self.clock = clock
        self.adapter_revision_of = adapter_revision_of
        # job id -> key, from lookup to remember; bounded, as failed jobs never come back
        self._keys: OrderedDict[str, str] = OrderedDict()

    def key(self, job: Job) -> str | None:
        """The job's key; None when an input is no longer stored (the engine path then
        fails the job as it would without a cache)."""
        hashes: dict[str, str] = {}
        for name in ("image", "mask"):
            blob = getattr(job.spec, name)
            if blob is None:
                continue
            data = self.blobs.get(blob, tenant=job.owner)
            if data is None:
                return None
            hashes[name] = hashlib.sha256(data).hexdigest()
        adapters = {
            ref.name: self.adapter_revision_of(ref.name) if self.adapter_revision_of else ""
            for ref in job.spec.loras
        }
        revision = self.revision_of(job.spec.model)
        return result_key(job.spec, job.owner, revision, hashes, adapters)

    def answer(
        self,
        jobs: list[Job],
        queue: JobQueue,
        worker_id: str,
        wakeups: WakeupBus,
        image_key: bytes,
    ) -> list[Job]:
        """Complete the jobs the cache can answer; returns the others, for the engine."""
        rest: list[Job] = []
        for job in jobs:
            try:
                done = self._answer_one(job, queue, worker_id, image_key)
            except Exception:
                log.exception("result cache lookup failed for job %s; running it", job.id)
                done = False
            if done:
                wakeups.notify_job(job.id)
            else:
                rest.append(job)
        return rest

    def _answer_one(self, job: Job, queue: JobQueue, worker_id: str, image_key: bytes) -> bool:
        key = self.key(job)
        if key is None:
            return False
        hit = self.store.get(key, self.clock())
        copies = self._copy(job, hit, image_key) if hit is not None else None
        if hit is None or copies is None:
            self._keys[job.id] = key
            while len(self._keys) > _MAX_PENDING:
                self._keys.popitem(last=False)
            self.metrics.result_misses.inc()
            return False
        result = JobResult(
            images=copies,
            generation_time=0.0,
            seed_used=job.spec.seed,
            warnings=hit.warnings,
            cached=True,
        )
        self.metrics.result_hits.inc()
        if not queue.complete(job.id, worker_id, result):
            log.warning("job %s: lease lost before completion; cached result dropped", job.id)
        return True

    def _copy(self, job: Job, hit: CachedResult, image_key: bytes) -> list[ImageRef] | None:
        """The cached images under this job's own ids; None if any is gone (purged)."""
        if [seed for _, seed in hit.images] != job.spec.seeds:
            return None
        fmt = job.spec.output_format
        datas: list[bytes] = []
        for ident, _ in hit.images:
            data = self.blobs.get(ident, tenant=job.owner)
            if data is None:
                return None
            datas.append(data)
        refs: list[ImageRef] = []
        for index, ((_, seed), data) in enumerate(zip(hit.images, datas, strict=True)):
            ident = image_id(job.id, index, fmt, image_key)
            self.blobs.put(ident, data, tenant=job.owner)
            refs.append(ImageRef(id=ident, seed=seed))
        return refs

    def remember(self, job: Job, result: JobResult) -> None:
        """Store a job the engine completed (looked up first, so its key is known)."""
        key = self._keys.pop(job.id, None)
        if key is None:
            return
        try:
            value = CachedResult([(im.id, im.seed) for im in result.images], result.warnings)
            self.store.put(key, value, self.clock(), self.ttl)
        except Exception:
            log.exception("storing job %s in the result cache failed", job.id)

    def close(self) -> None:
        self.store.close()


def build_result_cache(
    settings: Settings,
    blobs: BlobStore,
    revision_of: Callable[[str], str],
    metrics: CacheMetrics | None = None,
) -> ResultCache | None:
    """The configured cache, or None when RESULT_CACHE_TTL_SECONDS is 0 (off)."""
    if settings.result_cache_ttl_seconds <= 0:
        return None
    store: ResultStore
    if settings.queue_backend == "redis":
        from sdserve.results.store import RedisResultStore

        store = RedisResultStore.from_url(settings.redis_url, settings.redis_prefix)
    else:
        from sdserve.results.store import SqliteResultStore

        store = SqliteResultStore(settings.data_dir / "result_cache.db")

    def adapter_revision(name: str) -> str:
        path = lora_path(settings, name)
        return weights_hash(str(path)) if path is not None else "missing"

    return ResultCache(
        store,
        settings.result_cache_ttl_seconds,
        blobs,
        revision_of,
        metrics,
        adapter_revision_of=adapter_revision,
    )
