"""The SQLite queue's webhook outbox (a mixin over the queue's connections; entries are
written by the job transitions themselves, in the same transaction)."""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager
from typing import Any

from sdserve.domain.errors import NotFound
from sdserve.queue import sqlite_schema as schema
from sdserve.queue.base import OutboxEntry
from sdserve.queue.common import now_or


class SqliteOutbox:
    def _conn(self) -> sqlite3.Connection:
        raise NotImplementedError

    def _write(self, acknowledged: bool = False) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def outbox_due(self, now: float | None = None, limit: int = 50) -> list[OutboxEntry]:
        rows = (
            self._conn()
            .execute(
                "SELECT * FROM outbox WHERE status = 'pending' AND next_attempt_at <= ?"
                " ORDER BY next_attempt_at, created_at LIMIT ?",
                (now_or(now), limit),
            )
            .fetchall()
        )
        return [schema.row_to_outbox(r) for r in rows]

    def outbox_claim(
        self, now: float | None = None, limit: int = 50, lease_seconds: float = 60.0
    ) -> list[OutboxEntry]:
        ts = now_or(now)
        with self._write() as conn:
            rows = conn.execute(
                "SELECT * FROM outbox WHERE status = 'pending' AND next_attempt_at <= ?"
                " ORDER BY next_attempt_at, created_at LIMIT ?",
                (ts, limit),
            ).fetchall()
            conn.executemany(
                "UPDATE outbox SET next_attempt_at = ? WHERE id = ?",
                [(ts + lease_seconds, row["id"]) for row in rows],
            )
        return [schema.row_to_outbox(r) for r in rows]

    def outbox_delivered(self, entry_id: str, now: float | None = None) -> None:
        self._outbox_update(entry_id, "status = 'delivered'", ())

    def outbox_retry(self, entry_id: str, next_attempt_at: float, error: str) -> None:
        self._outbox_update(
            entry_id, "next_attempt_at = ?, last_error = ?", (next_attempt_at, error)
        )

    def outbox_give_up(self, entry_id: str, error: str) -> None:
        self._outbox_update(entry_id, "status = 'failed', last_error = ?", (error,))

    def outbox_get(self, entry_id: str) -> OutboxEntry | None:
        row = self._conn().execute("SELECT * FROM outbox WHERE id = ?", (entry_id,)).fetchone()
        return schema.row_to_outbox(row) if row else None

    def _outbox_update(self, entry_id: str, sets: str, params: tuple[Any, ...]) -> None:
        with self._write() as conn:
            cur = conn.execute(
                f"UPDATE outbox SET {sets}, attempts = attempts + 1 WHERE id = ?",
                (*params, entry_id),
            )
            if cur.rowcount == 0:
                raise NotFound(f"outbox entry {entry_id} not found")
