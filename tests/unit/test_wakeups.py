"""Wake-up buses with real sockets, threads, processes and event loops."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from sdserve.queue.wakeups import LocalWakeupBus, SocketWakeupBus, socket_base_dir

# --- in-process bus ---


def test_local_bus_wakes_worker_thread_and_keeps_early_wakeups() -> None:
    bus = LocalWakeupBus()
    assert bus.wait_for_work(0.01) is False
    bus.notify_workers()  # nobody waiting yet: kept for the next wait
    assert bus.wait_for_work(0.01) is True
    threading.Timer(0.05, bus.notify_workers).start()
    start = time.monotonic()
    assert bus.wait_for_work(5.0) is True
    assert time.monotonic() - start < 2.0
    bus.close()
    assert bus.wait_for_work(1.0) is False


def test_local_bus_wait_job_woken_from_another_thread() -> None:
    bus = LocalWakeupBus()

    async def scenario() -> tuple[bool, bool]:
        threading.Timer(0.05, bus.notify_job, args=("job_1",)).start()
        woke = await bus.wait_job("job_1", 5.0)
        timed_out = await bus.wait_job("job_2", 0.05)
        return woke, timed_out

    assert asyncio.run(scenario()) == (True, False)


def test_a_job_wakeup_with_nobody_waiting_answers_the_next_wait() -> None:
    # The API reads the job, then waits: a wake-up landing between the two must not be
    # lost (it cost a whole poll interval on ~5% of synchronous requests).
    bus = LocalWakeupBus()

    async def scenario() -> tuple[bool, bool, bool]:
        bus.notify_job("job_1")  # the worker finished while the API was reading
        early = await bus.wait_job("job_1", 0.05)
        consumed = await bus.wait_job("job_1", 0.05)  # heard once, not forever
        other = await bus.wait_job("job_2", 0.05)
        return early, consumed, other

    assert asyncio.run(scenario()) == (True, False, False)


# --- socket bus across processes ---


def _worker_process(run_dir: str, ready: Any, go: Any, out: Any) -> None:
    bus = SocketWakeupBus(Path(run_dir), "worker")
    ready.set()
    start = time.monotonic()
    woke = bus.wait_for_work(10.0)
    out.put(("woke", woke, time.monotonic() - start))
    go.wait(10.0)
    bus.notify_job("job_cross")
    bus.close()


def test_socket_bus_across_processes(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    ready, go, out = ctx.Event(), ctx.Event(), ctx.Queue()
    api = SocketWakeupBus(tmp_path, "api")
    child = ctx.Process(target=_worker_process, args=(str(tmp_path), ready, go, out))
    child.start()
    try:
        assert ready.wait(30.0), "worker process did not start"
        api.notify_workers()
        tag, woke, waited = out.get(timeout=10.0)
        assert (tag, woke) == ("woke", True) and waited < 5.0

        async def wait_for_child() -> tuple[bool, float]:
            task = asyncio.create_task(api.wait_job("job_cross", 10.0))
            await asyncio.sleep(0)  # the waiter is registered and the reader started
            start = time.monotonic()
            go.set()
            return await task, time.monotonic() - start

        woke_job, elapsed = asyncio.run(wait_for_child())
        assert woke_job is True and elapsed < 2.0
    finally:
        child.join(10.0)
        api.close()
    assert child.exitcode == 0
    assert list((tmp_path / "workers").iterdir()) == []  # the child removed its socket


def test_socket_bus_timeouts_and_other_jobs(tmp_path: Path) -> None:
    worker = SocketWakeupBus(tmp_path, "worker")
    api = SocketWakeupBus(tmp_path, "api")
    try:
        assert worker.wait_for_work(0.02) is False

        async def scenario() -> tuple[bool, bool]:
            worker.notify_job("job_other")
            other = await api.wait_job("job_mine", 0.1)
            worker.notify_job("job_mine")
            mine = await api.wait_job("job_mine", 2.0)
            return other, mine

        assert asyncio.run(scenario()) == (False, True)
        # a second event loop (a new asyncio.run) still gets wake-ups
        worker.notify_job("job_again")
        assert asyncio.run(api.wait_job("job_again", 2.0)) is True
    finally:
        worker.close()
        api.close()
    assert not worker.path.exists() and not api.path.exists()


def test_stale_socket_files_are_removed(tmp_path: Path) -> None:
    workers = tmp_path / "workers"
    workers.mkdir()
    # A process that died without cleaning up: its pid no longer exists.
    dead_pid = workers / "99999999-deadbeef.sock"
    _bind_and_abandon(dead_pid)
    # Our own pid, but nobody bound any more: refused on send, then removed.
    refused = workers / f"{os.getpid()}-abandon.sock"
    api = SocketWakeupBus(tmp_path, "api")
    _bind_and_abandon(refused)
    worker = SocketWakeupBus(tmp_path, "worker")
    try:
        assert not dead_pid.exists()  # swept when a bus starts
        assert refused.exists()
        api.notify_workers()
        assert not refused.exists()
        assert worker.wait_for_work(2.0) is True  # the live one still got it
    finally:
        api.close()
        worker.close()


def _bind_and_abandon(path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.close()  # the file stays, like after a SIGKILL


def test_long_run_dir_falls_back_to_short_hashed_dir(tmp_path: Path) -> None:
    deep = tmp_path / ("x" * 60) / ("y" * 60)
    base = socket_base_dir(deep)
    assert base != deep and len(str(base)) < 60
    assert socket_base_dir(deep) == base  # every process computes the same one
    bus = SocketWakeupBus(deep, "worker")
    try:
        bus.notify_workers()
        assert bus.wait_for_work(2.0) is True
    finally:
        bus.close()
        shutil.rmtree(base, ignore_errors=True)
    assert socket_base_dir(tmp_path) == tmp_path


def test_unknown_role_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        SocketWakeupBus(tmp_path, "gpu")  # type: ignore[arg-type]
