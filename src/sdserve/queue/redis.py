"""Redis JobQueue: the scale-out store shared by API nodes and GPU workers anywhere.

Every transition is one optimistic unit of work (queue/redis_store.py): read the
records, let queue/transitions.py decide, commit the writes in one script call that
re-checks what the decision read; on a conflict, read again and re-decide. Claims
assemble batches with batching.select_batch like every backend. Timestamps come from
Redis's clock (``TIME``) unless the caller passes ``now``.

Reads are cheap: ``get`` is one HMGET, ``queue_position`` one ZRANK, ``stats`` one
pipelined round trip, ``list_jobs`` two round trips through a per-filter index.

Durability is Redis's: run it with ``appendonly yes`` (see docs/redis.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, cast

import redis

from sdserve.domain.errors import Conflict, NotFound, QueueFull
from sdserve.domain.jobs import Job, JobError, JobResult, JobStatus, NewJob
from sdserve.domain.requests import Priority
from sdserve.domain.workflows import NewWorkflow, Workflow
from sdserve.queue import redis_purge
from sdserve.queue import transitions as tr
from sdserve.queue.base import Claim, JobPage, ListFilter, QueueStats
from sdserve.queue.batching import (
    DEFAULT_AFFINITY_MAX_WAIT_S,
    Affinity,
    select_batch,
    window_wait,
)
from sdserve.queue.common import decode_cursor, encode_cursor
from sdserve.queue.purge import PurgeFilter, PurgeResult
from sdserve.queue.redis_keys import (
    DEFAULT_PREFIX,
    Keys,
    RedisClock,
    connect,
    idem_field,
    rank_range,
)
from sdserve.queue.redis_keys import unavailable_as_503 as _available
from sdserve.queue.redis_known import KnownJobs
from sdserve.queue.redis_ops import (
    CandidatePages,
    Replay,
    StoreBusy,
    backoff,
    same_request,
    store,
    store_workflow,
)
from sdserve.queue.redis_outbox import RedisOutbox
from sdserve.queue.redis_store import Scripts, UnitOfWork, load_job

T = TypeVar("T")
_MAX_TRIES = 200  # optimistic retries before giving up (only under extreme contention)
# A job's transition decides from the job alone (or a workflow's with its step job).
Decide = Callable[[Job], tr.Outcome | Job | None]


class RedisQueue(RedisOutbox):
    def __init__(
        self,
        client: redis.Redis,
        prefix: str = DEFAULT_PREFIX,
        max_depth: int = 10_000,
        *,
        owns_client: bool = False,
    ) -> None:
        self.max_depth = max_depth
        self.keys = Keys(prefix)
        self._r = client
        self._owns_client = owns_client
        self._scripts = Scripts(client)
        self._clock = RedisClock(client)
        self._known = KnownJobs()

    @classmethod
    def from_url(
        cls, url: str, prefix: str = DEFAULT_PREFIX, max_depth: int = 10_000
    ) -> RedisQueue:
        return cls(connect(url), prefix, max_depth, owns_client=True)

    # --- plumbing ---
    def _now(self, now: float | None) -> float:
        return self._clock.now() if now is None else now

    def _uow(self, ts: float) -> UnitOfWork:
        return UnitOfWork(self._r, self.keys, self._scripts, ts, self._known)

    def _transact(self, ts: float, body: Callable[[UnitOfWork], T]) -> T:
        """Run ``body`` (reads and decisions) and commit its writes; again on conflict."""
        for attempt in range(_MAX_TRIES):
            backoff(attempt)
            uow = self._uow(ts)
            result = body(uow)
            if uow.commit() == 0:
                return result
        raise StoreBusy("the job store is too busy; try again")

    def _apply_many(self, job_ids: list[str], ts: float, decide: Decide) -> dict[str, Job]:
        """Decide and persist a transition for each existing job; returns the jobs
        whose transition happened (``decide`` returned something)."""

        def body(uow: UnitOfWork) -> dict[str, Job]:
            done: dict[str, Job] = {}
            for job_id, job in uow.jobs(job_ids).items():
                out = decide(job)
                if isinstance(out, tr.Outcome):
                    done[job_id] = store(uow, out)
                elif out is not None:
                    uow.put_job(out)
                    done[job_id] = out
            return done

        return self._transact(ts, body) if job_ids else {}

    def _apply(self, job_id: str, ts: float, decide: Decide) -> Job | None:
        return self._apply_many([job_id], ts, decide).get(job_id)

    # --- submit / read ---
    @_available
    def enqueue(self, job: NewJob, now: float | None = None) -> tuple[Job, bool]:
        ts = self._now(now)
        stored = tr.new_job(job, ts)

        def insert(uow: UnitOfWork) -> None:
            uow.insert_job(stored)

        try:
            self._insert("job", job.owner, job.idempotency_key, job.id, ts, insert)
        except Replay as replay:
            found = self.get(replay.ident)
            if found is None:  # pragma: no cover - ids under a key are never deleted
                raise Conflict("idempotency key points at a missing job") from None
            same_request(found.request_hash, job.request_hash, found.id)
            return found, False
        return stored, True

    def _insert(
        self,
        kind: str,
        owner: str | None,
        key: str | None,
        ident: str,
        ts: float,
        insert: Callable[[UnitOfWork], None],
    ) -> None:
        """Insert a job or workflow under the depth limit and its idempotency key.
        A key already used raises Replay with the id stored under it."""
        record_key = self.keys.job(ident) if kind == "job" else self.keys.workflow(ident)
        for attempt in range(_MAX_TRIES):
            backoff(attempt)
            uow = self._uow(ts)
            field = idem_field(kind, owner, key) if key is not None else None
            idem = uow.guard("hnx", self.keys.idem, field) if field else -1
            dup = uow.guard("nx", record_key)
            full = uow.guard("below", self.keys.queued, self.max_depth)
            if field:
                uow.write("HSET", self.keys.idem, field, ident)
            insert(uow)
            failed = uow.commit()
            if failed == 0:
                return
            if failed == idem and field:
                raise Replay(str(self._r.hget(self.keys.idem, field)))
            if failed == dup:
                raise Conflict(f"{kind} id {ident} already exists")
            if failed == full:
                raise QueueFull(f"queue is full ({self.max_depth} jobs waiting)")
        raise StoreBusy("the job store is too busy; try again")

    @_available
    def get(self, job_id: str) -> Job | None:
        spec, body = self._r.hmget(self.keys.job(job_id), "spec", "b")
        return load_job(spec, body) if spec and body else None

    def _get_many(self, job_ids: list[str]) -> list[Job]:
        pipe = self._r.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hmget(self.keys.job(job_id), "spec", "b")
        return [load_job(spec, body) for spec, body in pipe.execute() if spec and body]

    @_available
    def list_jobs(self, flt: ListFilter) -> JobPage:
        below = decode_cursor(flt.cursor)
        index = self.keys.index(
            flt.status.value if flt.status else "*",
            flt.priority.value if flt.priority else "*",
            flt.owner,
        )
        top = "+inf" if below is None else f"({below}"
        rows: list[tuple[str, float]] = cast(
            "list[tuple[str, float]]",
            self._r.zrevrangebyscore(
                index, top, "-inf", start=0, num=flt.limit + 1, withscores=True
            ),
        )
        more = len(rows) > flt.limit
        rows = rows[: flt.limit]
        cursor = encode_cursor(int(rows[-1][1])) if more and rows else None
        return JobPage(self._get_many([job_id for job_id, _ in rows]), cursor)

    @_available
    def queue_position(self, job_id: str) -> int | None:
        rank = cast("int | None", self._r.zrank(self.keys.queued, job_id))
        return rank

    @_available
    def stats(self, now: float | None = None) -> QueueStats:
        ts = self._now(now)
        k = self.keys
        pipe = self._r.pipeline(transaction=True)  # one consistent snapshot
        for p in Priority:
            pipe.zcount(k.queued, *rank_range(p.rank))
        pipe.zcard(k.leases)
        pipe.zcard(k.dead)
        pipe.zrange(k.age, 0, 0, withscores=True)
        *counts, running, dead, oldest = pipe.execute()
        queued = {p.value: int(c) for p, c in zip(Priority, counts, strict=True)}
        age = ts - float(oldest[0][1]) if oldest else None
        return QueueStats(queued, int(running), int(dead), age)

    # --- worker side ---
    @_available
    def claim_batch(
        self,
        worker_id: str,
        max_images: int,
        lease_seconds: float,
        window_seconds: float = 0.0,
        now: float | None = None,
        prefer_models: frozenset[str] = frozenset(),
        affinity_max_wait: float = DEFAULT_AFFINITY_MAX_WAIT_S,
    ) -> Claim:
        ts = self._now(now)
        affinity = Affinity(prefer_models, ts, affinity_max_wait)
        for attempt in range(_MAX_TRIES):
            backoff(attempt)
            pages = CandidatePages(self._scripts, self.keys, ts, max_images)
            if pages.expired:  # expired leases go back first, as in every backend
                self._reclaim(pages.expired, ts, ts)
                pages = CandidatePages(self._scripts, self.keys, ts, max_images)
            selection = select_batch(pages, max_images, affinity)
            if selection is None:
                return Claim([], None)
            wait = window_wait(selection, max_images, window_seconds, ts)
            if wait > 0:
                return Claim([], wait)
            ids = [c.key for c in selection.chosen]
            uow = self._uow(ts)
            found = uow.jobs(ids, known=False)  # candidates are queued, not ours
            if any(i not in found or found[i].status is not JobStatus.queued for i in ids):
                continue  # changed since the candidates were read
            claimed = [tr.claim(found[i], worker_id, ts, lease_seconds, len(ids)) for i in ids]
            for job in claimed:
                uow.put_job(job)
            uow.guard("prefix", self.keys.ready, *pages.read_ids)
            if uow.commit() == 0:
                return Claim(claimed)
        # Lost every race (many claimers on a short queue): the worker tries again soon.
        return Claim([], 0.01)

    @_available
    def heartbeat(
        self, worker_id: str, job_ids: list[str], lease_seconds: float, now: float | None = None
    ) -> set[str]:
        ts = self._now(now)
        beat = self._apply_many(
            list(dict.fromkeys(job_ids)),
            ts,
            lambda j: tr.heartbeat(j, worker_id, ts, lease_seconds),
        )
        return set(beat)

    @_available
    def update_progress(self, job_id: str, worker_id: str, step: int, total: int) -> None:
        ts = self._now(None)
        self._apply(job_id, ts, lambda j: tr.progress(j, worker_id, step, total, ts))

    @_available
    def complete(
        self, job_id: str, worker_id: str, result: JobResult, now: float | None = None
    ) -> bool:
        ts = self._now(now)
        return self._apply(job_id, ts, lambda j: tr.complete(j, worker_id, result, ts)) is not None

    @_available
    def fail(
        self,
        job_id: str,
        worker_id: str,
        error: JobError,
        retryable: bool,
        retry_delay: float = 0.0,
        now: float | None = None,
    ) -> Job | None:
        ts = self._now(now)
        return self._apply(
            job_id, ts, lambda j: tr.fail(j, worker_id, error, retryable, retry_delay, ts)
        )

    @_available
    def hold(
        self,
        job_id: str,
        worker_id: str,
        result: JobResult,
        reason: JobError,
        now: float | None = None,
    ) -> bool:
        ts = self._now(now)
        out = self._apply(job_id, ts, lambda j: tr.hold(j, worker_id, result, reason, ts))
        return out is not None

    @_available
    def review(
        self,
        job_id: str,
        approve: bool,
        result: JobResult,
        error: JobError | None = None,
        now: float | None = None,
    ) -> Job:
        ts = self._now(now)
        job = self._apply(job_id, ts, lambda j: tr.review(j, approve, result, error, ts))
        if job is None:
            raise NotFound(f"job {job_id} not found")
        return job

    @_available
    def release(self, job_ids: list[str], worker_id: str, refund_attempt: bool = True) -> None:
        ts = self._now(None)
        self._apply_many(job_ids, ts, lambda j: tr.release(j, worker_id, refund_attempt, ts))

    @_available
    def cancel(self, job_id: str, now: float | None = None) -> Job:
        ts = self._now(now)
        job = self._apply(job_id, ts, lambda j: tr.cancel(j, ts))
        if job is None:
            raise NotFound(f"job {job_id} not found")
        return job

    @_available
    def cancel_requested(self, job_ids: list[str]) -> set[str]:
        if not job_ids:
            return set()
        flags = self._r.smismember(self.keys.cancel, job_ids)
        return {job_id for job_id, flag in zip(job_ids, flags, strict=True) if flag}

    @_available
    def mark_canceled(self, job_id: str, worker_id: str, now: float | None = None) -> bool:
        ts = self._now(now)
        return self._apply(job_id, ts, lambda j: tr.mark_canceled(j, worker_id, ts)) is not None

    @_available
    def reclaim_expired(self, now: float | None = None, every_lease: bool = False) -> list[str]:
        ts = self._now(now)
        cutoff = float("inf") if every_lease else ts
        ids = self._r.zrangebyscore(self.keys.leases, "-inf", "+inf" if every_lease else ts)
        return self._reclaim([str(i) for i in ids], ts, cutoff)

    def _reclaim(self, job_ids: list[str], ts: float, cutoff: float) -> list[str]:
        done = self._apply_many(
            job_ids, ts, lambda j: tr.reclaim(j, ts) if tr.lease_expired(j, cutoff) else None
        )
        return [job_id for job_id in job_ids if job_id in done]

    @_available
    def dead_letters(self, limit: int = 100) -> list[Job]:
        ids = self._r.zrevrange(self.keys.dead, 0, limit - 1)
        return [j for j in self._get_many([str(i) for i in ids]) if j.status is JobStatus.failed]

    @_available
    def purge_dead_letter(self, job_id: str) -> Job:
        ts = self._now(None)
        job = self._apply(job_id, ts, lambda j: tr.purge_dead_letter(j, ts))
        if job is None:
            raise NotFound(f"job {job_id} not found")
        return job

    @_available
    def requeue_dead_letter(self, job_id: str) -> Job:
        ts = self._now(None)
        job = self._apply(job_id, ts, lambda j: tr.requeue_dead_letter(j, ts))
        if job is None:
            raise NotFound(f"job {job_id} not found")
        return job

    # --- workflows ---
    @_available
    def enqueue_workflow(
        self, workflow: NewWorkflow, now: float | None = None
    ) -> tuple[Workflow, bool]:
        ts = self._now(now)
        wf, first = tr.start_workflow(workflow, ts)

        def insert(uow: UnitOfWork) -> None:
            uow.put_workflow(wf)
            uow.insert_job(first)

        try:
            self._insert("wf", wf.owner, wf.idempotency_key, wf.id, ts, insert)
        except Replay as replay:
            found = self.get_workflow(replay.ident)
            if found is None:  # pragma: no cover - ids under a key are never deleted
                raise Conflict("idempotency key points at a missing workflow") from None
            same_request(found.request_hash, workflow.request_hash, found.id)
            return found, False
        return wf, True

    @_available
    def get_workflow(self, workflow_id: str) -> Workflow | None:
        body = self._r.hget(self.keys.workflow(workflow_id), "b")
        return Workflow.model_validate_json(body) if body else None

    @_available
    def cancel_workflow(self, workflow_id: str, now: float | None = None) -> Workflow:
        ts = self._now(now)

        def body(uow: UnitOfWork) -> Workflow:
            wf = uow.workflow(workflow_id)
            if wf is None:
                raise NotFound(f"workflow {workflow_id} not found")
            out = tr.cancel_workflow(wf, ts)
            store_workflow(uow, out)
            step_job = out.workflow.steps[out.workflow.current].job_id
            job = uow.job(step_job) if out.changed and step_job else None
            if job is not None:
                store(uow, tr.cancel(job, ts))
            return out.workflow

        return self._transact(ts, body)

    @_available
    def purge(self, flt: PurgeFilter, now: float | None = None) -> PurgeResult:
        return redis_purge.purge(self._r, self.keys, flt)

    def close(self) -> None:
        if self._owns_client:
            self._r.close()
