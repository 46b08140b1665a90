"""The one JobQueue contract: every backend must pass every test here.

Add a backend by adding a branch to ``_Backends.make`` and its name to ``BACKENDS``.
Time-dependent tests pass explicit ``now=`` values instead of sleeping.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sdserve.domain.errors import (
    Conflict,
    IdempotencyConflict,
    InvalidRequest,
    NotFound,
    QueueFull,
)
from sdserve.domain.jobs import ImageRef, Job, JobError, JobResult, JobStatus, NewJob
from sdserve.domain.requests import JobSpec, OutputFormat, Priority, Task
from sdserve.domain.workflows import NewWorkflow, StepInput, WorkflowStatus, WorkflowStep
from sdserve.queue.base import JobQueue, ListFilter, OutboxEntry

BACKENDS = ["memory", "sqlite", "redis"]
T0 = 1_000_000.0
LEASE = 30.0


class _Backends:
    def __init__(self, name: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.name = name
        self.db = tmp_path / "queue.db"
        self.opened: list[JobQueue] = []
        if name == "redis":  # the machine's redis-server, under a prefix of this test's own
            self.redis_url: str = request.getfixturevalue("redis_url")
            self.redis_prefix: str = request.getfixturevalue("redis_prefix")

    def make(self, max_depth: int = 10_000) -> JobQueue:
        queue: JobQueue
        if self.name == "memory":
            from sdserve.queue.memory import MemoryQueue

            queue = MemoryQueue(max_depth=max_depth)
        elif self.name == "sqlite":
            from sdserve.queue.sqlite import SqliteQueue

            queue = SqliteQueue(self.db, max_depth=max_depth)
        elif self.name == "redis":
            from sdserve.queue.redis import RedisQueue

            queue = RedisQueue.from_url(self.redis_url, self.redis_prefix, max_depth=max_depth)
        else:  # pragma: no cover - a new backend adds its branch here
            raise AssertionError(self.name)
        self.opened.append(queue)
        return queue

    @property
    def durable(self) -> bool:
        return self.name != "memory"

    def close_all(self) -> None:
        for queue in self.opened:
            queue.close()


@pytest.fixture(params=BACKENDS)
def backends(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[_Backends]:
    b = _Backends(request.param, tmp_path, request)
    yield b
    b.close_all()


@pytest.fixture
def queue(backends: _Backends) -> JobQueue:
    return backends.make()


def spec(
    priority: Priority = Priority.normal,
    key: str = "A",
    images: int = 1,
    prompt: str = "a cat",
    model: str = "demo",
) -> JobSpec:
    # The batch key follows from model/size/steps...; "key" picks the width.
    width = {"A": 512, "B": 768, "C": 640}[key]
    return JobSpec(
        prompt=prompt,
        negative_prompt="",
        width=width,
        height=512,
        num_inference_steps=20,
        guidance_scale=7.5,
        seed=42,
        num_images=images,
        scheduler="euler_a",
        model=model,
        priority=priority,
        output_format=OutputFormat.png,
    )


def add(
    q: JobQueue,
    at: float = T0,
    priority: Priority = Priority.normal,
    key: str = "A",
    images: int = 1,
    model: str = "demo",
    **kw: Any,
) -> str:
    job, created = q.enqueue(NewJob(spec=spec(priority, key, images, model=model), **kw), now=at)
    assert created
    return job.id


def claim(
    q: JobQueue,
    at: float,
    max_images: int = 4,
    worker: str = "w1",
    window: float = 0.0,
    prefer: frozenset[str] = frozenset(),
    max_wait: float = 5.0,
) -> list[str]:
    batch = q.claim_batch(
        worker, max_images, LEASE, window, now=at, prefer_models=prefer, affinity_max_wait=max_wait
    )
    return [j.id for j in batch.jobs]


def result() -> JobResult:
    return JobResult(images=[ImageRef(id="img.png", seed=42)], generation_time=1.0, seed_used=42)


def fetch(q: JobQueue, job_id: str) -> Job:
    job = q.get(job_id)
    assert job is not None, job_id
    return job


def outbox(q: JobQueue, entry_id: str) -> OutboxEntry:
    entry = q.outbox_get(entry_id)
    assert entry is not None, entry_id
    return entry


ERR = JobError(type="generation_failed", message="boom")


# --- submit / read ---


def test_enqueue_get_roundtrip(queue: JobQueue) -> None:
    new = NewJob(
        spec=spec(Priority.high, images=2),
        callback_url="https://example.com/h",
        idempotency_key="k",
        request_hash="h",
        owner="alice",
        max_attempts=5,
    )
    job, created = queue.enqueue(new, now=T0)
    assert created and job.id == new.id
    got = fetch(queue, new.id)
    assert got == job
    assert got.status == JobStatus.queued and got.spec == new.spec
    assert got.created_at == T0 and got.attempts == 0 and got.max_attempts == 5
    assert (got.owner, got.callback_url, got.idempotency_key) == (
        "alice",
        "https://example.com/h",
        "k",
    )
    assert queue.get("job_missing") is None


def test_durable_across_reopen(backends: _Backends) -> None:
    if not backends.durable:
        pytest.skip("in-memory backend keeps nothing")
    first = backends.make()
    job_id = add(first)
    first.close()
    again = backends.make()
    got = again.get(job_id)
    assert got is not None and got.status == JobStatus.queued
    assert claim(again, T0) == [job_id]


def test_idempotency(queue: JobQueue) -> None:
    new = NewJob(spec=spec(), idempotency_key="k1", request_hash="h1", owner="alice")
    job, created = queue.enqueue(new, now=T0)
    retry = NewJob(spec=spec(), idempotency_key="k1", request_hash="h1", owner="alice")
    same, created_again = queue.enqueue(retry, now=T0 + 1)
    assert created and not created_again and same.id == job.id
    with pytest.raises(IdempotencyConflict):
        queue.enqueue(
            NewJob(spec=spec(), idempotency_key="k1", request_hash="h2", owner="alice"), now=T0 + 2
        )
    other, created_other = queue.enqueue(
        NewJob(spec=spec(), idempotency_key="k1", request_hash="h1", owner="bob"), now=T0 + 3
    )
    assert created_other and other.id != job.id


def test_duplicate_job_id_is_a_conflict(queue: JobQueue) -> None:
    new = NewJob(spec=spec())
    queue.enqueue(new, now=T0)
    with pytest.raises(Conflict):
        queue.enqueue(new, now=T0 + 1)
    assert len(queue.list_jobs(ListFilter()).jobs) == 1


def test_queue_full(backends: _Backends) -> None:
    q = backends.make(max_depth=2)
    add(q)
    add(q)
    with pytest.raises(QueueFull):
        add(q)
    claim(q, T0, max_images=1)  # one leaves the queue: room again
    add(q)


# --- claim order, priorities, batching ---


def test_priority_order_and_fifo(queue: JobQueue) -> None:
    low = add(queue, T0, Priority.low)
    n1 = add(queue, T0 + 1, Priority.normal, key="B")
    h1 = add(queue, T0 + 2, Priority.high, key="C")
    n2 = add(queue, T0 + 3, Priority.normal, key="A")
    h2 = add(queue, T0 + 4, Priority.high, key="B")
    order = [claim(queue, T0 + 10, max_images=1) for _ in range(5)]
    assert order == [[h1], [h2], [n1], [n2], [low]]
    assert claim(queue, T0 + 10) == []


def test_priority_promise_no_lower_companion_while_higher_waits(queue: JobQueue) -> None:
    head = add(queue, T0, Priority.high, key="A")
    waiting_high = add(queue, T0 + 1, Priority.high, key="B")
    add(queue, T0 + 2, Priority.normal, key="A")
    assert claim(queue, T0 + 5) == [head]
    assert claim(queue, T0 + 5) == [waiting_high]


def test_lower_priority_companion_joins_when_nothing_better_waits(queue: JobQueue) -> None:
    head = add(queue, T0, Priority.high, key="A")
    normal = add(queue, T0 + 1, Priority.normal, key="A")
    add(queue, T0 + 2, Priority.low, key="B")
    assert claim(queue, T0 + 5) == [head, normal]


def test_batching_compatible_up_to_max_images(queue: JobQueue) -> None:
    a1 = add(queue, T0, images=2)
    b1 = add(queue, T0 + 1, key="B")
    a2 = add(queue, T0 + 2, images=1)
    a3 = add(queue, T0 + 3, images=2)  # would exceed 4 images
    a4 = add(queue, T0 + 4, images=1)
    batch = queue.claim_batch("w1", 4, LEASE, now=T0 + 5).jobs
    assert [j.id for j in batch] == [a1, a2, a4]
    assert sum(j.num_images for j in batch) == 4
    assert claim(queue, T0 + 5) == [b1]
    assert claim(queue, T0 + 5) == [a3]


def test_head_larger_than_max_images_claimed_alone(queue: JobQueue) -> None:
    big = add(queue, T0, images=6)
    small = add(queue, T0 + 1)
    assert claim(queue, T0 + 2, max_images=4) == [big]
    assert claim(queue, T0 + 2, max_images=4) == [small]


def test_batch_window(queue: JobQueue) -> None:
    first = add(queue, T0)
    early = queue.claim_batch("w1", 4, LEASE, window_seconds=0.5, now=T0 + 0.1)
    assert early.jobs == []
    assert early.retry_after == pytest.approx(0.4)
    second = add(queue, T0 + 0.2)
    assert claim(queue, T0 + 0.6, window=0.5) == [first, second]
    empty = queue.claim_batch("w1", 4, LEASE, window_seconds=0.5, now=T0 + 0.7)
    assert empty.jobs == [] and empty.retry_after is None


def test_full_batch_does_not_wait_for_window(queue: JobQueue) -> None:
    a = add(queue, T0, images=2)
    b = add(queue, T0, images=2)
    assert claim(queue, T0 + 0.01, window=5.0) == [a, b]


def test_claim_sets_lease_attempts_and_started_at(queue: JobQueue) -> None:
    job_id = add(queue)
    (job,) = queue.claim_batch("w1", 4, LEASE, now=T0 + 1).jobs
    assert job.status == JobStatus.running and job.attempts == 1
    assert job.lease_owner == "w1" and job.lease_expires_at == T0 + 1 + LEASE
    assert job.started_at == T0 + 1
    assert fetch(queue, job_id) == job


# --- model affinity ---

HELD = frozenset({"held"})


def test_affinity_prefers_a_held_model_within_the_same_priority(queue: JobQueue) -> None:
    other = add(queue, T0, model="other")
    held = add(queue, T0 + 1, model="held")
    held_too = add(queue, T0 + 2, model="held")
    assert claim(queue, T0 + 3, prefer=HELD) == [held, held_too]
    assert claim(queue, T0 + 3, prefer=HELD) == [other]  # nothing held waits: the oldest


def test_affinity_without_preference_is_fifo(queue: JobQueue) -> None:
    other = add(queue, T0, model="other")
    held = add(queue, T0 + 1, model="held")
    assert claim(queue, T0 + 2) == [other]
    assert claim(queue, T0 + 2, prefer=frozenset({"third"})) == [held]


def test_affinity_never_takes_a_lower_priority(queue: JobQueue) -> None:
    high = add(queue, T0 + 1, Priority.high, model="other")
    add(queue, T0, Priority.normal, model="held")
    assert claim(queue, T0 + 2, prefer=HELD) == [high]


def test_affinity_ends_when_the_oldest_job_waited_too_long(queue: JobQueue) -> None:
    other = add(queue, T0, model="other")
    held = add(queue, T0 + 1, model="held")
    assert claim(queue, T0 + 10, prefer=HELD, max_wait=9.5) == [other]
    assert claim(queue, T0 + 10, prefer=HELD, max_wait=9.5) == [held]


def test_passed_over_jobs_keep_lower_priorities_out_of_the_batch(queue: JobQueue) -> None:
    other = add(queue, T0, Priority.normal, model="other")
    held = add(queue, T0 + 1, Priority.normal, model="held")
    add(queue, T0 + 2, Priority.low, model="held")  # same batch key as ``held``
    assert claim(queue, T0 + 3, prefer=HELD) == [held]
    assert claim(queue, T0 + 3) == [other]


def test_affinity_head_takes_same_priority_companions_of_its_model(queue: JobQueue) -> None:
    held_a = add(queue, T0, Priority.high, model="held")
    other_b = add(queue, T0 + 1, Priority.high, model="other", key="B")
    held_b = add(queue, T0 + 2, Priority.high, model="held", key="B")
    other_b2 = add(queue, T0 + 3, Priority.high, model="other", key="B")
    held_b2 = add(queue, T0 + 4, Priority.high, model="held", key="B", images=2)
    assert claim(queue, T0 + 5, prefer=HELD) == [held_a]  # the oldest is held's
    assert claim(queue, T0 + 5, prefer=HELD) == [held_b, held_b2]
    assert claim(queue, T0 + 5, prefer=HELD) == [other_b, other_b2]


# --- leases, retries, dead letters ---


def test_reclaim_every_lease_requeues_running_jobs_available_now(queue: JobQueue) -> None:
    job_id = add(queue, max_attempts=3)
    assert claim(queue, T0, worker="w1") == [job_id]
    assert queue.reclaim_expired(now=T0 + 1, every_lease=True) == [job_id]
    assert fetch(queue, job_id).status == JobStatus.queued
    assert claim(queue, T0 + 1, worker="w2") == [job_id]  # claimable at once


def test_lease_expiry_reclaims_and_counts_attempts(queue: JobQueue) -> None:
    job_id = add(queue, max_attempts=3)
    assert claim(queue, T0, worker="w1") == [job_id]
    assert queue.reclaim_expired(now=T0 + LEASE - 1) == []
    assert queue.reclaim_expired(now=T0 + LEASE + 1) == [job_id]
    job = fetch(queue, job_id)
    assert job.status == JobStatus.queued and job.lease_owner is None and job.attempts == 1
    (again,) = queue.claim_batch("w2", 4, LEASE, now=T0 + 40).jobs
    assert again.attempts == 2 and again.started_at == T0  # first start kept


def test_claim_reclaims_expired_leases_first(queue: JobQueue) -> None:
    job_id = add(queue)
    claim(queue, T0, worker="w1")
    assert claim(queue, T0 + LEASE + 1, worker="w2") == [job_id]
    assert queue.complete(job_id, "w1", result(), now=T0 + 32) is False
    assert queue.complete(job_id, "w2", result(), now=T0 + 33) is True


def test_max_attempts_dead_letters_and_requeue(queue: JobQueue) -> None:
    job_id = add(queue, max_attempts=2)
    t = T0
    for _ in range(2):
        assert claim(queue, t) == [job_id]
        t += LEASE + 1
        queue.reclaim_expired(now=t)
    job = fetch(queue, job_id)
    assert job.status == JobStatus.failed and job.dead_lettered and job.attempts == 2
    assert job.error is not None and job.error.type == "lease_expired"
    assert job.lease_owner is None and job.finished_at == t
    dead = queue.dead_letters()
    assert [d.id for d in dead] == [job_id] and dead[0].error == job.error
    assert queue.stats(now=t).dead_letters == 1
    requeued = queue.requeue_dead_letter(job_id)
    assert requeued.status == JobStatus.queued and requeued.attempts == 0
    assert not requeued.dead_lettered and queue.dead_letters() == []
    assert claim(queue, t + 1) == [job_id]


def test_heartbeat_extends_only_held_leases(queue: JobQueue) -> None:
    mine = add(queue)
    other = add(queue, key="B")
    claim(queue, T0, worker="w1")
    claim(queue, T0, worker="w2")
    held = queue.heartbeat("w1", [mine, other, "job_missing"], LEASE, now=T0 + 20)
    assert held == {mine}
    assert fetch(queue, mine).lease_expires_at == T0 + 20 + LEASE
    assert queue.reclaim_expired(now=T0 + LEASE + 1) == [other]
    assert fetch(queue, mine).status == JobStatus.running


def test_stale_worker_cannot_complete_or_fail(queue: JobQueue) -> None:
    job_id = add(queue)
    claim(queue, T0, worker="w1")
    queue.reclaim_expired(now=T0 + LEASE + 1)
    claim(queue, T0 + LEASE + 2, worker="w2")
    before = fetch(queue, job_id)
    assert queue.complete(job_id, "w1", result(), now=T0 + 40) is False
    assert queue.fail(job_id, "w1", ERR, retryable=False, now=T0 + 40) is None
    assert queue.mark_canceled(job_id, "w1", now=T0 + 40) is False
    queue.update_progress(job_id, "w1", 5, 20)
    assert fetch(queue, job_id) == before


def test_complete_and_progress(queue: JobQueue) -> None:
    job_id = add(queue)
    claim(queue, T0)
    queue.update_progress(job_id, "w1", 7, 20)
    job = fetch(queue, job_id)
    assert (job.progress_step, job.progress_total) == (7, 20)
    assert queue.complete(job_id, "w1", result(), now=T0 + 5)
    done = fetch(queue, job_id)
    assert done.status == JobStatus.succeeded and done.result == result()
    assert done.finished_at == T0 + 5 and done.lease_owner is None
    assert done.lease_expires_at is None
    assert queue.complete(job_id, "w1", result(), now=T0 + 6) is False


def test_fail_retryable_requeues_with_delay(queue: JobQueue) -> None:
    first = add(queue, max_attempts=3)
    later = add(queue, T0 + 1)
    claim(queue, T0 + 2, max_images=1)
    job = queue.fail(first, "w1", ERR, retryable=True, retry_delay=10.0, now=T0 + 3)
    assert job is not None and job.status == JobStatus.queued and job.error == ERR
    assert claim(queue, T0 + 4, max_images=1) == [later]
    assert claim(queue, T0 + 12, max_images=1) == []
    assert claim(queue, T0 + 13, max_images=1) == [first]


def test_retried_job_keeps_its_place(queue: JobQueue) -> None:
    first = add(queue)
    second = add(queue, T0 + 1)
    claim(queue, T0 + 2, max_images=1)
    queue.fail(first, "w1", ERR, retryable=True, now=T0 + 3)
    assert queue.queue_position(first) == 0 and queue.queue_position(second) == 1
    assert claim(queue, T0 + 4, max_images=1) == [first]


def test_fail_retryable_out_of_attempts_dead_letters(queue: JobQueue) -> None:
    job_id = add(queue, max_attempts=1)
    claim(queue, T0)
    job = queue.fail(job_id, "w1", ERR, retryable=True, now=T0 + 1)
    assert job is not None and job.status == JobStatus.failed and job.dead_lettered
    assert [d.id for d in queue.dead_letters()] == [job_id]


def test_purging_a_dead_letter_keeps_the_failed_job(queue: JobQueue) -> None:
    job_id = add(queue, max_attempts=1)
    claim(queue, T0)
    queue.fail(job_id, "w1", ERR, retryable=True, now=T0 + 1)
    purged = queue.purge_dead_letter(job_id)
    assert purged.status == JobStatus.failed and not purged.dead_lettered
    assert purged.error == ERR and queue.dead_letters() == []
    assert queue.stats(now=T0 + 2).dead_letters == 0
    kept = fetch(queue, job_id)
    assert kept.status == JobStatus.failed and kept.error == ERR
    with pytest.raises(Conflict):
        queue.purge_dead_letter(job_id)  # no longer a dead letter
    with pytest.raises(NotFound):
        queue.purge_dead_letter("job_missing")


def test_fail_non_retryable_fails_without_dead_letter(queue: JobQueue) -> None:
    job_id = add(queue, max_attempts=3)
    claim(queue, T0)
    job = queue.fail(job_id, "w1", ERR, retryable=False, now=T0 + 1)
    assert job is not None and job.status == JobStatus.failed and not job.dead_lettered
    assert job.error == ERR and job.finished_at == T0 + 1 and job.lease_owner is None
    assert queue.dead_letters() == []


def test_release_keeps_place_and_refunds_attempt(queue: JobQueue) -> None:
    first = add(queue)
    second = add(queue, T0 + 1)
    assert claim(queue, T0 + 2, max_images=1) == [first]
    queue.release([first], "w1")
    job = fetch(queue, first)
    assert job.status == JobStatus.queued and job.attempts == 0 and job.lease_owner is None
    assert queue.queue_position(first) == 0 and queue.queue_position(second) == 1
    claim(queue, T0 + 3, max_images=1)
    queue.release([first], "w1", refund_attempt=False)
    assert fetch(queue, first).attempts == 1
    queue.release([second], "w1")  # not held: ignored
    assert fetch(queue, second).status == JobStatus.queued


# --- cancel ---


def test_cancel_queued_running_terminal_unknown(queue: JobQueue) -> None:
    running = add(queue)
    queued = add(queue, key="B")
    claim(queue, T0, max_images=1)
    canceled = queue.cancel(queued, now=T0 + 1)
    assert canceled.status == JobStatus.canceled and canceled.finished_at == T0 + 1
    asked = queue.cancel(running, now=T0 + 2)
    assert asked.status == JobStatus.running and asked.cancel_requested
    assert queue.cancel_requested([running, queued]) == {running}
    assert queue.mark_canceled(running, "w1", now=T0 + 3)
    done = fetch(queue, running)
    assert done.status == JobStatus.canceled and done.lease_owner is None
    assert queue.cancel(running, now=T0 + 4) == done  # terminal: unchanged
    with pytest.raises(NotFound):
        queue.cancel("job_missing")


# --- reads ---


def test_queue_position_counts_priority(queue: JobQueue) -> None:
    n1 = add(queue, T0, Priority.normal)
    low = add(queue, T0 + 1, Priority.low)
    high = add(queue, T0 + 2, Priority.high)
    n2 = add(queue, T0 + 3, Priority.normal)
    assert [queue.queue_position(j) for j in (high, n1, n2, low)] == [0, 1, 2, 3]
    claim(queue, T0 + 4, max_images=1)
    assert queue.queue_position(high) is None
    assert queue.queue_position("job_missing") is None


def test_list_jobs_filters_and_pagination(queue: JobQueue) -> None:
    ids = [
        add(
            queue,
            T0 + i,
            Priority.high if i % 2 else Priority.normal,
            owner="alice" if i < 4 else "bob",
        )
        for i in range(6)
    ]
    claim(queue, T0 + 10, max_images=1)  # ids[1]: the oldest high
    page = queue.list_jobs(ListFilter(limit=4))
    assert [j.id for j in page.jobs] == ids[::-1][:4] and page.next_cursor
    rest = queue.list_jobs(ListFilter(limit=4, cursor=page.next_cursor))
    assert [j.id for j in rest.jobs] == ids[1::-1] and rest.next_cursor is None
    by_owner = queue.list_jobs(ListFilter(owner="bob"))
    assert [j.id for j in by_owner.jobs] == [ids[5], ids[4]]
    high = queue.list_jobs(ListFilter(priority=Priority.high))
    assert [j.id for j in high.jobs] == [ids[5], ids[3], ids[1]]
    running = queue.list_jobs(ListFilter(status=JobStatus.running))
    assert [j.id for j in running.jobs] == [ids[1]]
    both = queue.list_jobs(ListFilter(owner="alice", status=JobStatus.queued, limit=1))
    assert [j.id for j in both.jobs] == [ids[3]]
    assert [
        j.id
        for j in queue.list_jobs(
            ListFilter(owner="alice", status=JobStatus.queued, cursor=both.next_cursor)
        ).jobs
    ] == [ids[2], ids[0]]


@pytest.mark.parametrize(
    "raw", [b"s:99999999999999999999999", b"s:-1", b"s: 5", b"x:5", b"s:", "s:\u0663".encode()]
)
def test_a_cursor_the_queue_did_not_write_is_invalid(queue: JobQueue, raw: bytes) -> None:
    add(queue)
    cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    for bad in (cursor, "%%%", "not-base64!", "\u00e9t\u00e9"):
        with pytest.raises(InvalidRequest):
            queue.list_jobs(ListFilter(cursor=bad))


def test_stats(queue: JobQueue) -> None:
    empty = queue.stats(now=T0)
    assert empty.queued == {"high": 0, "normal": 0, "low": 0}
    assert empty.running == 0 and empty.oldest_queued_age is None
    add(queue, T0, Priority.high)
    add(queue, T0 + 1, Priority.normal, key="B")
    add(queue, T0 + 2, Priority.normal, key="C")
    claim(queue, T0 + 3, max_images=1)
    s = queue.stats(now=T0 + 10)
    assert s.queued == {"high": 0, "normal": 2, "low": 0}
    assert s.running == 1 and s.dead_letters == 0
    assert s.oldest_queued_age == pytest.approx(9.0)


# --- webhook outbox ---


def test_terminal_transition_writes_one_outbox_entry(queue: JobQueue) -> None:
    hooked = add(queue, callback_url="https://example.com/hook")
    add(queue, T0 + 1)  # no callback: no entry
    claim(queue, T0 + 2)
    queue.update_progress(hooked, "w1", 3, 20)  # not terminal: no entry
    assert queue.outbox_due(now=T0 + 3) == []
    queue.complete(hooked, "w1", result(), now=T0 + 5)
    (entry,) = queue.outbox_due(now=T0 + 5)
    assert entry.job_id == hooked and entry.url == "https://example.com/hook"
    assert entry.status == "pending" and entry.attempts == 0
    payload = dict(entry.payload)
    assert payload.pop("event") == "job.succeeded"
    assert payload == fetch(queue, hooked).public()
    assert outbox(queue, entry.id) == entry


def test_cancel_and_dead_letter_events(queue: JobQueue) -> None:
    failed = add(queue, max_attempts=1, callback_url="https://example.com/f")
    canceled = add(queue, key="B", callback_url="https://example.com/c")
    claim(queue, T0, max_images=1)
    queue.cancel(canceled, now=T0 + 1)
    queue.reclaim_expired(now=T0 + LEASE + 1)
    events = {e.job_id: e.payload["event"] for e in queue.outbox_due(now=T0 + 100)}
    assert events == {canceled: "job.canceled", failed: "job.failed"}


def test_outbox_delivery_lifecycle(queue: JobQueue) -> None:
    ids = [add(queue, T0 + i, callback_url=f"https://example.com/{i}") for i in range(3)]
    claim(queue, T0 + 5)
    for job_id in ids:
        queue.complete(job_id, "w1", result(), now=T0 + 6)
    e1, e2, e3 = queue.outbox_due(now=T0 + 6)
    queue.outbox_delivered(e1.id, now=T0 + 7)
    queue.outbox_retry(e2.id, next_attempt_at=T0 + 60, error="HTTP 500")
    queue.outbox_give_up(e3.id, error="address not allowed")
    assert queue.outbox_due(now=T0 + 59) == []
    (due,) = queue.outbox_due(now=T0 + 60)
    assert due.id == e2.id and due.attempts == 1 and due.last_error == "HTTP 500"
    assert outbox(queue, e1.id).status == "delivered"
    gave_up = outbox(queue, e3.id)
    assert gave_up.status == "failed" and gave_up.last_error == "address not allowed"
    assert queue.outbox_get("obx_missing") is None


# --- concurrency ---


def test_concurrent_claims_never_share_a_job(queue: JobQueue) -> None:
    ids = {add(queue, T0 + i, key="ABC"[i % 3]) for i in range(60)}
    claimed: list[str] = []
    lock = threading.Lock()

    def drain(worker: str) -> None:
        while True:
            jobs = queue.claim_batch(worker, 2, LEASE, now=T0 + 100).jobs
            if not jobs:
                return
            for job in jobs:
                assert queue.complete(job.id, worker, result(), now=T0 + 101)
            with lock:
                claimed.extend(j.id for j in jobs)

    threads = [threading.Thread(target=drain, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(claimed) == sorted(ids)
    assert queue.stats(now=T0 + 102).queued == {"high": 0, "normal": 0, "low": 0}


def test_outbox_claim_hides_entries_from_other_dispatchers(queue: JobQueue) -> None:
    job_id = add(queue, T0, callback_url="https://example.com/hook")
    claim(queue, T0 + 1)
    queue.complete(job_id, "w1", result(), now=T0 + 2)
    (entry,) = queue.outbox_claim(now=T0 + 3, lease_seconds=60)
    assert entry.job_id == job_id
    assert queue.outbox_claim(now=T0 + 4, lease_seconds=60) == []  # a second dispatcher
    (again,) = queue.outbox_claim(now=T0 + 64, lease_seconds=60)  # the first one died
    assert again.id == entry.id
    queue.outbox_delivered(again.id, now=T0 + 65)
    assert queue.outbox_claim(now=T0 + 1000) == []


# --- a batch that died: only a job's own crashes count ---


def test_jobs_of_a_dead_batch_are_refunded_and_retried_alone(queue: JobQueue) -> None:
    a, b, c = (add(queue, T0 + i, max_attempts=2) for i in range(3))
    assert claim(queue, T0 + 5) == [a, b, c]
    assert sorted(queue.reclaim_expired(now=T0 + 5 + LEASE + 1)) == sorted([a, b, c])
    for job_id in (a, b, c):
        job = fetch(queue, job_id)
        assert job.status == JobStatus.queued and job.attempts == 0 and job.solo
    t = T0 + 100
    assert claim(queue, t) == [a]  # alone, though b and c are compatible
    assert claim(queue, t) == [b]
    assert queue.complete(b, "w1", result(), now=t)
    # a and c die again, now alone: these crashes are theirs and count.
    queue.reclaim_expired(now=t + LEASE + 1)
    assert fetch(queue, a).attempts == 1 and fetch(queue, a).status == JobStatus.queued
    assert claim(queue, t + 50) == [a]
    queue.reclaim_expired(now=t + 50 + LEASE + 1)
    dead = fetch(queue, a)
    assert dead.status == JobStatus.failed and dead.dead_lettered and dead.attempts == 2
    assert fetch(queue, b).status == JobStatus.succeeded


def test_a_solo_job_does_not_join_a_batch(queue: JobQueue) -> None:
    first, second = add(queue, T0), add(queue, T0 + 1)
    assert claim(queue, T0 + 2) == [first, second]
    queue.reclaim_expired(now=T0 + 2 + LEASE + 1)
    fresh = add(queue, T0 + 50)
    assert claim(queue, T0 + 60) == [first]
    assert claim(queue, T0 + 60) == [second]
    assert claim(queue, T0 + 60) == [fresh]


# --- workflows ---


def _steps(images_last: int = 1) -> list[WorkflowStep]:
    base = spec()
    edit = base.model_copy(update={"task": Task.img2img, "strength": 0.5})
    up = base.model_copy(update={"task": Task.upscale, "num_images": images_last})
    return [
        WorkflowStep(spec=base, input=StepInput.none),
        WorkflowStep(spec=edit, input=StepInput.previous),
        WorkflowStep(spec=up, input=StepInput.previous),
    ]


def _image_result(tag: str) -> JobResult:
    return JobResult(images=[ImageRef(id=f"{tag}.png", seed=1)], generation_time=1.0, seed_used=1)


def _run_step(q: JobQueue, at: float, tag: str) -> Job:
    (job,) = q.claim_batch("w1", 4, LEASE, now=at).jobs
    assert q.complete(job.id, "w1", _image_result(tag), now=at + 1)
    return job


def test_workflow_runs_its_steps_in_order_feeding_outputs(queue: JobQueue) -> None:
    wf, created = queue.enqueue_workflow(
        NewWorkflow(steps=_steps(), callback_url="https://example.com/wf"), now=T0
    )
    assert created and wf.status == WorkflowStatus.running and wf.current == 0
    first = _run_step(queue, T0 + 1, "one")
    assert first.workflow_id == wf.id and first.workflow_step == 0
    assert queue.outbox_due(now=T0 + 2) == []  # steps report through their workflow
    second = _run_step(queue, T0 + 3, "two")
    assert second.spec.task == Task.img2img and second.spec.image == "one.png"
    mid = queue.get_workflow(wf.id)
    assert mid is not None and mid.current == 2 and mid.status == WorkflowStatus.running
    third = _run_step(queue, T0 + 5, "three")
    assert third.spec.image == "two.png" and third.workflow_step == 2
    done = queue.get_workflow(wf.id)
    assert done is not None and done.status == WorkflowStatus.succeeded
    assert done.job_ids == [first.id, second.id, third.id] and done.finished_at == T0 + 6
    (entry,) = queue.outbox_due(now=T0 + 10)
    assert entry.job_id == wf.id and entry.payload["event"] == "workflow.succeeded"
    assert entry.payload["result"]["images"][0]["id"] == "three.png"


def test_workflow_step_failure_fails_the_workflow_naming_the_step(queue: JobQueue) -> None:
    wf, _ = queue.enqueue_workflow(NewWorkflow(steps=_steps()), now=T0)
    _run_step(queue, T0 + 1, "one")
    (job,) = queue.claim_batch("w1", 4, LEASE, now=T0 + 2).jobs
    queue.fail(job.id, "w1", ERR, retryable=False, now=T0 + 3)
    failed = queue.get_workflow(wf.id)
    assert failed is not None and failed.status == WorkflowStatus.failed
    assert failed.error is not None and failed.error.step == 1
    assert failed.error.type == ERR.type and "step 1 (img2img)" in failed.error.message
    assert claim(queue, T0 + 10) == []  # no third step


def test_workflow_retryable_step_failure_retries_the_step(queue: JobQueue) -> None:
    wf, _ = queue.enqueue_workflow(NewWorkflow(steps=_steps(), max_attempts=3), now=T0)
    (job,) = queue.claim_batch("w1", 4, LEASE, now=T0 + 1).jobs
    queue.fail(job.id, "w1", ERR, retryable=True, now=T0 + 2)
    running = queue.get_workflow(wf.id)
    assert running is not None and running.status == WorkflowStatus.running
    assert claim(queue, T0 + 3) == [job.id]


def test_workflow_resumes_at_its_step_after_a_lost_lease(queue: JobQueue) -> None:
    wf, _ = queue.enqueue_workflow(NewWorkflow(steps=_steps()), now=T0)
    first = _run_step(queue, T0 + 1, "one")
    (second,) = queue.claim_batch("w1", 4, LEASE, now=T0 + 3).jobs
    queue.reclaim_expired(now=T0 + 3 + LEASE + 1)  # the worker died mid-step
    (again,) = queue.claim_batch("w2", 4, LEASE, now=T0 + 40).jobs
    assert again.id == second.id and again.workflow_step == 1
    assert fetch(queue, first.id).status == JobStatus.succeeded  # not redone
    assert queue.complete(again.id, "w2", _image_result("two"), now=T0 + 41)
    mid = queue.get_workflow(wf.id)
    assert mid is not None and mid.current == 2


def test_cancel_workflow_stops_the_step_and_skips_the_rest(queue: JobQueue) -> None:
    wf, _ = queue.enqueue_workflow(NewWorkflow(steps=_steps()), now=T0)
    _run_step(queue, T0 + 1, "one")
    (running,) = queue.claim_batch("w1", 4, LEASE, now=T0 + 2).jobs
    canceled = queue.cancel_workflow(wf.id, now=T0 + 3)
    assert canceled.status == WorkflowStatus.canceled
    assert fetch(queue, running.id).cancel_requested
    assert queue.mark_canceled(running.id, "w1", now=T0 + 4)
    assert claim(queue, T0 + 5) == []
    assert queue.cancel_workflow(wf.id, now=T0 + 6) == queue.get_workflow(wf.id)
    with pytest.raises(NotFound):
        queue.cancel_workflow("wf_missing")


def test_cancel_workflow_with_a_queued_step(queue: JobQueue) -> None:
    wf, _ = queue.enqueue_workflow(NewWorkflow(steps=_steps()), now=T0)
    queue.cancel_workflow(wf.id, now=T0 + 1)
    assert claim(queue, T0 + 2) == []
    (step_job,) = queue.get_workflow(wf.id).job_ids  # type: ignore[union-attr]
    assert fetch(queue, step_job).status == JobStatus.canceled


def test_workflow_idempotency(queue: JobQueue) -> None:
    new = NewWorkflow(steps=_steps(), idempotency_key="k", request_hash="h", owner="o")
    wf, created = queue.enqueue_workflow(new, now=T0)
    again, created_again = queue.enqueue_workflow(
        NewWorkflow(steps=_steps(), idempotency_key="k", request_hash="h", owner="o"), now=T0 + 1
    )
    assert created and not created_again and again.id == wf.id
    with pytest.raises(IdempotencyConflict):
        queue.enqueue_workflow(
            NewWorkflow(steps=_steps(), idempotency_key="k", request_hash="x", owner="o")
        )
    assert len(queue.list_jobs(ListFilter()).jobs) == 1


# --- retention: purge ---


def _finished(q: JobQueue, at: float, owner: str | None, **kw: Any) -> str:
    job_id = add(q, at=at, owner=owner, **kw)
    (claimed,) = q.claim_batch("w1", 4, LEASE, now=at).jobs
    assert claimed.id == job_id and q.complete(job_id, "w1", result(), now=at + 1)
    return job_id


def test_purge_removes_only_finished_selected_jobs_with_their_traces(queue: JobQueue) -> None:
    old = _finished(queue, T0, "acme", callback_url="https://example.com/h", idempotency_key="k")
    other = _finished(queue, T0 + 2, "beta")
    late = add(queue, at=T0 + 3, owner="acme")
    queue.cancel(late, now=T0 + 20)
    waiting = add(queue, at=T0 + 4, owner="acme")
    running = add(queue, at=T0 + 5, owner="acme", priority=Priority.high)
    assert claim(queue, T0 + 6, max_images=1) == [running]
    (entry,) = queue.outbox_due(now=T0 + 10)
    assert entry.job_id == old

    from sdserve.queue.purge import PurgeFilter

    gone = queue.purge(PurgeFilter(owners=("acme",), finished_before=T0 + 15))
    assert [j.id for j in gone.jobs] == [old] and not gone.more
    assert gone.jobs[0].result is not None  # as it was: the caller deletes its images
    assert queue.get(old) is None and queue.outbox_get(entry.id) is None
    assert queue.outbox_due(now=T0 + 10) == []
    # Its idempotency key is free again (the job it named is gone).
    again, created = queue.enqueue(
        NewJob(spec=spec(), owner="acme", idempotency_key="k"), now=T0 + 30
    )
    assert created and again.id != old
    assert {j.id for j in queue.list_jobs(ListFilter(owner="acme", limit=50)).jobs} == {
        late,
        waiting,
        running,
        again.id,
    }
    # No cutoff: every finished acme job, never a queued or running one.
    assert [j.id for j in queue.purge(PurgeFilter(owners=("acme",))).jobs] == [late]
    assert fetch(queue, waiting).status is JobStatus.queued
    assert fetch(queue, running).status is JobStatus.running
    assert fetch(queue, other).status is JobStatus.succeeded
    assert queue.purge(PurgeFilter(owners=("acme",))).jobs == []


def test_purge_redacts_prompts_and_pages_with_a_limit(queue: JobQueue) -> None:
    from sdserve.queue.purge import REDACTED, PurgeFilter

    ids = [_finished(queue, T0 + i * 10, None) for i in range(3)]
    first = queue.purge(PurgeFilter(redact_prompts=True, limit=2))
    assert [j.id for j in first.jobs] == ids[:2] and first.more
    assert first.jobs[0].spec.prompt == "a cat"  # as it was
    assert fetch(queue, ids[0]).spec.prompt == REDACTED
    assert fetch(queue, ids[0]).result is not None  # the job and its result stay
    rest = queue.purge(PurgeFilter(redact_prompts=True, limit=2))
    assert [j.id for j in rest.jobs] == ids[2:] and not rest.more
    assert queue.purge(PurgeFilter(redact_prompts=True)).jobs == []
    assert [j.id for j in queue.purge(PurgeFilter(owners=(None,))).jobs] == ids


def test_purge_expires_images_but_keeps_the_jobs(queue: JobQueue) -> None:
    from sdserve.domain.requests import Task
    from sdserve.queue.purge import PurgeFilter

    old = _finished(queue, T0, "acme")
    edit_spec = spec().model_copy(update={"task": Task.inpaint, "image": "in.png", "mask": "m.png"})
    edit, _ = queue.enqueue(NewJob(spec=edit_spec, owner="acme"), now=T0 + 1)
    queue.cancel(edit.id, now=T0 + 2)  # ended without a result: only its inputs to delete
    young = _finished(queue, T0 + 50, "acme")
    out = queue.purge(PurgeFilter(finished_before=T0 + 20, expire_images=True, limit=1))
    assert [j.id for j in out.jobs] == [old] and out.more
    assert out.jobs[0].result is not None and not out.jobs[0].result.images[0].expired  # as it was
    kept = fetch(queue, old)
    assert kept.status is JobStatus.succeeded and kept.result is not None
    assert [im.expired for im in kept.result.images] == [True]
    assert kept.public()["result"]["images"][0]["url"] is None
    rest = queue.purge(PurgeFilter(finished_before=T0 + 20, expire_images=True))
    assert [j.id for j in rest.jobs] == [edit.id] and not rest.more
    assert rest.jobs[0].spec.image == "in.png"  # as it was: the caller deletes the inputs
    inputs = fetch(queue, edit.id).spec
    assert (inputs.image, inputs.mask, inputs.prompt) == (None, None, "a cat")
    # Done once: nothing left to expire; the young job keeps its image.
    assert queue.purge(PurgeFilter(finished_before=T0 + 20, expire_images=True)).jobs == []
    assert not fetch(queue, young).result.images[0].expired  # type: ignore[union-attr]
    # The records are still purged by the jobs TTL later.
    assert {j.id for j in queue.purge(PurgeFilter(finished_before=T0 + 20)).jobs} == {
        old,
        edit.id,
    }


def test_purge_removes_finished_workflows_and_their_steps(queue: JobQueue) -> None:
    from sdserve.queue.purge import PurgeFilter

    wf, _ = queue.enqueue_workflow(
        NewWorkflow(steps=_steps(), owner="acme", idempotency_key="w"), now=T0
    )
    live, _ = queue.enqueue_workflow(NewWorkflow(steps=_steps(), owner="acme"), now=T0)
    (step,) = queue.claim_batch("w1", 1, LEASE, now=T0 + 1).jobs  # the first workflow's
    assert step.workflow_id == wf.id
    assert queue.complete(step.id, "w1", _image_result("one"), now=T0 + 2)
    queue.cancel_workflow(wf.id, now=T0 + 3)
    out = queue.purge(PurgeFilter(owners=("acme",)))
    assert out.workflows == [wf.id]
    assert queue.get_workflow(wf.id) is None
    assert queue.get_workflow(live.id) is not None  # still running: kept
    assert step.id in {j.id for j in out.jobs}
    again, created = queue.enqueue_workflow(
        NewWorkflow(steps=_steps(), owner="acme", idempotency_key="w"), now=T0 + 9
    )
    assert created and again.id != wf.id


HELD_ERR = JobError(type="held_for_review", message="an image was flagged: held for review")


def test_held_for_review_then_approved_or_rejected(queue: JobQueue) -> None:
    """running -> held (not terminal, no lease, one job.held event) -> a reviewer's
    decision ends it: approved succeeded with the result, rejected failed."""
    ok = add(queue, callback_url="https://example.com/ok")
    bad = add(queue, T0 + 1, callback_url="https://example.com/bad")
    claim(queue, T0 + 2)
    withheld = JobResult(
        images=[ImageRef(id="img.png", seed=42, withheld=True, safety="flagged")],
        generation_time=1.0,
        seed_used=42,
    )
    assert queue.hold(ok, "w2", withheld, HELD_ERR, now=T0 + 3) is False  # not its lease
    for job_id in (ok, bad):
        assert queue.hold(job_id, "w1", withheld, HELD_ERR, now=T0 + 3)
        held = fetch(queue, job_id)
        assert held.status is JobStatus.held and not held.status.terminal
        assert held.lease_owner is None and held.result == withheld and held.error == HELD_ERR
    assert queue.complete(ok, "w1", result(), now=T0 + 4) is False  # the lease is gone
    assert queue.reclaim_expired(now=T0 + LEASE + 10) == []  # held never expires
    page = queue.list_jobs(ListFilter(status=JobStatus.held))
    assert {j.id for j in page.jobs} == {ok, bad}
    events = {e.job_id: e.payload["event"] for e in queue.outbox_due(now=T0 + 5)}
    assert events == {ok: "job.held", bad: "job.held"}
    approved = queue.review(ok, True, result(), now=T0 + 6)
    assert approved.status is JobStatus.succeeded and approved.result == result()
    assert approved.error is None and approved.finished_at == T0 + 6
    rejected_error = JobError(type="content_policy_violation", message="rejected on review")
    rejected = queue.review(bad, False, withheld, rejected_error, now=T0 + 7)
    assert rejected.status is JobStatus.failed and rejected.error == rejected_error
    assert not rejected.dead_lettered
    with pytest.raises(Conflict):
        queue.review(ok, False, result(), rejected_error)
    with pytest.raises(NotFound):
        queue.review("job_missing", True, result())
    events = [e.payload["event"] for e in queue.outbox_due(now=T0 + 100)]
    assert sorted(events) == ["job.failed", "job.held", "job.held", "job.succeeded"]
    assert queue.list_jobs(ListFilter(status=JobStatus.held)).jobs == []
