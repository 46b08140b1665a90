"""In-memory JobQueue: the fake for tests and single-process demos.

Thread-safe (one re-entrant lock around every operation); nothing survives the
process. Jobs are pydantic models replaced on every change, never mutated in place,
and callers get copies, so a caller cannot change the queue's state by accident.
Every transition is decided by queue/transitions.py; this class only stores it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sdserve.domain.errors import Conflict, IdempotencyConflict, NotFound, QueueFull
from sdserve.domain.jobs import Job, JobError, JobResult, JobStatus, NewJob
from sdserve.domain.requests import Priority
from sdserve.domain.workflows import NewWorkflow, Workflow
from sdserve.queue import transitions as tr
from sdserve.queue.base import Claim, JobPage, ListFilter, OutboxEntry, QueueStats
from sdserve.queue.batching import (
    DEFAULT_AFFINITY_MAX_WAIT_S,
    Affinity,
    Candidate,
    select_batch,
    window_wait,
)
from sdserve.queue.common import (
    decode_cursor,
    encode_cursor,
    now_or,
    outbox_payload,
    workflow_payload,
)
from sdserve.queue.memory_outbox import MemoryOutbox
from sdserve.queue.purge import (
    PurgeFilter,
    PurgeResult,
    images_expired,
    job_matches,
    redacted,
    workflow_matches,
)


@dataclass
class _Entry:
    job: Job
    seq: int  # place in line; kept across retries and releases


class MemoryQueue(MemoryOutbox):
    def __init__(self, max_depth: int = 10_000) -> None:
        self.max_depth = max_depth
        self._lock = threading.RLock()
        self._entries: dict[str, _Entry] = {}
        self._workflows: dict[str, Workflow] = {}
        self._idempotency: dict[tuple[str, str | None, str], str] = {}
        self._outbox: dict[str, OutboxEntry] = {}
        self._next_seq = 1

    # --- submit / read ---
    def enqueue(self, job: NewJob, now: float | None = None) -> tuple[Job, bool]:
        ts = now_or(now)
        with self._lock:
            existing = self._idempotent_match("job", job.owner, job.idempotency_key)
            if existing is not None:
                found = self._entries[existing].job
                _same_request(found.request_hash, job.request_hash, found.id)
                return found.model_copy(), False
            if job.id in self._entries:
                raise Conflict(f"job id {job.id} already exists")
            self._check_depth()
            stored = self._insert(tr.new_job(job, ts))
            self._remember_key("job", job.owner, job.idempotency_key, job.id)
            return stored.model_copy(), True

    def _idempotent_match(self, kind: str, owner: str | None, key: str | None) -> str | None:
        return None if key is None else self._idempotency.get((kind, owner, key))

    def _remember_key(self, kind: str, owner: str | None, key: str | None, ident: str) -> None:
        if key is not None:
            self._idempotency[(kind, owner, key)] = ident

    def _check_depth(self) -> None:
        if sum(1 for _ in self._queued()) >= self.max_depth:
            raise QueueFull(f"queue is full ({self.max_depth} jobs waiting)")

    def _insert(self, job: Job) -> Job:
        self._entries[job.id] = _Entry(job, self._next_seq)
        self._next_seq += 1
        return job

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
        prefer_models: frozenset[str] = frozenset(),
        affinity_max_wait: float = DEFAULT_AFFINITY_MAX_WAIT_S,
    ) -> Claim:
        ts = now_or(now)
        affinity = Affinity(prefer_models, ts, affinity_max_wait)
        with self._lock:
            self._reclaim(ts, ts)
            selection = select_batch(self._candidates(ts), max_images, affinity)
            if selection is None:
                return Claim([], None)
            wait = window_wait(selection, max_images, window_seconds, ts)
            if wait > 0:
                return Claim([], wait)
            size = len(selection.chosen)
            claimed = [
                self._put(tr.claim(self._entries[c.key].job, worker_id, ts, lease_seconds, size))
                for c in selection.chosen
            ]
            return Claim([j.model_copy() for j in claimed])

    def _candidates(self, ts: float) -> Iterator[Candidate]:
        ready = sorted((e for e in self._queued() if e.job.available_at <= ts), key=_order)
        for entry in ready:
            job = entry.job
            yield Candidate(
                job.id,
                job.spec.priority.rank,
                job.batch_key,
                job.num_images,
                job.created_at,
                job.solo,
                job.spec.model,
            )

    def heartbeat(
        self, worker_id: str, job_ids: list[str], lease_seconds: float, now: float | None = None
    ) -> set[str]:
        ts = now_or(now)
        held: set[str] = set()
        with self._lock:
            for job_id in job_ids:
                entry = self._entries.get(job_id)
                beat = tr.heartbeat(entry.job, worker_id, ts, lease_seconds) if entry else None
                if beat is not None:
                    self._put(beat)
                    held.add(job_id)
        return held

    def update_progress(self, job_id: str, worker_id: str, step: int, total: int) -> None:
        with self._lock:
            entry = self._entries.get(job_id)
            moved = tr.progress(entry.job, worker_id, step, total, now_or(None)) if entry else None
            if moved is not None:
                self._put(moved)

    def complete(
        self, job_id: str, worker_id: str, result: JobResult, now: float | None = None
    ) -> bool:
        ts = now_or(now)
        with self._lock:
            return self._held_apply(job_id, lambda j: tr.complete(j, worker_id, result, ts), ts)

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
            entry = self._entries.get(job_id)
            if entry is None:
                return None
            out = tr.fail(entry.job, worker_id, error, retryable, retry_delay, ts)
            return self._store(out, ts).model_copy() if out else None

    def hold(
        self,
        job_id: str,
        worker_id: str,
        result: JobResult,
        reason: JobError,
        now: float | None = None,
    ) -> bool:
        ts = now_or(now)
        with self._lock:
            return self._held_apply(job_id, lambda j: tr.hold(j, worker_id, result, reason, ts), ts)

    def review(
        self,
        job_id: str,
        approve: bool,
        result: JobResult,
        error: JobError | None = None,
        now: float | None = None,
    ) -> Job:
        ts = now_or(now)
        with self._lock:
            entry = self._entries.get(job_id)
            if entry is None:
                raise NotFound(f"job {job_id} not found")
            return self._store(tr.review(entry.job, approve, result, error, ts), ts).model_copy()

    def release(self, job_ids: list[str], worker_id: str, refund_attempt: bool = True) -> None:
        ts = now_or(None)
        with self._lock:
            for job_id in job_ids:
                self._held_apply(job_id, lambda j: tr.release(j, worker_id, refund_attempt, ts), ts)

    def cancel(self, job_id: str, now: float | None = None) -> Job:
        ts = now_or(now)
        with self._lock:
            entry = self._entries.get(job_id)
            if entry is None:
                raise NotFound(f"job {job_id} not found")
            return self._store(tr.cancel(entry.job, ts), ts).model_copy()

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
        ts = now_or(now)
        with self._lock:
            return self._held_apply(job_id, lambda j: tr.mark_canceled(j, worker_id, ts), ts)

    def reclaim_expired(self, now: float | None = None, every_lease: bool = False) -> list[str]:
        ts = now_or(now)
        with self._lock:
            return self._reclaim(ts, float("inf") if every_lease else ts)

    def _reclaim(self, ts: float, cutoff: float) -> list[str]:
        expired = [e.job for e in self._entries.values() if tr.lease_expired(e.job, cutoff)]
        for job in expired:
            self._store(tr.reclaim(job, ts), ts)
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

    def purge_dead_letter(self, job_id: str) -> Job:
        ts = now_or(None)
        with self._lock:
            entry = self._entries.get(job_id)
            if entry is None:
                raise NotFound(f"job {job_id} not found")
            return self._store(tr.purge_dead_letter(entry.job, ts), ts).model_copy()

    def requeue_dead_letter(self, job_id: str) -> Job:
        ts = now_or(None)
        with self._lock:
            entry = self._entries.get(job_id)
            if entry is None:
                raise NotFound(f"job {job_id} not found")
            return self._store(tr.requeue_dead_letter(entry.job, ts), ts).model_copy()

    # --- workflows ---
    def enqueue_workflow(
        self, workflow: NewWorkflow, now: float | None = None
    ) -> tuple[Workflow, bool]:
        ts = now_or(now)
        with self._lock:
            existing = self._idempotent_match("wf", workflow.owner, workflow.idempotency_key)
            if existing is not None:
                found = self._workflows[existing]
                _same_request(found.request_hash, workflow.request_hash, found.id)
                return found.model_copy(), False
            if workflow.id in self._workflows:
                raise Conflict(f"workflow id {workflow.id} already exists")
            self._check_depth()
            wf, first = tr.start_workflow(workflow, ts)
            self._workflows[wf.id] = wf
            self._insert(first)
            self._remember_key("wf", wf.owner, wf.idempotency_key, wf.id)
            return wf.model_copy(), True

    def get_workflow(self, workflow_id: str) -> Workflow | None:
        with self._lock:
            wf = self._workflows.get(workflow_id)
            return wf.model_copy() if wf else None

    def cancel_workflow(self, workflow_id: str, now: float | None = None) -> Workflow:
        ts = now_or(now)
        with self._lock:
            wf = self._workflows.get(workflow_id)
            if wf is None:
                raise NotFound(f"workflow {workflow_id} not found")
            out = tr.cancel_workflow(wf, ts)
            self._store_workflow(out, ts)
            step_job = out.workflow.steps[out.workflow.current].job_id
            if out.changed and step_job is not None:
                self._store(tr.cancel(self._entries[step_job].job, ts), ts)
            return out.workflow.model_copy()

    def purge(self, flt: PurgeFilter, now: float | None = None) -> PurgeResult:
        with self._lock:
            picked = [e.job for e in self._entries.values() if job_matches(e.job, flt)]
            more = len(picked) > flt.limit
            picked = picked[: flt.limit]
            if flt.redact_prompts:
                for job in picked:
                    entry = self._entries[job.id]
                    entry.job = job.model_copy(update={"spec": redacted(job.spec)})
                return PurgeResult([j.model_copy() for j in picked], [], more)
            if flt.expire_images:
                for job in picked:
                    self._entries[job.id].job = images_expired(job)
                return PurgeResult([j.model_copy() for j in picked], [], more)
            gone = {j.id for j in picked}
            for job_id in gone:
                del self._entries[job_id]
            workflows = [w.id for w in self._workflows.values() if workflow_matches(w, flt)]
            for wf_id in workflows:
                del self._workflows[wf_id]
            subjects = gone | set(workflows)
            self._idempotency = {k: v for k, v in self._idempotency.items() if v not in subjects}
            self._outbox = {k: o for k, o in self._outbox.items() if o.job_id not in subjects}
            return PurgeResult(picked, workflows, more)

    def close(self) -> None:
        """Nothing to release: the data lives and dies with this object."""

    # --- internals (callers hold the lock) ---
    def _queued(self) -> Iterator[_Entry]:
        return (e for e in self._entries.values() if e.job.status == JobStatus.queued)

    def _put(self, job: Job) -> Job:
        self._entries[job.id].job = job
        return job

    def _held_apply(
        self, job_id: str, decide: Callable[[Job], tr.Outcome | None], ts: float
    ) -> bool:
        entry = self._entries.get(job_id)
        out = decide(entry.job) if entry else None
        if out is None:
            return False
        self._store(out, ts)
        return True

    def _store(self, out: tr.Outcome, ts: float) -> Job:
        """Persist a decided transition with its consequences (outbox, workflow)."""
        job = self._put(out.job)
        if out.notify_webhook and job.callback_url:
            self._add_outbox_entry(job.id, job.callback_url, outbox_payload(job), ts)
        if out.ended and job.workflow_id is not None:
            wf = self._workflows.get(job.workflow_id)
            if wf is not None:
                self._store_workflow(tr.advance_workflow(wf, job, ts), ts)
        return job

    def _store_workflow(self, out: tr.WorkflowOutcome, ts: float) -> None:
        if not out.changed:
            return
        wf = out.workflow
        self._workflows[wf.id] = wf
        if out.next_job is not None:
            self._insert(out.next_job)
        if out.notify_webhook and wf.callback_url:
            jobs = {i: self._entries[i].job for i in wf.job_ids if i in self._entries}
            self._add_outbox_entry(wf.id, wf.callback_url, workflow_payload(wf, jobs), ts)


def _same_request(stored_hash: str | None, new_hash: str | None, ident: str) -> None:
    if stored_hash != new_hash:
        raise IdempotencyConflict(
            "idempotency key already used with a different request", job_id=ident
        )


def _order(entry: _Entry) -> tuple[int, int]:
    return (entry.job.spec.priority.rank, entry.seq)


def _matches(job: Job, flt: ListFilter) -> bool:
    if flt.status is not None and job.status != flt.status:
        return False
    if flt.priority is not None and job.spec.priority != flt.priority:
        return False
    return flt.owner is None or job.owner == flt.owner
