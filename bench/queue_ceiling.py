"""Queue ceiling: jobs/s through enqueue -> claim -> complete, no GPU.

Three figures per backend:
- enqueue: committed jobs/s from one producer;
- claim+complete: jobs/s a bare consumer drains (batches of 8, no engine, each job
  completed on its own as the worker does); with ``--consumers N`` also the rate N
  consumer processes drain together (the queue's ceiling across a fleet: on a shared
  store what limits it is the store, not one client);
- end to end: the real Worker with the torch-free FakeEngine (1 step, PNG encode,
  blob store) draining while a producer enqueues.
Plus CPU per job of this process and, for Redis, of redis-server (INFO cpu): on a
shared machine the wall-clock rates vary with the load, the CPU costs much less.
Usage: python bench/queue_ceiling.py [--jobs 2000] [--backends memory,sqlite,redis]
       [--redis-url redis://127.0.0.1:6379/0] [--consumers 3]
The redis run uses a fresh key prefix and deletes its keys afterwards.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import threading
import time
import uuid
from pathlib import Path

from sdserve.domain.jobs import JobResult, NewJob
from sdserve.domain.requests import JobSpec
from sdserve.engine.fake import FakeEngine
from sdserve.queue.base import JobQueue
from sdserve.queue.memory import MemoryQueue
from sdserve.queue.sqlite import SqliteQueue
from sdserve.queue.wakeups import LocalWakeupBus
from sdserve.storage.local import LocalBlobStore
from sdserve.testing import job_spec
from sdserve.worker.loop import Worker, WorkerConfig


def spec(i: int) -> JobSpec:
    return job_spec(prompt=f"p{i}", seed=i, num_inference_steps=1)


REDIS_URL = "redis://127.0.0.1:6379/0"
_prefixes: list[str] = []


def make(backend: str, root: Path) -> JobQueue:
    if backend == "memory":
        return MemoryQueue(max_depth=10**9)
    if backend == "redis":
        from sdserve.queue.redis import RedisQueue

        prefix = f"sdserve-bench:{uuid.uuid4().hex[:8]}:"
        _prefixes.append(prefix)
        return RedisQueue.from_url(REDIS_URL, prefix, max_depth=10**9)
    return SqliteQueue(root / f"bench-{time.time_ns()}.db", max_depth=10**9)


def _redis_up() -> bool:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def drop_redis_keys() -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    for prefix in _prefixes:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        for i in range(0, len(keys), 1000):
            client.unlink(*keys[i : i + 1000])
    client.close()


def _cpu() -> tuple[float, float]:
    """(this process's CPU seconds, redis-server's CPU seconds or 0)."""
    server = 0.0
    if _prefixes:
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        info = client.info("cpu")
        client.close()
        server = float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
    return time.process_time(), server


def bench_enqueue_claim(backend: str, n: int, root: Path) -> tuple[float, float, str]:
    """(enqueue jobs/s, claim+complete jobs/s, CPU per job: client | redis-server)."""
    q = make(backend, root)
    cpu0 = _cpu()
    t0 = time.perf_counter()
    for i in range(n):
        q.enqueue(NewJob(spec=spec(i)))
    enq = n / (time.perf_counter() - t0)
    cpu1 = _cpu()
    done = 0
    t0 = time.perf_counter()
    result = JobResult(images=[], generation_time=0.0, seed_used=0)
    while done < n:
        claim = q.claim_batch("w", 8, 30.0)
        for job in claim.jobs:
            q.complete(job.id, "w", result)
        done += len(claim.jobs)
    drain = n / (time.perf_counter() - t0)
    cpu2 = _cpu()
    q.close()
    us = [(b - a) / n * 1e6 for a, b in zip((*cpu0, *cpu1), (*cpu1, *cpu2), strict=True)]
    cost = f"client {us[0]:.0f} / {us[2]:.0f} us"
    if backend == "redis":
        cost += f", redis-server {us[1]:.0f} / {us[3]:.0f} us"
    return enq, drain, cost


def _consume(url: str, prefix: str, start: object, counts: object) -> None:
    """One consumer process: claim batches of 8 and complete each job until none is
    left; adds its count to ``counts``."""
    from sdserve.queue.redis import RedisQueue

    q = RedisQueue.from_url(url, prefix, max_depth=10**9)
    result = JobResult(images=[], generation_time=0.0, seed_used=0)
    start.wait()  # type: ignore[attr-defined]
    done, worker = 0, f"w{mp.current_process().pid}"
    while True:
        claim = q.claim_batch(worker, 8, 30.0)
        if not claim.jobs:
            if claim.retry_after is None and not q.stats().queued.get("normal", 0):
                break
            continue
        for job in claim.jobs:
            q.complete(job.id, worker, result)
        done += len(claim.jobs)
    with counts.get_lock():  # type: ignore[attr-defined]
        counts.value += done  # type: ignore[attr-defined]
    q.close()


def bench_consumers(n: int, consumers: int) -> tuple[float, str]:
    """(jobs/s that ``consumers`` processes drain from one Redis queue together,
    redis-server CPU per job)."""
    q = make("redis", Path())
    for i in range(n):
        q.enqueue(NewJob(spec=spec(i)))
    prefix = _prefixes[-1]
    q.close()
    ctx = mp.get_context("spawn")
    start, counts = ctx.Event(), ctx.Value("i", 0)
    procs = [
        ctx.Process(target=_consume, args=(REDIS_URL, prefix, start, counts))
        for _ in range(consumers)
    ]
    for p in procs:
        p.start()
    time.sleep(2.0)  # let every consumer import and connect before the clock starts
    cpu0 = _cpu()
    t0 = time.perf_counter()
    start.set()
    for p in procs:
        p.join()
    rate = n / (time.perf_counter() - t0)
    server_us = (_cpu()[1] - cpu0[1]) / n * 1e6
    if counts.value != n:
        raise SystemExit(f"consumers completed {counts.value} jobs, expected {n}")
    return rate, f"redis-server {server_us:.0f} us"


def bench_end_to_end(backend: str, n: int, root: Path) -> float:
    q = make(backend, root)
    bus = LocalWakeupBus()
    cfg = WorkerConfig(max_batch_images=8, batch_window_s=0.0, poll_interval_s=0.05)
    worker = Worker(q, FakeEngine(), LocalBlobStore(root / "img"), bus, cfg, image_key=b"k" * 32)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    t0 = time.perf_counter()
    thread.start()
    for i in range(n):
        q.enqueue(NewJob(spec=spec(i)))
        bus.notify_workers()
    while q.stats().queued.get("normal", 0) or q.stats().running:
        time.sleep(0.01)
    elapsed = time.perf_counter() - t0
    stop.set()
    bus.notify_workers()
    thread.join()
    q.close()
    return n / elapsed


def main() -> None:
    global REDIS_URL
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--backends", default="memory,sqlite,redis")
    ap.add_argument("--redis-url", default=REDIS_URL)
    ap.add_argument("--consumers", type=int, default=3, help="redis: consumer processes (0: skip)")
    args = ap.parse_args()
    REDIS_URL = args.redis_url
    root = Path(tempfile.mkdtemp(prefix="sdserve-qbench-"))
    print(f"queue ceiling, {args.jobs} jobs")
    try:
        for backend in args.backends.split(","):
            if backend == "redis" and not _redis_up():
                print(f"  redis   skipped: nothing answers at {REDIS_URL}")
                continue
            enq, drain, cost = bench_enqueue_claim(backend, args.jobs, root)
            e2e = bench_end_to_end(backend, args.jobs, root)
            print(
                f"  {backend:7s} enqueue {enq:8.0f} jobs/s | claim+complete {drain:8.0f} jobs/s"
                f" | end-to-end worker (fake engine) {e2e:7.0f} jobs/s"
                f"\n          CPU per job (enqueue / claim+complete): {cost}"
            )
            if backend == "redis" and args.consumers > 0:
                rate, cost = bench_consumers(args.jobs * args.consumers, args.consumers)
                print(
                    f"          {args.consumers} consumer processes: claim+complete"
                    f" {rate:8.0f} jobs/s, CPU per job {cost}"
                )
    finally:
        drop_redis_keys()


if __name__ == "__main__":
    main()
