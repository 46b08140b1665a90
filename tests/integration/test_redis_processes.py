"""`sdserve api` and `sdserve worker` as separate processes that share nothing but
Redis (their own data dirs, one image folder standing in for object storage), as on
three machines."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from sdserve.queue.redis import RedisQueue
from sdserve.testing import ServeProcess, free_port

pytestmark = pytest.mark.slow


def _wait_status(c: httpx.Client, job_id: str, statuses: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 300
    while True:
        job: dict[str, Any] = c.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def test_api_and_workers_on_different_machines_share_only_redis(
    tmp_path: Path, tiny_model_dir: Path, redis_url: str, redis_prefix: str
) -> None:
    env = {
        "model": str(tiny_model_dir),
        "queue_backend": "redis",
        "redis_url": redis_url,
        "redis_prefix": redis_prefix,
        "images_dir": str(tmp_path / "bucket"),
        "lease_seconds": "3",
        "webhook_secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        # Machines that share no disk share the key that makes image ids.
        "secret_key": "test-secret-key-shared-by-every-node-0123",
        # Nobody polls in time: a job only moves when wake-ups cross through Redis.
        "poll_interval_ms": "600000",
    }
    port = free_port()
    api = ServeProcess(tmp_path / "api-node", port, command="api", **env)
    workers = [
        ServeProcess(tmp_path / f"gpu-node-{i}", port, command="worker", **env) for i in (1, 2)
    ]
    store = RedisQueue.from_url(redis_url, redis_prefix)
    try:
        api.wait_ready()  # the API sees the other nodes' worker states in Redis
        with httpx.Client(base_url=api.url, timeout=120) as c:
            deadline = time.monotonic() + 120
            while c.get("/readyz").json().get("ready_workers") != 2:
                assert time.monotonic() < deadline, "the second worker never got ready"
                time.sleep(0.1)
            models = c.get("/v1/models").json()["data"]
            assert [m["loaded"] for m in models if m["default"]] == [True]
            done = c.post("/v1/generate", json={"prompt": "a red square", "seed": 3})
            assert done.status_code == 200, done.text
            assert base64.b64decode(done.json()["images"][0]).startswith(b"\x89PNG")

            # The worker running a job is killed; the other one finishes the job.
            job_id = c.post(
                "/v1/jobs", json={"prompt": "slow", "num_inference_steps": 60, "seed": 1}
            ).json()["id"]
            _wait_status(c, job_id, {"running"})
            running = store.get(job_id)
            assert running is not None and running.lease_owner is not None
            pid = int(running.lease_owner.split(":")[1])  # host:pid:nonce
            (victim,) = [w for w in workers if w.proc.pid == pid]
            victim.kill()
            while (lease := store.get(job_id)) and (lease.lease_expires_at or 0) > time.time():
                time.sleep(0.05)  # (Redis runs on this machine: same clock)
            # A dead worker sends nothing: the next enqueue's wake-up is what makes the
            # survivor claim, and its claim reclaims the expired lease first.
            c.post("/v1/jobs", json={"prompt": "nudge", "num_inference_steps": 2})
            job_view = _wait_status(c, job_id, {"succeeded", "failed"})
            assert job_view["status"] == "succeeded" and job_view["attempts"] == 2, job_view
    finally:
        store.close()
        for proc in (*workers, api):
            proc.stop()
