"""Scale-out figures for the Redis backend, no GPU needed.

1. Submit-to-start latency across processes: a real `sdserve api` process and a
   separate worker process (bench/sim_worker.py: the real worker loop with a
   simulated engine) share only the store. Sequential synchronous requests; latency
   is started_at - created_at from each job's own timestamps (both sides write them
   with Redis's clock; for SQLite, the one machine's clock). SQLite (UNIX-socket
   wake-ups) runs the same way for comparison. Batch window 0, so the figure is the
   transport (a window adds up to its length when a batch is not full).
2. Throughput vs worker processes (M = 1, 2, 4, 8) on Redis: M simulated workers
   whose engine sleeps --step-delay per step (a batch costs steps x delay, as on a
   GPU), a preloaded queue of --jobs-per-worker x M one-image jobs; jobs/s from the
   first created_at to the last finished_at, and the ratio to M x one worker's.

Usage: python -m bench.redis_scale [--latency-jobs 200] [--workers 1,2,4,8]
       [--jobs-per-worker 48] [--steps 20] [--step-delay 0.02] [--batch 4]
       [--redis-url redis://127.0.0.1:6379/0] [--skip-latency] [--skip-throughput]
Keys live under a fresh prefix per run and are deleted afterwards.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import redis

from bench.common import pct
from sdserve.domain.jobs import Job, JobStatus, NewJob
from sdserve.queue.redis import RedisQueue
from sdserve.testing import ServeProcess, job_spec
from sdserve.worker.redis_registry import RedisRegistry
from sdserve.worker.registry import READY_TTL_S

ROOT = Path(__file__).resolve().parent.parent


def _env(values: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update({f"SDSERVE_{k.upper()}": v for k, v in values.items()})
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")) if p
    )
    return env


def _sim_worker(values: dict[str, str], step_delay: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.sim_worker", "--step-delay", str(step_delay)],
        env=_env(values),
        cwd=ROOT,
    )


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _drop(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    for i in range(0, len(keys), 1000):
        client.unlink(*keys[i : i + 1000])
    client.close()


def latency(backend: str, n: int, redis_url: str) -> list[float]:
    data = Path(tempfile.mkdtemp(prefix=f"sdserve-lat-{backend}-")) / "data"
    prefix = f"sdserve-bench:{uuid.uuid4().hex[:8]}:"
    values = {
        "queue_backend": backend,
        "redis_url": redis_url,
        "redis_prefix": prefix,
        "batch_window_ms": "0",
        "webhook_secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    }
    api = ServeProcess(data, command="api", **values)
    worker = _sim_worker({**values, "data_dir": str(data)}, 0.0)
    waits: list[float] = []
    try:
        api.wait_ready()
        with httpx.Client(base_url=api.url, timeout=60) as c:
            for i in range(n + 10):  # the first 10 warm up connections and caches
                body = {"prompt": f"p{i}", "seed": i, "num_inference_steps": 1}
                done = c.post("/v1/generate", json=body)
                done.raise_for_status()
                job = c.get(f"/v1/jobs/{done.json()['job_id']}").json()
                if i >= 10:
                    waits.append(job["started_at"] - job["created_at"])
    finally:
        _stop([worker])
        api.stop()
        if backend == "redis":
            _drop(redis_url, prefix)
    return waits


def throughput(
    workers: int, jobs_per_worker: int, steps: int, step_delay: float, batch: int, url: str
) -> float:
    prefix = f"sdserve-bench:{uuid.uuid4().hex[:8]}:"
    data = Path(tempfile.mkdtemp(prefix="sdserve-tput-")) / "data"
    values = {
        "queue_backend": "redis",
        "redis_url": url,
        "redis_prefix": prefix,
        "data_dir": str(data),
        "max_batch_images": str(batch),
        "batch_window_ms": "0",
        "secret_key": "bench-secret-key-" + "0" * 32,  # Redis: every process shares it
    }
    queue = RedisQueue.from_url(url, prefix, max_depth=10**9)
    registry = RedisRegistry.from_url(url, prefix)
    procs = [_sim_worker(values, step_delay) for _ in range(workers)]
    try:
        deadline = time.monotonic() + 120
        while len(registry.live(READY_TTL_S)) < workers:  # all started and idle
            if time.monotonic() > deadline:
                raise RuntimeError("simulated workers did not start")
            time.sleep(0.1)
        ids = []
        for i in range(jobs_per_worker * workers):
            spec = job_spec(prompt=f"p{i}", seed=i, num_inference_steps=steps, model="demo")
            ids.append(queue.enqueue(NewJob(spec=spec))[0].id)
        redis.Redis.from_url(url).publish(prefix + "wake:workers", "w")
        while True:
            s = queue.stats()
            if not s.running and not any(s.queued.values()):
                break
            time.sleep(0.05)
        jobs = [j for j in (queue.get(i) for i in ids) if j is not None]
        return _rate(jobs)
    finally:
        _stop(procs)
        registry.close()
        queue.close()
        _drop(url, prefix)


def _rate(jobs: list[Job]) -> float:
    assert all(j.status is JobStatus.succeeded for j in jobs), "a job did not succeed"
    first = min(j.created_at for j in jobs)
    last = max(j.finished_at or 0.0 for j in jobs)
    return len(jobs) / (last - first)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--latency-jobs", type=int, default=200)
    ap.add_argument("--workers", default="1,2,4,8")
    ap.add_argument("--jobs-per-worker", type=int, default=48)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--step-delay", type=float, default=0.02)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    args = ap.parse_args()
    if not args.skip_latency:
        print(f"submit-to-start across processes, {args.latency_jobs} sequential jobs")
        for backend in ("redis", "sqlite"):
            ms = [w * 1000 for w in latency(backend, args.latency_jobs, args.redis_url)]
            print(
                f"  {backend:6s} p50 {pct(ms, 0.5):6.2f} ms | p90 {pct(ms, 0.9):6.2f} ms"
                f" | p99 {pct(ms, 0.99):6.2f} ms | max {max(ms):6.2f} ms"
            )
    if not args.skip_throughput:
        per_batch = args.steps * args.step_delay
        print(
            f"throughput vs worker processes (Redis; simulated GPU {per_batch:.2f} s per batch"
            f" of up to {args.batch}; {args.jobs_per_worker} jobs per worker)"
        )
        base = 0.0
        for m in (int(x) for x in args.workers.split(",")):
            rate = throughput(
                m, args.jobs_per_worker, args.steps, args.step_delay, args.batch, args.redis_url
            )
            base = base or rate / m
            print(f"  M={m}: {rate:7.2f} jobs/s | {rate / (m * base):.3f} x M x one worker's")


if __name__ == "__main__":
    main()
