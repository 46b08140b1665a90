"""The Redis backend beyond the queue contract: the worker registry, what Redis's
persistence settings keep through a crash (docs/redis.md), a Redis outage as a 503,
and the factories. Real redis-server processes; no timing assertions."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sdserve.config import Settings
from sdserve.domain.jobs import JobStatus, NewJob
from sdserve.queue.factory import (
    BackendUnavailable,
    build_queue,
    build_wakeups,
    require_shared_backend,
)
from sdserve.queue.redis import RedisQueue
from sdserve.queue.redis_keys import connect
from sdserve.queue.redis_wakeups import RedisWakeupBus
from sdserve.testing import job_spec
from sdserve.worker.redis_registry import RedisRegistry
from sdserve.worker.registry import (
    READY_TTL_S,
    FileRegistry,
    WorkerState,
    build_registry,
    ready_workers,
)
from tests.redis_server import RedisServer

# --- worker registry ---


def test_registry_is_shared_by_every_node(redis_url: str, redis_prefix: str) -> None:
    worker_side = RedisRegistry(connect(redis_url), redis_prefix)
    api_side = RedisRegistry(connect(redis_url), redis_prefix)  # another machine
    worker_side.publish(
        WorkerState("gpu-1", 11, True, ["demo"], "cuda", host="node-a", models_memory={"demo": 7})
    )
    worker_side.publish(WorkerState("gpu-2", 12, False, device="cuda", host="node-b"))
    live = {s.id: s for s in api_side.live(READY_TTL_S)}
    assert set(live) == {"gpu-1", "gpu-2"}
    assert live["gpu-1"].models_loaded == ["demo"] and live["gpu-1"].host == "node-a"
    assert live["gpu-1"].models_memory == {"demo": 7}  # what /v1/models shows per model
    assert [s.id for s in ready_workers(api_side)] == ["gpu-1"]
    worker_side.remove("gpu-1")
    assert [s.id for s in api_side.live(READY_TTL_S)] == ["gpu-2"]


def test_a_worker_that_stops_publishing_drops_out(redis_url: str, redis_prefix: str) -> None:
    client = connect(redis_url)
    registry = RedisRegistry(client, redis_prefix, key_ttl=0.2)
    registry.publish(WorkerState("killed", 1, True))
    deadline = time.monotonic() + 30
    while registry.live(READY_TTL_S):  # its key expires by itself
        assert time.monotonic() < deadline, "the state never expired"
        time.sleep(0.05)
    assert not client.sismember(redis_prefix + "workers", "killed")  # the id set is swept


# --- what Redis persistence keeps through a crash ---


def _accept_one(url: str) -> str:
    queue = RedisQueue.from_url(url, "t:")
    job, _ = queue.enqueue(NewJob(spec=job_spec()))
    queue.close()
    return job.id


@pytest.mark.parametrize("fsync", ["always", "everysec"])
def test_with_aof_an_accepted_job_survives_redis_being_killed(
    private_redis: Callable[..., RedisServer], fsync: str
) -> None:
    server = private_redis(appendonly=True, appendfsync=fsync)
    job_id = _accept_one(server.url)
    server.kill()  # SIGKILL: no shutdown save; only the AOF is left
    server.start()
    queue = RedisQueue.from_url(server.url, "t:")
    try:
        got = queue.get(job_id)
        assert got is not None and got.status == JobStatus.queued
        assert [j.id for j in queue.claim_batch("w", 4, 30.0).jobs] == [job_id]
    finally:
        queue.close()


def test_without_persistence_a_redis_crash_loses_accepted_jobs(
    private_redis: Callable[..., RedisServer],
) -> None:
    server = private_redis(appendonly=False)
    job_id = _accept_one(server.url)
    server.kill()
    server.start()
    queue = RedisQueue.from_url(server.url, "t:")
    try:
        assert queue.get(job_id) is None  # why docs/redis.md asks for appendonly yes
    finally:
        queue.close()


# --- an outage ---


def test_an_unreachable_redis_is_a_503_and_the_queue_recovers(
    private_redis: Callable[..., RedisServer],
) -> None:
    server = private_redis()
    queue = RedisQueue.from_url(server.url, "t:")
    try:
        server.kill()
        with pytest.raises(BackendUnavailable) as info:
            queue.enqueue(NewJob(spec=job_spec()))
        assert info.value.status == 503 and "Redis" in info.value.message
        with pytest.raises(BackendUnavailable):
            queue.get("job_x")
        server.start()
        job, created = queue.enqueue(NewJob(spec=job_spec()))  # reconnects by itself
        assert created and queue.get(job.id) == job
    finally:
        queue.close()


# --- factories ---


def test_factories_build_the_redis_backend(
    make_settings: Callable[..., Settings], redis_url: str, redis_prefix: str
) -> None:
    settings = make_settings(queue_backend="redis", redis_url=redis_url, redis_prefix=redis_prefix)
    queue = build_queue(settings)
    wakeups = build_wakeups(settings, "worker")
    registry = build_registry(settings)
    try:
        assert isinstance(queue, RedisQueue) and queue.keys.prefix == redis_prefix
        assert isinstance(wakeups, RedisWakeupBus) and isinstance(registry, RedisRegistry)
        require_shared_backend(settings)  # fine for separate processes
    finally:
        queue.close()
        wakeups.close()
        registry.close()


def test_memory_backend_is_refused_for_separate_processes(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(queue_backend="memory")
    with pytest.raises(BackendUnavailable, match="separate processes"):
        require_shared_backend(settings)
    assert isinstance(build_registry(make_settings(queue_backend="sqlite")), FileRegistry)
    env = dict(os.environ, SDSERVE_QUEUE_BACKEND="memory", SDSERVE_DATA_DIR=str(tmp_path))
    for command in ("api", "worker", "serve"):
        run = subprocess.run(
            [sys.executable, "-m", "sdserve", command], env=env, capture_output=True, text=True
        )
        assert run.returncode == 1, (command, run.stderr)
        assert "use sqlite (one machine) or redis" in run.stderr
        assert "Traceback" not in run.stderr
