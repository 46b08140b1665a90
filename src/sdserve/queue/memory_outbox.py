"""The in-memory queue's webhook outbox (a mixin: entries live beside the jobs, under
the same lock, so a terminal transition and its outbox entry are one step)."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

from sdserve.domain.errors import NotFound
from sdserve.queue.base import OutboxEntry
from sdserve.queue.common import new_outbox_id, now_or


class MemoryOutbox:
    _lock: threading.RLock
    _outbox: dict[str, OutboxEntry]

    def _add_outbox_entry(
        self, subject_id: str, url: str, payload: dict[str, Any], ts: float
    ) -> None:
        """For a job or workflow that just ended; the caller holds the lock."""
        entry = OutboxEntry(
            id=new_outbox_id(),
            job_id=subject_id,
            url=url,
            payload=payload,
            attempts=0,
            next_attempt_at=ts,
            created_at=ts,
        )
        self._outbox[entry.id] = entry

    def outbox_due(self, now: float | None = None, limit: int = 50) -> list[OutboxEntry]:
        ts = now_or(now)
        with self._lock:
            due = [
                o
                for o in self._outbox.values()
                if o.status == "pending" and o.next_attempt_at <= ts
            ]
        due.sort(key=lambda o: (o.next_attempt_at, o.created_at))
        return due[:limit]

    def outbox_claim(
        self, now: float | None = None, limit: int = 50, lease_seconds: float = 60.0
    ) -> list[OutboxEntry]:
        ts = now_or(now)
        with self._lock:
            due = self.outbox_due(ts, limit)
            for entry in due:
                hidden = dataclasses.replace(entry, next_attempt_at=ts + lease_seconds)
                self._outbox[entry.id] = hidden
        return due

    def outbox_delivered(self, entry_id: str, now: float | None = None) -> None:
        self._outbox_update(entry_id, status="delivered", bump=True)

    def outbox_retry(self, entry_id: str, next_attempt_at: float, error: str) -> None:
        self._outbox_update(entry_id, next_attempt_at=next_attempt_at, last_error=error, bump=True)

    def outbox_give_up(self, entry_id: str, error: str) -> None:
        self._outbox_update(entry_id, status="failed", last_error=error, bump=True)

    def outbox_get(self, entry_id: str) -> OutboxEntry | None:
        with self._lock:
            return self._outbox.get(entry_id)

    def _outbox_update(self, entry_id: str, bump: bool, **changes: Any) -> None:
        with self._lock:
            entry = self._outbox.get(entry_id)
            if entry is None:
                raise NotFound(f"outbox entry {entry_id} not found")
            if bump:
                changes["attempts"] = entry.attempts + 1
            self._outbox[entry_id] = dataclasses.replace(entry, **changes)
