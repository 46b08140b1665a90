"""The job state machine: every transition is decided here, once, as pure functions
over ``Job`` values. Backends (memory, SQLite, Redis) load the job inside their own
atomic section (a lock, a write transaction, a WATCHed Redis transaction), call one of
these functions and persist exactly what it returns; none of them decides anything.

States: queued -> running -> succeeded | failed | canceled, and back to queued on a
retry, a release or a reclaimed lease; running -> held (a flagged image) -> succeeded
(approved) | failed (rejected) by a reviewer. Functions that act for a worker return None
when that worker no longer holds the job's lease (another attempt owns it now).
"""

from __future__ import annotations

from dataclasses import dataclass

from sdserve.domain.errors import Conflict
from sdserve.domain.jobs import Job, JobError, JobResult, JobStatus, NewJob
from sdserve.domain.requests import JobSpec
from sdserve.domain.workflows import (
    NewWorkflow,
    StepInput,
    Workflow,
    WorkflowError,
    WorkflowStatus,
)


@dataclass(frozen=True)
class Outcome:
    """A decided transition: the job as it must be stored."""

    job: Job

    @property
    def ended(self) -> bool:
        return self.job.status.terminal

    @property
    def notify_webhook(self) -> bool:
        """A terminal transition (or a hold for review) of a job with a callback writes
        one outbox entry in the same atomic section (workflow steps report through their
        workflow instead)."""
        told = self.ended or self.job.status is JobStatus.held
        return told and self.job.callback_url is not None and self.job.workflow_id is None


def lease_expired_error(attempts: int) -> JobError:
    return JobError(
        type="lease_expired",
        message=f"worker lease expired; gave up after {attempts} attempt(s)",
    )


def new_job(new: NewJob, ts: float) -> Job:
    return Job(
        id=new.id,
        spec=new.spec,
        status=JobStatus.queued,
        created_at=ts,
        updated_at=ts,
        available_at=ts,
        max_attempts=new.max_attempts,
        callback_url=new.callback_url,
        idempotency_key=new.idempotency_key,
        request_hash=new.request_hash,
        owner=new.owner,
        workflow_id=new.workflow_id,
        workflow_step=new.workflow_step,
    )


def holds(job: Job, worker_id: str) -> bool:
    return job.status is JobStatus.running and job.lease_owner == worker_id


def claim(job: Job, worker_id: str, ts: float, lease_seconds: float, batch_size: int) -> Job:
    """A claim counts one attempt and leases the job to the worker."""
    if job.status is not JobStatus.queued:
        raise Conflict(f"job {job.id} is {job.status.value}, not queued")
    return job.model_copy(
        update={
            "status": JobStatus.running,
            "attempts": job.attempts + 1,
            "started_at": job.started_at if job.started_at is not None else ts,
            "lease_owner": worker_id,
            "lease_expires_at": ts + lease_seconds,
            "batch_size": batch_size,
            "updated_at": ts,
        }
    )


def heartbeat(job: Job, worker_id: str, ts: float, lease_seconds: float) -> Job | None:
    if not holds(job, worker_id):
        return None
    return job.model_copy(update={"lease_expires_at": ts + lease_seconds, "updated_at": ts})


def progress(job: Job, worker_id: str, step: int, total: int, ts: float) -> Job | None:
    if not holds(job, worker_id):
        return None
    return job.model_copy(update={"progress_step": step, "progress_total": total, "updated_at": ts})


def _finish(job: Job, status: JobStatus, ts: float, **changes: object) -> Outcome:
    update: dict[str, object] = {
        "status": status,
        "finished_at": ts,
        "updated_at": ts,
        "lease_owner": None,
        "lease_expires_at": None,
    }
    update.update(changes)
    return Outcome(job.model_copy(update=update))


def _requeue(job: Job, ts: float, available_at: float, **changes: object) -> Outcome:
    update: dict[str, object] = {
        "status": JobStatus.queued,
        "progress_step": 0,
        "available_at": available_at,
        "updated_at": ts,
        "lease_owner": None,
        "lease_expires_at": None,
        "batch_size": 0,
    }
    update.update(changes)
    return Outcome(job.model_copy(update=update))


def complete(job: Job, worker_id: str, result: JobResult, ts: float) -> Outcome | None:
    if not holds(job, worker_id):
        return None
    return _finish(job, JobStatus.succeeded, ts, result=result, error=None)


def hold(
    job: Job, worker_id: str, result: JobResult, reason: JobError, ts: float
) -> Outcome | None:
    """A flagged image: the job waits for a reviewer (its images in quarantine)."""
    if not holds(job, worker_id):
        return None
    update = {"status": JobStatus.held, "result": result, "error": reason, "updated_at": ts}
    update.update({"lease_owner": None, "lease_expires_at": None})
    return Outcome(job.model_copy(update=update))


def review(
    job: Job, approve: bool, result: JobResult, error: JobError | None, ts: float
) -> Outcome:
    """A reviewer's decision on a held job: approved ends it succeeded (images
    released), rejected ends it failed with ``error``."""
    if job.status is not JobStatus.held:
        raise Conflict(f"job {job.id} is {job.status.value}, not held for review")
    if approve:
        return _finish(job, JobStatus.succeeded, ts, result=result, error=None)
    return _finish(job, JobStatus.failed, ts, result=result, error=error)


def fail(
    job: Job,
    worker_id: str,
    error: JobError,
    retryable: bool,
    retry_delay: float,
    ts: float,
) -> Outcome | None:
    """Retry (queued again after ``retry_delay``) while retryable and attempts remain;
    else failed, into the dead letters when it was the attempts that ran out."""
    if not holds(job, worker_id):
        return None
    if retryable and job.attempts < job.max_attempts:
        return _requeue(job, ts, ts + retry_delay, error=error)
    return _finish(job, JobStatus.failed, ts, error=error, dead_lettered=retryable)


def release(job: Job, worker_id: str, refund_attempt: bool, ts: float) -> Outcome | None:
    """Give a claimed job back (graceful shutdown, batch split) keeping its place in
    line; by default the attempt is not counted: a release is not a failure."""
    if not holds(job, worker_id):
        return None
    attempts = max(job.attempts - 1, 0) if refund_attempt else job.attempts
    return _requeue(
        job,
        ts,
        job.available_at,
        attempts=attempts,
        started_at=job.started_at if attempts else None,
    )


def lease_expired(job: Job, cutoff: float) -> bool:
    return (
        job.status is JobStatus.running
        and job.lease_expires_at is not None
        and job.lease_expires_at <= cutoff
    )


def reclaim(job: Job, ts: float) -> Outcome:
    """A running job whose worker stopped renewing its lease (killed, partitioned).

    When it died in a batch with other jobs nobody knows whose fault it was: the
    attempt is refunded and the job runs alone next time, so only a crash while it
    ran alone counts against it (a poison job never takes its batch mates to the
    dead letters)."""
    if job.cancel_requested:
        return _finish(job, JobStatus.canceled, ts)
    if job.batch_size > 1:
        attempts = max(job.attempts - 1, 0)
        return _requeue(job, ts, ts, attempts=attempts, solo=True)
    if job.attempts >= job.max_attempts:
        return _finish(
            job,
            JobStatus.failed,
            ts,
            error=lease_expired_error(job.attempts),
            dead_lettered=True,
        )
    return _requeue(job, ts, ts)


def cancel(job: Job, ts: float) -> Outcome:
    """Client cancel: a queued job at once, a running one at its next step (the worker
    sees ``cancel_requested``); a finished job stays as it is."""
    if job.status is JobStatus.queued:
        return _finish(job, JobStatus.canceled, ts)
    if job.status is JobStatus.running and not job.cancel_requested:
        return Outcome(job.model_copy(update={"cancel_requested": True, "updated_at": ts}))
    return Outcome(job)


def mark_canceled(job: Job, worker_id: str, ts: float) -> Outcome | None:
    if not holds(job, worker_id):
        return None
    return _finish(job, JobStatus.canceled, ts)


def requeue_dead_letter(job: Job, ts: float) -> Outcome:
    """Operator action: a dead-lettered job gets a fresh set of attempts (its place in
    line and availability stay: it was claimable before, so it is now)."""
    if not job.dead_lettered:
        raise Conflict(f"job {job.id} is not in the dead letters")
    return Outcome(
        job.model_copy(
            update={
                "status": JobStatus.queued,
                "attempts": 0,
                "dead_lettered": False,
                "solo": False,
                "error": None,
                "started_at": None,
                "finished_at": None,
                "progress_step": 0,
                "updated_at": ts,
            }
        )
    )


# --- workflows ---


@dataclass(frozen=True)
class WorkflowOutcome:
    """A decided workflow transition: the workflow as it must be stored and, when a
    step finished and another follows, the next step's job to insert with it."""

    workflow: Workflow
    next_job: Job | None = None
    changed: bool = True

    @property
    def notify_webhook(self) -> bool:
        return self.changed and self.workflow.status.terminal and bool(self.workflow.callback_url)


def _step_job(wf: Workflow, index: int, spec: JobSpec, ts: float) -> Job:
    new = NewJob(
        spec=spec,
        owner=wf.owner,
        max_attempts=wf.max_attempts,
        workflow_id=wf.id,
        workflow_step=index,
    )
    return new_job(new, ts)


def start_workflow(new: NewWorkflow, ts: float) -> tuple[Workflow, Job]:
    """A new workflow and the job of its first step, stored together."""
    first = new.steps[0]
    wf = Workflow(
        id=new.id,
        status=WorkflowStatus.running,
        steps=list(new.steps),
        current=0,
        created_at=ts,
        updated_at=ts,
        callback_url=new.callback_url,
        idempotency_key=new.idempotency_key,
        request_hash=new.request_hash,
        owner=new.owner,
        max_attempts=new.max_attempts,
    )
    job = _step_job(wf, 0, first.spec, ts)
    return _with_step_job(wf, 0, job, ts), job


def _with_step_job(wf: Workflow, index: int, job: Job, ts: float) -> Workflow:
    steps = list(wf.steps)
    steps[index] = steps[index].model_copy(update={"job_id": job.id, "spec": job.spec})
    return wf.model_copy(update={"steps": steps, "current": index, "updated_at": ts})


def advance_workflow(wf: Workflow, job: Job, ts: float) -> WorkflowOutcome:
    """A step's job reached a terminal state: start the next step, or end the workflow
    (failed naming the step, canceled, or succeeded after the last step)."""
    index = job.workflow_step
    if wf.status.terminal or index is None or index != wf.current or not job.status.terminal:
        return WorkflowOutcome(wf, changed=False)
    if job.status is JobStatus.succeeded and job.result is not None:
        if index + 1 == len(wf.steps):
            done = wf.model_copy(
                update={"status": WorkflowStatus.succeeded, "finished_at": ts, "updated_at": ts}
            )
            return WorkflowOutcome(done)
        step = wf.steps[index + 1]
        spec = step.spec
        if step.input is StepInput.previous:
            spec = spec.model_copy(update={"image": job.result.images[0].id})
        nxt = _step_job(wf, index + 1, spec, ts)
        return WorkflowOutcome(_with_step_job(wf, index + 1, nxt, ts), nxt)
    if job.status is JobStatus.canceled:
        status, error = WorkflowStatus.canceled, None
    else:
        err = job.error
        status = WorkflowStatus.failed
        error = WorkflowError(
            step=index,
            type=err.type if err else "generation_failed",
            message=f"step {index} ({job.spec.task.value}) failed: "
            + (err.message if err else "no result"),
        )
    ended = wf.model_copy(
        update={"status": status, "error": error, "finished_at": ts, "updated_at": ts}
    )
    return WorkflowOutcome(ended)


def cancel_workflow(wf: Workflow, ts: float) -> WorkflowOutcome:
    """Client cancel: the workflow ends now; the backend also cancels the current step's
    job (queued: at once; running: at its next step) and no later step starts."""
    if wf.status.terminal:
        return WorkflowOutcome(wf, changed=False)
    ended = wf.model_copy(
        update={"status": WorkflowStatus.canceled, "finished_at": ts, "updated_at": ts}
    )
    return WorkflowOutcome(ended)
