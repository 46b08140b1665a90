"""The native API over real HTTP with the Redis job store and wake-ups (workers are
threads here; tests/integration/test_redis_processes.py runs them as processes)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest

from sdserve.engine.fake import FakeEngine
from sdserve.queue.redis_wakeups import RedisWakeupBus
from tests.integration.live import LiveService


@pytest.fixture
def redis_live(live_factory: Callable[..., LiveService], redis_url: str, redis_prefix: str) -> Any:
    svc = live_factory(queue_backend="redis", redis_url=redis_url, redis_prefix=redis_prefix)
    # Wake-ups through Redis too: the API's bus and the workers' are separate buses.
    api_bus = RedisWakeupBus.from_url(redis_url, redis_prefix, "api")
    worker_bus = RedisWakeupBus.from_url(redis_url, redis_prefix, "worker")
    assert api_bus.listening.wait(10)
    svc.services.wakeups = api_bus
    yield svc, worker_bus
    svc.stop()
    api_bus.close()
    worker_bus.close()


def _start_worker(svc: LiveService, bus: RedisWakeupBus, engine: FakeEngine) -> None:
    svc.services.wakeups, api_bus = bus, svc.services.wakeups
    try:
        svc.start_workers(engine)  # the workers take the worker bus
    finally:
        svc.services.wakeups = api_bus


def test_jobs_end_to_end_on_redis(redis_live: Any) -> None:
    svc, worker_bus = redis_live
    _start_worker(svc, worker_bus, FakeEngine())
    with svc.client() as c:
        done = c.post("/v1/generate", json={"prompt": "a cat", "seed": 5})
        assert done.status_code == 200, done.text
        assert base64.b64decode(done.json()["images"][0]).startswith(b"\x89PNG")
        ids = [
            c.post("/v1/jobs", json={"prompt": f"p{i}", "seed": i}).json()["id"] for i in range(3)
        ]
        for job_id in ids:
            svc.wait_status(job_id, {"succeeded"})
        page = c.get("/v1/jobs", params={"limit": 2}).json()
        assert [j["id"] for j in page["data"]] == ids[::-1][:2]
        rest = c.get("/v1/jobs", params={"limit": 2, "cursor": page["next_cursor"]}).json()
        assert rest["data"][0]["id"] == ids[0]


def test_bad_input_is_a_4xx_on_redis(redis_live: Any) -> None:
    svc, _ = redis_live
    with svc.client() as c:
        for cursor in ("zzz", "czo5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OQ", "%00"):
            bad = c.get("/v1/jobs", params={"cursor": cursor})
            assert bad.status_code == 422, bad.text
            assert "cursor" in bad.text
        assert c.get("/v1/jobs/job_missing").status_code == 404
        assert c.delete("/v1/jobs/job_missing").status_code == 404


def test_queue_position_and_cancel_on_redis(redis_live: Any) -> None:
    svc, _ = redis_live  # no worker: jobs wait
    with svc.client() as c:
        first = c.post("/v1/jobs", json={"prompt": "a"}).json()
        second = c.post("/v1/jobs", json={"prompt": "b", "priority": "high"}).json()
        assert c.get(f"/v1/jobs/{first['id']}").json()["queue_position"] == 1
        assert c.get(f"/v1/jobs/{second['id']}").json()["queue_position"] == 0
        canceled = c.delete(f"/v1/jobs/{second['id']}")
        assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
        assert c.get(f"/v1/jobs/{first['id']}").json()["queue_position"] == 0
