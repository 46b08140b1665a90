"""What ``RedisQueue`` does inside one unit of work: persist decided transitions with
their consequences, and read claim candidates page by page (the Redis twin of
sqlite_ops)."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

from sdserve.domain.errors import IdempotencyConflict
from sdserve.domain.jobs import Job
from sdserve.queue import transitions as tr
from sdserve.queue.batching import CANDIDATE_SCAN_LIMIT, Candidate
from sdserve.queue.common import outbox_payload, workflow_payload
from sdserve.queue.factory import BackendUnavailable
from sdserve.queue.redis_keys import Keys, parse_candidate
from sdserve.queue.redis_store import Scripts, UnitOfWork

# Each process estimates Redis's clock on its own (redis_keys.RedisClock): two
# estimates differ by up to half a round trip plus drift. A job an API process has
# just accepted, with available_at = its "now", must not look "not yet available" to
# a worker whose estimate is a few microseconds behind (it would sleep until its next
# poll). Retry delays are honoured to within this.
CLOCK_TOLERANCE_S = 0.01


def store(uow: UnitOfWork, out: tr.Outcome) -> Job:
    """Persist a decided transition with its consequences: the webhook outbox entry and
    the workflow it advances, all in the same unit of work."""
    job = out.job
    uow.put_job(job)
    if out.notify_webhook and job.callback_url:
        uow.add_outbox(job.id, job.callback_url, outbox_payload(job))
    if out.ended and job.workflow_id is not None:
        wf = uow.workflow(job.workflow_id)
        if wf is not None:
            store_workflow(uow, tr.advance_workflow(wf, job, uow.ts))
    return job


def store_workflow(uow: UnitOfWork, out: tr.WorkflowOutcome) -> None:
    if not out.changed:
        return
    wf = out.workflow
    uow.put_workflow(wf)
    if out.next_job is not None:
        uow.insert_job(out.next_job)
    if out.notify_webhook and wf.callback_url:
        jobs = uow.jobs(wf.job_ids)
        uow.add_outbox(wf.id, wf.callback_url, workflow_payload(wf, jobs))


class CandidatePages:
    """The ready queue in claim order, read lazily a page per round trip.

    Yields the jobs available at ``ts`` and remembers every id read (available or
    not): the claim's commit checks that this prefix of the ready queue is unchanged,
    so nothing the decision saw (or skipped) moved meanwhile. The first page also
    brings the leases that expired by ``ts``."""

    def __init__(self, scripts: Scripts, keys: Keys, ts: float, max_images: int) -> None:
        self._scripts, self._keys, self._ts = scripts, keys, ts
        # Most claims need the first page only: a full batch of one-image jobs, and
        # as many again to step over incompatible ones.
        self._size = min(64, max(8, 2 * max_images))
        self.read_ids: list[str] = []
        self._first = self._page(0)
        count = int(self._first[0])
        self.expired: list[str] = [str(x) for x in self._first[1 : 1 + count]]
        self._first = self._first[1 + count :]

    def _page(self, offset: int) -> list[str]:
        k = self._keys
        reply: list[str] = self._scripts.candidates(
            keys=[k.queued, k.ready, k.delayed, k.leases],
            args=[k.job_prefix, self._ts, offset, self._size],
        )
        return reply

    def __iter__(self) -> Iterator[Candidate]:
        page = self._first
        while page:
            for job_id, meta in zip(page[::2], page[1::2], strict=True):
                if len(self.read_ids) >= CANDIDATE_SCAN_LIMIT:
                    return
                self.read_ids.append(job_id)
                if not meta:
                    continue  # removed between the index read and the meta read
                cand, available_at = parse_candidate(job_id, meta)
                if available_at <= self._ts + CLOCK_TOLERANCE_S:
                    yield cand
            if len(page) < 2 * self._size:
                return
            reply = self._page(len(self.read_ids))
            page = reply[1:]  # later pages carry no expired leases (count 0)


class StoreBusy(BackendUnavailable):
    """Lost every optimistic retry (extreme contention): a 503 the client may retry."""

    type = "store_busy"
    retryable = True


class Replay(Exception):
    """An idempotency key already stored: the id it names."""

    def __init__(self, ident: str) -> None:
        super().__init__(ident)
        self.ident = ident


def same_request(stored_hash: str | None, new_hash: str | None, ident: str) -> None:
    if stored_hash != new_hash:
        raise IdempotencyConflict(
            "idempotency key already used with a different request", job_id=ident
        )


def backoff(attempt: int) -> None:
    """Between optimistic retries: a short, growing, jittered pause so that competing
    claimers stop colliding."""
    if attempt:
        time.sleep(random.uniform(0, min(0.0005 * 2**attempt, 0.02)))
