"""Wake-ups over a real redis-server: threads, event loops, another process, and a
Redis that goes away and comes back. No timing assertions: a wake-up either arrives
within a generous wait or the test fails."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sdserve.queue.redis_wakeups import RedisWakeupBus
from tests.redis_server import RedisServer

WAIT = 10.0  # generous: a wake-up that does not come within this is lost


@pytest.fixture
def buses(redis_url: str, redis_prefix: str) -> Iterator[Callable[[str], RedisWakeupBus]]:
    made: list[RedisWakeupBus] = []

    def make(role: str) -> RedisWakeupBus:
        bus = RedisWakeupBus.from_url(redis_url, redis_prefix, role)  # type: ignore[arg-type]
        made.append(bus)
        if role == "api":
            assert bus.listening.wait(WAIT), "job-event listener never subscribed"
        return bus

    yield make
    for bus in made:
        bus.close()


def test_a_worker_hears_a_wakeup_sent_before_it_waits(buses: Any) -> None:
    worker, api = buses("worker"), buses("api")
    assert worker.wait_for_work(0.05) is False
    api.notify_workers()  # the worker is busy elsewhere: kept on its subscription
    assert worker.wait_for_work(WAIT) is True


def test_every_idle_worker_hears_a_wakeup(buses: Any) -> None:
    workers = [buses("worker") for _ in range(3)]
    buses("api").notify_workers()
    assert [w.wait_for_work(WAIT) for w in workers] == [True, True, True]


def test_api_waiters_hear_their_job_only(buses: Any) -> None:
    api, worker = buses("api"), buses("worker")

    async def scenario() -> tuple[bool, bool]:
        mine = asyncio.create_task(api.wait_job("job_mine", WAIT))
        await asyncio.sleep(0)  # registered
        worker.notify_job("job_other")
        done, _ = await asyncio.wait({mine}, timeout=0.3)
        woken_by_other = bool(done)
        worker.notify_job("job_mine")
        return woken_by_other, await mine

    assert asyncio.run(scenario()) == (False, True)
    # Another event loop (a new asyncio.run) is served by the same listener.
    assert asyncio.run(_notify_then_wait(api, worker, "job_again")) is True


async def _notify_then_wait(api: RedisWakeupBus, sender: RedisWakeupBus, job_id: str) -> bool:
    task = asyncio.create_task(api.wait_job(job_id, WAIT))
    await asyncio.sleep(0)
    sender.notify_job(job_id)
    return await task


def _worker_process(url: str, prefix: str, ready: Any, go: Any, out: Any) -> None:
    bus = RedisWakeupBus.from_url(url, prefix, "worker")
    ready.set()
    out.put(("woke", bus.wait_for_work(WAIT)))
    go.wait(WAIT)
    bus.notify_job("job_cross")
    bus.close()


def test_wakeups_cross_processes(redis_url: str, redis_prefix: str, buses: Any) -> None:
    ctx = mp.get_context("spawn")
    ready, go, out = ctx.Event(), ctx.Event(), ctx.Queue()
    api = buses("api")
    child = ctx.Process(target=_worker_process, args=(redis_url, redis_prefix, ready, go, out))
    child.start()
    try:
        assert ready.wait(60), "worker process did not start"
        api.notify_workers()
        assert out.get(timeout=WAIT) == ("woke", True)

        async def hear_child() -> bool:
            task = asyncio.create_task(api.wait_job("job_cross", WAIT))
            await asyncio.sleep(0)
            go.set()
            return await task

        assert asyncio.run(hear_child()) is True
    finally:
        child.join(WAIT)
    assert child.exitcode == 0


def test_prefixes_keep_deployments_apart(redis_url: str, redis_prefix: str) -> None:
    mine = RedisWakeupBus.from_url(redis_url, redis_prefix, "worker")
    other = RedisWakeupBus.from_url(redis_url, redis_prefix + "other:", "api")
    try:
        other.notify_workers()
        assert mine.wait_for_work(0.2) is False
    finally:
        mine.close()
        other.close()


def test_redis_restart_costs_wakeups_not_the_bus(
    private_redis: Callable[..., RedisServer],
) -> None:
    server = private_redis()
    worker = RedisWakeupBus.from_url(server.url, "t:", "worker")
    api = RedisWakeupBus.from_url(server.url, "t:", "api")
    try:
        server.kill()
        api.notify_workers()  # lost, silently
        assert worker.wait_for_work(0.1) is False  # no exception, no busy loop
        server.start()
        # The worker subscribes again on its next wait; keep sending until it hears.
        woke = False
        for _ in range(50):
            api.notify_workers()
            if worker.wait_for_work(0.2):
                woke = True
                break
        assert woke
        assert api.listening.wait(WAIT)  # the listener subscribed again
        assert asyncio.run(_notify_then_wait(api, worker, "job_after")) is True
    finally:
        worker.close()
        api.close()
