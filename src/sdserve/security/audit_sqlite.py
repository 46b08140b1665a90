"""SQLite audit log: tables in the job store's file (schema v4, queue/sqlite_schema).

Appends take the write lock (BEGIN IMMEDIATE), so processes sharing the file chain
their entries one after another; ``synchronous=FULL``: an entry, once returned, is on
disk.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from sdserve.queue import sqlite_schema as schema
from sdserve.security.audit import AuditEntry, AuditLogBase, ChainState

_COLS = "seq, at, actor, tenant, action, target, outcome, details, prev_hash, hash"


class SqliteAuditLog(AuditLogBase):
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = schema.connect(self.path, "FULL")
        schema.migrate(self._conn)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("SqliteAuditLog is closed")
        return self._conn

    def _write(self, fn: Callable[[sqlite3.Connection], object]) -> object:
        with self._lock:
            conn = self._db()
            conn.execute("BEGIN IMMEDIATE")
            try:
                out = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return out

    @staticmethod
    def _read_state(conn: sqlite3.Connection) -> ChainState:
        row = conn.execute(
            "SELECT anchor_seq, anchor_hash, head_seq, head_hash FROM audit_state WHERE id = 1"
        ).fetchone()
        return ChainState(*row) if row else ChainState()

    @staticmethod
    def _put_state(conn: sqlite3.Connection, st: ChainState) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO audit_state VALUES (1, ?, ?, ?, ?)",
            (st.anchor_seq, st.anchor_hash, st.head_seq, st.head_hash),
        )

    def _append_atomic(self, build: Callable[[ChainState], AuditEntry]) -> AuditEntry:
        def run(conn: sqlite3.Connection) -> AuditEntry:
            st = self._read_state(conn)
            e = build(st)
            conn.execute(
                f"INSERT INTO audit_log ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    e.seq,
                    e.at,
                    e.actor,
                    e.tenant,
                    e.action,
                    e.target,
                    e.outcome,
                    json.dumps(e.details, sort_keys=True),
                    e.prev_hash,
                    e.hash,
                ),
            )
            self._put_state(conn, ChainState(st.anchor_seq, st.anchor_hash, e.seq, e.hash))
            return e

        entry = self._write(run)
        assert isinstance(entry, AuditEntry)
        return entry

    def _state(self) -> ChainState:
        with self._lock:
            return self._read_state(self._db())

    def _scan(self, after_pos: int, limit: int) -> list[tuple[int, AuditEntry]]:
        with self._lock:
            rows = (
                self._db()
                .execute(
                    f"SELECT pos, {_COLS} FROM audit_log WHERE pos > ? ORDER BY pos LIMIT ?",
                    (after_pos, limit),
                )
                .fetchall()
            )
        return [(int(r["pos"]), _entry(r)) for r in rows]

    def _prune_through(self, entry: AuditEntry) -> int:
        def run(conn: sqlite3.Connection) -> int:
            st = self._read_state(conn)
            row = conn.execute(
                "SELECT pos FROM audit_log WHERE seq = ? AND hash = ?", (entry.seq, entry.hash)
            ).fetchone()
            if row is None:
                return 0
            cur = conn.execute("DELETE FROM audit_log WHERE pos <= ?", (row["pos"],))
            self._put_state(conn, ChainState(entry.seq, entry.hash, st.head_seq, st.head_hash))
            return int(cur.rowcount)

        count = self._write(run)
        assert isinstance(count, int)
        return count

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _entry(row: sqlite3.Row) -> AuditEntry:
    return AuditEntry(
        seq=int(row["seq"]),
        at=float(row["at"]),
        actor=row["actor"],
        tenant=row["tenant"],
        action=row["action"],
        target=row["target"],
        outcome=row["outcome"],
        details=json.loads(row["details"]),
        prev_hash=row["prev_hash"],
        hash=row["hash"],
    )
