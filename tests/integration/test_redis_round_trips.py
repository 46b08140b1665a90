"""Round trips of the Redis backend's hot paths, counted at the client: an enqueue is
one command (its number in line is taken inside the commit), and a worker's
transitions of the jobs it claimed decide from the copy it last wrote
(queue/redis_known.KnownJobs), one command instead of a read and a write. A copy gone
stale (another process cancelled, reclaimed or re-claimed the job) never decides
anything: the version guard fails, the job is read again, and the outcome is the one a
fresh read gives."""

from __future__ import annotations

import time
from typing import Any

import redis

from sdserve.domain.jobs import JobResult, JobStatus, NewJob
from sdserve.queue import transitions as tr
from sdserve.queue.redis import RedisQueue
from sdserve.testing import job_spec

RESULT = JobResult(images=[], generation_time=0.0, seed_used=1)


class CountingRedis(redis.Redis):
    """Counts the commands (and pipelines) this client sends."""

    sent = 0

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.sent += 1
        return super().execute_command(*args, **options)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        self.sent += 1
        return super().pipeline(transaction, shard_hint)


def _queues(url: str, prefix: str) -> tuple[RedisQueue, CountingRedis, RedisQueue]:
    client = CountingRedis.from_url(url, decode_responses=True)
    worker = RedisQueue(client, prefix, owns_client=True)
    api = RedisQueue.from_url(url, prefix)  # another process: its own client and copies
    return worker, client, api


def _claimed(worker: RedisQueue, api: RedisQueue, n: int = 1, lease: float = 30.0) -> list[str]:
    ids = [api.enqueue(NewJob(spec=job_spec(seed=i)))[0].id for i in range(n)]
    claim = worker.claim_batch("w1", 8, lease)
    assert sorted(j.id for j in claim.jobs) == sorted(ids)
    return ids


def test_transitions_of_claimed_jobs_cost_one_command(redis_url: str, redis_prefix: str) -> None:
    worker, client, api = _queues(redis_url, redis_prefix)
    (job_id,) = _claimed(worker, api)
    ts = time.time()  # a caller's clock: keeps TIME out of the count
    for op in (
        lambda: worker.heartbeat("w1", [job_id], 30.0, now=ts),
        lambda: worker.complete(job_id, "w1", RESULT, now=ts + 1),
    ):
        before = client.sent
        assert op()
        assert client.sent - before == 1
    done = api.get(job_id)
    assert done is not None and done.status is JobStatus.succeeded
    assert done.lease_expires_at is None and done.result == RESULT


def test_a_cancel_from_elsewhere_is_seen_through_the_stale_copy(
    redis_url: str, redis_prefix: str
) -> None:
    worker, _, api = _queues(redis_url, redis_prefix)
    (job_id,) = _claimed(worker, api)
    api.cancel(job_id)  # the worker's copy still says "running, no cancel"
    assert worker.cancel_requested([job_id]) == {job_id}
    assert worker.mark_canceled(job_id, "w1")
    after = api.get(job_id)
    assert after is not None and after.status is JobStatus.canceled


def test_a_lease_taken_over_elsewhere_refuses_the_stale_worker(
    redis_url: str, redis_prefix: str
) -> None:
    worker, client, api = _queues(redis_url, redis_prefix)
    (job_id,) = _claimed(worker, api)
    late = 1e12  # the lease has long expired by then
    assert api.reclaim_expired(now=late) == [job_id]
    other = api.claim_batch("w2", 8, 30.0, now=late)
    assert [j.id for j in other.jobs] == [job_id]
    # The worker's copy says it holds the job; Redis says w2 does.
    assert worker.heartbeat("w1", [job_id], 30.0, now=late) == set()
    assert not worker.complete(job_id, "w1", RESULT, now=late)
    assert worker.fail(job_id, "w1", _error(), retryable=True, now=late) is None
    current = api.get(job_id)
    assert current is not None
    assert current.status is JobStatus.running and current.lease_owner == "w2"
    # w2's own completion still works; the first worker's stale copy is gone for good.
    assert api.complete(job_id, "w2", RESULT, now=late)
    before = client.sent
    assert not worker.complete(job_id, "w1", RESULT, now=late)
    assert client.sent - before == 1  # a read; a "no" from a fresh read writes nothing


def test_a_decision_not_to_write_is_checked_too(redis_url: str, redis_prefix: str) -> None:
    """The worker's copy says its long lease has not expired; in Redis the job was
    recovered and re-claimed by w2 with a short lease that has. Deciding "nothing to
    reclaim" from the copy would leave it running; the guard sends the worker back to
    Redis, which reclaims it."""
    worker, _, api = _queues(redis_url, redis_prefix)
    ids = _claimed(worker, api, n=2, lease=1000.0)
    assert sorted(api.reclaim_expired(every_lease=True)) == sorted(ids)  # a restart
    retaken = [j.id for _ in ids for j in api.claim_batch("w2", 8, 5.0).jobs]  # solo now
    assert sorted(retaken) == sorted(ids)
    expired = worker.reclaim_expired(now=time.time() + 10)
    assert sorted(expired) == sorted(ids)
    for job_id in ids:
        job = api.get(job_id)
        assert job is not None and job.status is JobStatus.queued and job.lease_owner is None


def _error() -> Any:
    from sdserve.domain.jobs import JobError

    return JobError(type="generation_failed", message="boom")


def test_a_job_from_a_clock_slightly_ahead_is_claimable_at_once(
    redis_url: str, redis_prefix: str
) -> None:
    """Two processes' estimates of Redis's clock differ by microseconds: a worker a
    little behind the API process must still see a just-accepted job (not sleep)."""
    worker, _, api = _queues(redis_url, redis_prefix)
    ahead = worker._clock.now() + 0.005
    job, _ = api.enqueue(NewJob(spec=job_spec(seed=1)), now=ahead)
    assert [j.id for j in worker.claim_batch("w1", 8, 30.0).jobs] == [job.id]
    later, _ = api.enqueue(NewJob(spec=job_spec(seed=2)), now=worker._clock.now() + 5)
    assert worker.claim_batch("w1", 8, 30.0).jobs == []  # a real delay still holds
    assert [j.id for j in worker.claim_batch("w1", 8, 30.0, now=later.available_at).jobs] == [
        later.id
    ]


def test_enqueue_is_one_command_and_numbers_jobs_in_line(redis_url: str, redis_prefix: str) -> None:
    api, client, _ = _queues(redis_url, redis_prefix)  # the counted queue, as an API node
    before = client.sent
    first, _ = api.enqueue(NewJob(spec=job_spec(seed=1)), now=time.time())
    assert client.sent - before == 1
    # Several inserts in one commit (as when steps of workflows advance together) each
    # get their own number, in order, in the record and in every index.
    uow = api._uow(time.time())
    pair = [tr.new_job(NewJob(spec=job_spec(seed=s)), uow.ts) for s in (2, 3)]
    for job in pair:
        uow.insert_job(job)
    assert uow.commit() == 0
    raw = redis.Redis.from_url(redis_url, decode_responses=True)
    seqs = [int(raw.hget(api.keys.job(j.id), "s") or 0) for j in (first, *pair)]
    assert seqs[1:] == [seqs[0] + 1, seqs[0] + 2]
    assert raw.zrange(api.keys.queued, 0, -1) == [first.id, pair[0].id, pair[1].id]
    assert [int(s) for _, s in raw.zrange(api.keys.index(), 0, -1, withscores=True)] == seqs
    assert [j.id for j in api.claim_batch("w", 1, 30.0).jobs] == [first.id]
