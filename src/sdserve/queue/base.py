"""The JobQueue interface: durable job store + priority queue + leases + outbox.

Every backend (memory, sqlite, redis) implements this Protocol and passes the one
contract suite in tests/contract/test_queue_contract.py.

Semantics every backend keeps:
- ``enqueue`` returns only once the job is durable (for SQLite: committed).
- Priorities: the head of a claim is the oldest job of the best priority waiting.
  Companions must share the head's ``batch_key``; a job may join only if no job of a
  better priority than its own is left waiting (so no lower-priority job ever starts
  while a higher one waits). FIFO within a priority for the head, except:
- Model affinity: a claim may name ``prefer_models`` (the models the worker holds).
  If the oldest job of the best priority needs another model, the oldest job of the
  SAME priority for a preferred model heads the batch instead, unless the oldest job
  has waited (since ``created_at``) longer than ``affinity_max_wait`` seconds. Never a
  lower priority; the passed-over jobs still block lower-priority companions.
  (batching.select_batch is the one implementation of this rule.)
- A claim counts one attempt on each claimed job and leases it to the worker.
- Expired leases are reclaimed (before each claim and by ``reclaim_expired``): back to
  queued, or failed into the dead letters once ``attempts >= max_attempts``.
- ``complete``/``fail``/``mark_canceled`` only act for the current lease owner, so a
  worker that lost its lease cannot overwrite a newer attempt's outcome.
- A terminal transition of a job with a ``callback_url`` writes one outbox entry in
  the same transaction.
- Every transition is decided by queue/transitions.py; a backend only persists it.
- A workflow step's job reaching a terminal state advances its workflow in the same
  atomic section (the next step's job is inserted, or the workflow ends).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from sdserve.domain.jobs import Job, JobError, JobResult, JobStatus, NewJob
from sdserve.domain.requests import Priority
from sdserve.domain.workflows import NewWorkflow, Workflow
from sdserve.queue.batching import DEFAULT_AFFINITY_MAX_WAIT_S
from sdserve.queue.purge import PurgeFilter, PurgeResult


@dataclass(frozen=True)
class Claim:
    """Result of a claim attempt. ``jobs`` empty means nothing to run now;
    ``retry_after`` then says how long until a batch window closes (None: queue empty)."""

    jobs: list[Job]
    retry_after: float | None = None


@dataclass(frozen=True)
class JobPage:
    jobs: list[Job]
    next_cursor: str | None


@dataclass(frozen=True)
class QueueStats:
    queued: dict[str, int]  # by priority name
    running: int
    dead_letters: int
    oldest_queued_age: float | None = None


@dataclass(frozen=True)
class OutboxEntry:
    id: str
    job_id: str
    url: str
    payload: dict[str, Any]
    attempts: int
    next_attempt_at: float
    created_at: float
    last_error: str | None = None
    status: str = "pending"  # pending | delivered | failed


@dataclass(frozen=True)
class ListFilter:
    status: JobStatus | None = None
    priority: Priority | None = None
    owner: str | None = None
    limit: int = 50
    cursor: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class JobQueue(Protocol):
    # --- submit / read ---
    def enqueue(self, job: NewJob, now: float | None = None) -> tuple[Job, bool]:
        """Store a new job. Returns (job, created). With an idempotency key already
        used by the same owner: the same request hash returns the existing job with
        created=False; a different hash raises IdempotencyConflict. Raises QueueFull
        when ``max_depth`` queued jobs are waiting."""
        ...

    def get(self, job_id: str) -> Job | None: ...

    def list_jobs(self, flt: ListFilter) -> JobPage:
        """Newest first; ``cursor`` is opaque."""
        ...

    def queue_position(self, job_id: str) -> int | None:
        """Number of queued jobs that would start before this one (0 = next);
        None if the job is not queued."""
        ...

    def stats(self, now: float | None = None) -> QueueStats: ...

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
        """Claim up to ``max_images`` images of compatible jobs (the head job is always
        claimed even if it alone exceeds ``max_images``). If the batch is not full and
        the head has waited less than ``window_seconds``, claim nothing and return
        ``retry_after`` = time left in the window. ``prefer_models``: see model
        affinity above."""
        ...

    def heartbeat(
        self, worker_id: str, job_ids: list[str], lease_seconds: float, now: float | None = None
    ) -> set[str]:
        """Extend leases; returns the ids this worker still holds."""
        ...

    def update_progress(self, job_id: str, worker_id: str, step: int, total: int) -> None: ...

    def complete(
        self, job_id: str, worker_id: str, result: JobResult, now: float | None = None
    ) -> bool:
        """Mark succeeded. False if the worker no longer holds the lease."""
        ...

    def fail(
        self,
        job_id: str,
        worker_id: str,
        error: JobError,
        retryable: bool,
        retry_delay: float = 0.0,
        now: float | None = None,
    ) -> Job | None:
        """Retry (back to queued, available after ``retry_delay``) if retryable and
        attempts remain; else failed and dead-lettered (if attempts ran out) or just
        failed (non-retryable). None if the worker no longer holds the lease."""
        ...

    def hold(
        self,
        job_id: str,
        worker_id: str,
        result: JobResult,
        reason: JobError,
        now: float | None = None,
    ) -> bool:
        """Held for review (a flagged image). False if the worker no longer holds the lease."""
        ...

    def review(
        self,
        job_id: str,
        approve: bool,
        result: JobResult,
        error: JobError | None = None,
        now: float | None = None,
    ) -> Job:
        """A reviewer ends a held job: succeeded (approve) or failed with ``error``.
        NotFound / Conflict (not held)."""
        ...

    def release(self, job_ids: list[str], worker_id: str, refund_attempt: bool = True) -> None:
        """Give claimed jobs back to the queue (graceful shutdown, batch split),
        keeping their place; by default the attempt is not counted."""
        ...

    def cancel(self, job_id: str, now: float | None = None) -> Job:
        """Queued: canceled at once. Running: ``cancel_requested`` set (the worker
        stops it at its next step). Terminal: returned unchanged. NotFound if absent."""
        ...

    def cancel_requested(self, job_ids: list[str]) -> set[str]: ...

    def mark_canceled(self, job_id: str, worker_id: str, now: float | None = None) -> bool: ...

    def reclaim_expired(self, now: float | None = None, every_lease: bool = False) -> list[str]:
        """Return jobs with expired leases to the queue (or dead letters). With
        ``every_lease``, treat every lease as expired (start-up of the process that owns
        the store: all running jobs lost their workers); they are available at ``now``."""
        ...

    def dead_letters(self, limit: int = 100) -> list[Job]: ...

    def requeue_dead_letter(self, job_id: str) -> Job:
        """Operator action: give a dead-lettered job a fresh set of attempts."""
        ...

    # --- workflows ---
    def enqueue_workflow(
        self, workflow: NewWorkflow, now: float | None = None
    ) -> tuple[Workflow, bool]:
        """Store a workflow and its first step's job atomically; idempotency keys and
        the depth limit as for ``enqueue``."""
        ...

    def get_workflow(self, workflow_id: str) -> Workflow | None: ...

    def cancel_workflow(self, workflow_id: str, now: float | None = None) -> Workflow:
        """End a running workflow as canceled and cancel its current step's job.
        NotFound if absent; a finished workflow is returned unchanged."""
        ...

    # --- webhook outbox ---
    def outbox_due(self, now: float | None = None, limit: int = 50) -> list[OutboxEntry]: ...

    def outbox_claim(
        self, now: float | None = None, limit: int = 50, lease_seconds: float = 60.0
    ) -> list[OutboxEntry]:
        """Like ``outbox_due``, but hides the returned entries from other dispatchers for
        ``lease_seconds`` (one transaction), so several API processes never send the
        same entry at once; an entry whose dispatcher died comes back after the lease."""
        ...

    def outbox_delivered(self, entry_id: str, now: float | None = None) -> None: ...

    def outbox_retry(self, entry_id: str, next_attempt_at: float, error: str) -> None: ...

    def outbox_give_up(self, entry_id: str, error: str) -> None: ...

    def outbox_get(self, entry_id: str) -> OutboxEntry | None: ...

    # --- retention ---
    def purge(self, flt: PurgeFilter, now: float | None = None) -> PurgeResult:
        """Delete finished jobs (and workflows) that ``flt`` selects, with their outbox
        entries and idempotency keys; or, with ``redact_prompts``, blank their prompts.
        Returns the jobs as they were (their images and inputs are the caller's to
        delete); never touches a queued or running job. Rules: queue/purge.py."""
        ...

    def close(self) -> None: ...
