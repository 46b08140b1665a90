"""The audit log on every backend: entries chain, verification passes on an honest
log and names the first bad entry after an edit, a deletion (middle or last) or a
reorder; retention prunes the oldest entries and the rest still verifies."""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from sdserve.security.audit import AuditEntry, AuditLogBase, AuditQuery, MemoryAuditLog
from sdserve.security.audit_sqlite import SqliteAuditLog


class Tamper:
    """Raw access to a backend's stored entries, as an attacker with the store has."""

    def __init__(
        self,
        read: Callable[[], list[AuditEntry]],
        write: Callable[[list[AuditEntry]], None],
    ) -> None:
        self.read, self.write = read, write


@pytest.fixture(params=["memory", "sqlite", "redis"])
def backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[AuditLogBase, Tamper]]:
    if request.param == "memory":
        mem = MemoryAuditLog()

        def mem_write(entries: list[AuditEntry]) -> None:
            mem.entries = entries

        yield mem, Tamper(lambda: list(mem.entries), mem_write)
    elif request.param == "sqlite":
        path = tmp_path / "sdserve.db"
        log = SqliteAuditLog(path)

        def sql_read() -> list[AuditEntry]:
            return list(log.iter_all())

        def sql_write(entries: list[AuditEntry]) -> None:
            conn = sqlite3.connect(path)
            conn.execute("DROP TRIGGER IF EXISTS audit_log_append_only")
            conn.execute("DELETE FROM audit_log")
            for e in entries:
                conn.execute(
                    "INSERT INTO audit_log (seq, at, actor, tenant, action, target, outcome,"
                    " details, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        e.seq,
                        e.at,
                        e.actor,
                        e.tenant,
                        e.action,
                        e.target,
                        e.outcome,
                        json.dumps(e.details),
                        e.prev_hash,
                        e.hash,
                    ),
                )
            conn.commit()
            conn.close()

        yield log, Tamper(sql_read, sql_write)
        log.close()
    else:
        from sdserve.security.audit_redis import RedisAuditLog

        url, prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
        rlog = RedisAuditLog.from_url(url, prefix)

        def redis_read() -> list[AuditEntry]:
            return [AuditEntry.from_json(r) for r in rlog.client.lrange(rlog.log_key, 0, -1)]

        def redis_write(entries: list[AuditEntry]) -> None:
            rlog.client.delete(rlog.log_key)
            if entries:
                rlog.client.rpush(rlog.log_key, *[e.to_json() for e in entries])

        yield rlog, Tamper(redis_read, redis_write)
        rlog.close()


def _fill(log: AuditLogBase, n: int = 6) -> list[AuditEntry]:
    return [
        log.append(
            "job.create",
            f"job-{i}",
            actor=f"key{i % 2}",
            tenant="acme" if i % 2 else "beta",
            details={"images": i, "note": "ünï"},
            now=1000.0 + i,
        )
        for i in range(n)
    ]


def test_entries_chain_and_verify(backend: tuple[AuditLogBase, Tamper]) -> None:
    log, _ = backend
    assert log.verify().ok  # empty
    made = _fill(log)
    assert [e.seq for e in made] == [1, 2, 3, 4, 5, 6]
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(made))
    assert list(log.iter_all()) == made
    verdict = log.verify()
    assert verdict.ok and verdict.checked == 6
    assert [e.seq for e in log.query(AuditQuery(tenant="acme"))] == [2, 4, 6]
    assert [e.seq for e in log.query(AuditQuery(after=4, limit=1))] == [5]


@pytest.mark.parametrize(
    ("tamper", "bad", "why"),
    [
        ("edit", 3, "edited"),
        ("edit_and_rehash", 4, "does not follow"),
        ("delete", 3, "missing"),
        ("delete_last", 6, "ends at 5"),
        ("reorder", 3, "missing"),
    ],
)
def test_tampering_is_caught_at_the_first_bad_entry(
    backend: tuple[AuditLogBase, Tamper], tamper: str, bad: int, why: str
) -> None:
    log, raw = backend
    _fill(log)
    entries = raw.read()
    if tamper == "edit":
        entries[2] = replace(entries[2], outcome="refused")
    elif tamper == "edit_and_rehash":
        from sdserve.security.audit import recomputed

        forged = replace(entries[2], target="job-x")
        entries[2] = replace(forged, hash=recomputed(forged))
    elif tamper == "delete":
        del entries[2]
    elif tamper == "delete_last":
        del entries[-1]
    else:
        entries[2], entries[3] = entries[3], entries[2]
    raw.write(entries)
    verdict = log.verify()
    assert not verdict.ok
    assert verdict.bad_seq == bad and why in verdict.reason


def test_retention_prunes_the_oldest_and_the_rest_verifies(
    backend: tuple[AuditLogBase, Tamper],
) -> None:
    log, raw = backend
    _fill(log)
    assert log.prune_before(1003.0) == 3
    assert [e.seq for e in log.iter_all()] == [4, 5, 6]
    assert log.verify().ok
    assert log.prune_before(1003.0) == 0
    after = log.append("tenant.erase", "acme", actor="cli", tenant="acme", now=2000.0)
    assert after.seq == 7 and log.verify().ok
    # Cutting the first remaining entry is caught (only retention moves the anchor).
    raw.write(raw.read()[1:])
    verdict = log.verify()
    assert not verdict.ok and verdict.bad_seq == 4
