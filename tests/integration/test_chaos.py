"""Chaos: 4 worker processes, 200 jobs, 20 random SIGKILLs and 10 SIGTERMs, on SQLite
and on Redis (a private redis-server with AOF, restarted halfway) → nothing lost,
nothing stuck, no image stored twice. The counts are printed (pytest -s)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sdserve.config import Settings
from sdserve.queue.factory import build_queue
from tests.chaos import chaos_settings, run_chaos, run_poison
from tests.redis_server import RedisServer

pytestmark = pytest.mark.slow


def _assert_clean(report_line: str, lost: int, stuck: int, duplicated: int, missing: int) -> None:
    print(report_line)
    assert (lost, stuck, duplicated, missing) == (0, 0, 0, 0), report_line


def test_chaos_on_sqlite(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = chaos_settings(make_settings, queue_backend="sqlite")
    queue = build_queue(settings)
    try:
        report = run_chaos(settings, queue, settings.resolved_images_dir)
    finally:
        queue.close()
    _assert_clean(
        report.line("sqlite"), report.lost, report.stuck, report.duplicated, report.missing_images
    )
    assert (report.kills, report.terms) == (20, 10)
    assert set(report.term_exit_codes) == {0}  # a SIGTERMed worker drains and exits 0


def test_chaos_on_redis_restarted_with_aof(
    make_settings: Callable[..., Settings],
    private_redis: Callable[..., RedisServer],
    tmp_path: Path,
) -> None:
    server = private_redis(appendonly=True, appendfsync="always")
    settings = chaos_settings(make_settings, queue_backend="redis", redis_url=server.url)
    queue = build_queue(settings)

    def restart_redis() -> None:
        server.kill()  # a crash: no shutdown save; AOF with fsync always keeps every ack
        server.start()

    try:
        report = run_chaos(settings, queue, settings.resolved_images_dir, midway=restart_redis)
    finally:
        queue.close()
    _assert_clean(
        report.line("redis"), report.lost, report.stuck, report.duplicated, report.missing_images
    )
    assert (report.kills, report.terms) == (20, 10)
    assert set(report.term_exit_codes) == {0}


def test_a_poison_job_is_dead_lettered_alone(make_settings: Callable[..., Settings]) -> None:
    """It kills every worker that runs it: after max_attempts crashes *while alone*
    it is dead-lettered; the jobs that shared its batches all succeed."""
    settings = chaos_settings(
        make_settings, queue_backend="sqlite", max_batch_images=4, lease_seconds=1.0
    )
    queue = build_queue(settings)
    try:
        bad, innocents = run_poison(settings, queue, innocents=24, workers=2)
        poison = queue.get(bad)
        done = [queue.get(i) for i in innocents]
        dead = [j.id for j in queue.dead_letters()]
    finally:
        queue.close()
    assert poison is not None and poison.dead_lettered, poison
    assert poison.attempts == settings.max_attempts
    assert poison.error is not None and poison.error.type == "lease_expired"
    assert dead == [bad]
    assert all(j is not None and j.status.value == "succeeded" for j in done)
