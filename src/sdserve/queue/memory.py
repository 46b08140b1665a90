"""In-memory JobQueue: the fake for tests and single-process demos.

Thread-safe (one re-entrant lock around every operation); nothing survives the
process. Jobs are pydantic models replaced on every change, never mutated in place,
and callers get copies, so a caller cannot change the queue's state by accident.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sdserve.domain.errors import Conflict, IdempotencyConflict, NotFound, QueueFull
from sdserve.domain.jobs import Job, JobError, JobResult, JobStatus, NewJob
from sdserve.domain.requests import Priority
from sdserve.queue.base import Claim, JobPage, ListFilter, OutboxEntry, QueueStats
from sdserve.queue.batching import Candidate, select_batch, window_wait
from sdserve.queue.common import (
    decode_cursor,
    encode_cursor,
    lease_expired_error,
    now_or,
    retry_keeps_going,
)
from sdserve.queue.memory_outbox import MemoryOutbox

_LEASE_CLEARED: dict[str, Any] = {"lease_owner": None, "lease_expires_at": None}


@dataclass
class _Entry:
    job: Job
    seq: int  # place in line; kept across retries and releases
    available_at: float


class MemoryQueue(MemoryOutbox):
    def __init__(self, max_depth: int = 10_000) -> None:
        self.max_depth = max_depth
        self._lock = threading.RLock()
        self._entries: dict[str, _Entry] = {}
        self._idempotency: dict[tuple[str | None, str], str] = {}
        self._outbox: dict[str, OutboxEntry] = {}
        self._next_seq = 1

    # --- submit / read ---
    def enqueue(self, job: NewJob, now: float | None = None) -> tuple[Job, bool]:
        ts = now_or(now)
        with self._lock:
            existing = self._idempotent_match(job)
            if existing is not None:
                return existing.model_copy(), False
            if job.id in self._entries:
                raise Conflict(f"job id {job.id} already exists")
            if self._count(JobStatus.queued) >= self.max_depth:
                raise QueueFull(f"queue is full ({self.max_depth} jobs waiting)")
            stored = Job(
                id=job.id,
                spec=job.spec,
                status=JobStatus.queued,
                created_at=ts,
                updated_at=ts,
                max_attempts=job.max_attempts,
                callback_url=job.callback_url,
                idempotency_key=job.idempotency_key,
                request_hash=job.request_hash,
                owner=job.owner,
            )
            self._entries[job.id] = _Entry(stored, self._next_seq, ts)
            self._next_seq += 1
            if job.idempotency_key is not None:
                self._idempotency[(job.owner, job.idempotency_key)] = job.id
            return stored.model_copy(), True

    def _idempotent_match(self, job: NewJob) -> Job | None:
        if job.idempotency_key is None:
            return None
        job_id = self._idempotency.get((job.owner, job.idempotency_key))
        if job_id is None:
            return None
        existing = self._entries[job_id].job
        if existing.request_hash != job.request_hash:
            raise IdempotencyConflict(
                "idempotency key already used with a different request",
                job_id=existing.id,
            )
        return existing

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            entry = self._entries.get(job_id)
            return entry.job.model_copy() if entry else None

    def list_jobs(self, flt: ListFilter) -> JobPage:
        below = decode_cursor(flt.cursor)
        with self._lock:
            rows = sorted(self._entries.values(), key=lambda e: e.seq, reverse=True)
            page: list[_Entry] = []
            for entry in rows:
                if below is not None and entry.seq >= below:
                    continue
                if _matches(entry.job, flt):
                    page.append(entry)
                    if len(page) > flt.limit:
                        break
        more = len(page) > flt.limit
        page = page[: flt.limit]
        cursor = encode_cursor(page[-1].seq) if more and page else None
        return JobPage([e.job.model_copy() for e in page], cursor)

    def queue_position(self, job_id: str) -> int | None:
        with self._lock:
            entry = self._entries.get(job_id)
            if entry is None or entry.job.status != JobStatus.queued:
                return None
            mine = _order(entry)
            return sum(1 for e in self._queued() if _order(e) < mine)

    def stats(self, now: float | None = None) -> QueueStats:
        ts = now_or(now)
        with self._lock:
            queued = {p.value: 0 for p in Priority}
            oldest: float | None = None
            running = dead = 0
            for entry in self._entries.values():
                job = entry.job
                if job.status == JobStatus.queued:
                    queued[job.spec.priority.value] += 1
                    oldest = job.created_at if oldest is None else min(oldest, job.created_at)
                elif job.status == JobStatus.running:
                    running += 1
                elif job.dead_lettered:
                    dead += 1
        age = ts - oldest if oldest is not None else None
        return QueueStats(queued, running, dead, age)

    # --- worker side ---
    def claim_batch(
        self,
        worker_id: str,
        max_images: int,
        lease_seconds: float,
        window_seconds: float = 0.0,
        now: float | None = None,
    ) -> Claim:
        ts = now_or(now)
        with self._lock:
            self._reclaim(ts)
            selection = select_batch(self._candidates(ts), max_images)
            if selection is None:
                return Claim([], None)
            wait = window_wait(selection, max_images, window_seconds, ts)
            if wait > 0:
                return Claim([], wait)
            claimed = []
            for cand in selection.chosen:
                job = self._entries[cand.key].job
                claimed.append(
                    self._replace(
                        job,
                        status=JobStatus.running,
                        attempts=job.attempts + 1,
                        started_at=job.started_at if job.started_at is not None else ts,
                        lease_owner=worker_id,
                        lease_expires_at=ts + lease_seconds,
                        updated_at=ts,
                    )
                )
            return Claim([j.model_copy() for j in claimed])

    def _candidates(self, ts: float) -> Iterator[Candidate]:
        ready = sorted((e for e in self._queued() if e.available_at <= ts), key=_order)
        for entry in ready:
            job = entry.job
            yield Candidate(
                job.id, job.spec.priority.rank, job.batch_key, job.num_images, job.created_at
            )

    def heartbeat(
        self, worker_id: str, job_ids: list[str], lease_seconds: float, now: float | None = None
    ) -> set[str]:
        ts = now_or(now)
        held: set[str] = set()
        with self._lock:
            for job_id in job_ids:
                job = self._held(job_id, worker_id)
                if job is not None:
                    self._replace(job, lease_expires_at=ts + lease_seconds, updated_at=ts)
                    held.add(job_id)
        return held

    def update_progress(self, job_id: str, worker_id: str, step: int, total: int) -> None:
        with self._lock:
            job = self._held(job_id, worker_id)
            if job is not None:
                self._replace(
                    job, progress_step=step, progress_total=total, updated_at=now_or(None)
                )

    def complete(
        self, job_id: str, worker_id: str, result: JobResult, now: float | None = None
    ) -> bool:
        with self._lock:
            job = self._held(job_id, worker_id)
            if job is None:
                return False
            self._finish(job, JobStatus.succeeded, now_or(now), result=result, error=None)
            return True

    def fail(
        self,
        job_id: str,
        worker_id: str,
        error: JobError,
        retryable: bool,
        retry_delay: float = 0.0,
        now: float | None = None,
    ) -> Job | None:
        ts = now_or(now)
        with self._lock:
            job = self._held(job_id, worker_id)
            if job is None:
                return None
            if retry_keeps_going(job, retryable):
                self._entries[job_id].available_at = ts + retry_delay
                out = self._replace(
                    job,
                    status=JobStatus.queued,
                    error=error,
                    progress_step=0,
                    updated_at=ts,
                    **_LEASE_CLEARED,
                )
            else:
                out = self._finish(job, JobStatus.failed, ts, error=error, dead_lettered=retryable)
            return out.model_copy()

    def release(self, job_ids: list[str], worker_id: str, refund_attempt: bool = True) -> None:
        ts = now_or(None)
        with self._lock:
            for job_id in job_ids:
                job = self._held(job_id, worker_id)
                if job is None:
                    continue
                attempts = max(job.attempts - 1, 0) if refund_attempt else job.attempts
                self._replace(
                    job,
                    status=JobStatus.queued,
                    attempts=attempts,
                    started_at=job.started_at if attempts else None,
                    progress_step=0,
                    updated_at=ts,
                    **_LEASE_CLEARED,
                )

    def cancel(self, job_id: str, now: float | None = None) -> Job:
        ts = now_or(now)
        with self._lock:
            entry = self._entries.get(job_id)
            if entry is None:
                raise NotFound(f"job {job_id} not found")
            job = entry.job
            if job.status == JobStatus.queued:
                job = self._finish(job, JobStatus.canceled, ts)
            elif job.status == JobStatus.running and not job.cancel_requested:
                job = self._replace(job, cancel_requested=True, updated_at=ts)
            return job.model_copy()

    def cancel_requested(self, job_ids: list[str]) -> set[str]:
        with self._lock:
            return {
                jid
                for jid in job_ids
                if (e := self._entries.get(jid)) is not None
                and e.job.status == JobStatus.running
                and e.job.cancel_requested
            }

    def mark_canceled(self, job_id: str, worker_id: str, now: float | None = None) -> bool:
        with self._lock:
            job = self._held(job_id, worker_id)
            if job is None:
                return False
            self._finish(job, JobStatus.canceled, now_or(now))
            return True

    def reclaim_expired(self, now: float | None = None, every_lease: bool = False) -> list[str]:
        with self._lock:
            ts = now_or(now)
            return self._reclaim(ts, float("inf") if every_lease else ts)

    def _reclaim(self, ts: float, cutoff: float | None = None) -> list[str]:
        cutoff = ts if cutoff is None else cutoff
        expired = [
            e.job
            for e in self._entries.values()
            if e.job.status == JobStatus.running
            and e.job.lease_expires_at is not None
            and e.job.lease_expires_at <= cutoff
        ]
        for job in expired:
            if job.cancel_requested:
                self._finish(job, JobStatus.canceled, ts)
            elif job.attempts >= job.max_attempts:
                self._finish(
                    job,
                    JobStatus.failed,
                    ts,
                    error=lease_expired_error(job.attempts),
                    dead_lettered=True,
                )
            else:
                self._entries[job.id].available_at = ts
                self._replace(
                    job, status=JobStatus.queued, progress_step=0, updated_at=ts, **_LEASE_CLEARED
                )
        return [job.id for job in expired]

    def dead_letters(self, limit: int = 100) -> list[Job]:
        with self._lock:
            dead = [
                e.job
                for e in self._entries.values()
                if e.job.status == JobStatus.failed and e.job.dead_lettered
            ]
        dead.sort(key=lambda j: j.finished_at or 0.0, reverse=True)
        return [j.model_copy() for j in dead[:limit]]

    def requeue_dead_letter(self, job_id: str) -> Job:
        ts = now_or(None)
        with self._lock:
            entry = self._entries.get(job_id)
            if entry is None:
                raise NotFound(f"job {job_id} not found")
            if not entry.job.dead_lettered:
                raise Conflict(f"job {job_id} is not in the dead letters")
            # available_at stays: it was <= the last claim, so the job is ready now.
            job = self._replace(
                entry.job,
                status=JobStatus.queued,
                attempts=0,
                dead_lettered=False,
                error=None,
                started_at=None,
                finished_at=None,
                progress_step=0,
                updated_at=ts,
            )
            return job.model_copy()

    def close(self) -> None:
        """Nothing to release: the data lives and dies with this object."""

    # --- internals (callers hold the lock) ---
    def _queued(self) -> Iterator[_Entry]:
        return (e for e in self._entries.values() if e.job.status == JobStatus.queued)

    def _count(self, status: JobStatus) -> int:
        return sum(1 for e in self._entries.values() if e.job.status == status)

    def _held(self, job_id: str, worker_id: str) -> Job | None:
        entry = self._entries.get(job_id)
        if entry is None:
            return None
        job = entry.job
        if job.status != JobStatus.running or job.lease_owner != worker_id:
            return None
        return job

    def _replace(self, job: Job, **changes: Any) -> Job:
        updated = job.model_copy(update=changes)
        self._entries[job.id].job = updated
        return updated

    def _finish(self, job: Job, status: JobStatus, ts: float, **changes: Any) -> Job:
        """Terminal transition: stamp, clear the lease, write the outbox entry."""
        done = self._replace(
            job, status=status, finished_at=ts, updated_at=ts, **_LEASE_CLEARED, **changes
        )
        self._add_outbox_entry(done, ts)
        return done


def _order(entry: _Entry) -> tuple[int, int]:
    return (entry.job.spec.priority.rank, entry.seq)


def _matches(job: Job, flt: ListFilter) -> bool:
    if flt.status is not None and job.status != flt.status:
        return False
    if flt.priority is not None and job.spec.priority != flt.priority:
        return False
    return flt.owner is None or job.owner == flt.owner
