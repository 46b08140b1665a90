"""The Redis queue's webhook outbox (a mixin: entries are written by the job
transitions themselves, in the same unit of work; here, dispatchers read and update
them). Each entry is a versioned hash; pending ones sit in a zset by due time."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any, TypeVar

import redis

from sdserve.domain.errors import NotFound
from sdserve.queue.base import OutboxEntry
from sdserve.queue.redis_keys import Keys
from sdserve.queue.redis_keys import unavailable_as_503 as _available
from sdserve.queue.redis_store import UnitOfWork

T = TypeVar("T")


class RedisOutbox:
    _r: redis.Redis
    keys: Keys

    def _now(self, now: float | None) -> float:
        raise NotImplementedError

    def _transact(self, ts: float, body: Callable[[UnitOfWork], T]) -> T:
        raise NotImplementedError

    def _due_ids(self, ts: float, limit: int) -> list[str]:
        ids = self._r.zrangebyscore(self.keys.outbox_due, "-inf", ts, start=0, num=limit)
        return [str(i) for i in ids]

    def _read_entries(self, ids: list[str]) -> list[tuple[OutboxEntry, str]]:
        pipe = self._r.pipeline(transaction=False)
        for entry_id in ids:
            pipe.hmget(self.keys.outbox(entry_id), "b", "v")
        return [(_entry(body), ver) for body, ver in pipe.execute() if body]

    @_available
    def outbox_due(self, now: float | None = None, limit: int = 50) -> list[OutboxEntry]:
        ts = self._now(now)
        due = [e for e, _ in self._read_entries(self._due_ids(ts, limit))]
        due.sort(key=lambda o: (o.next_attempt_at, o.created_at))
        return due

    @_available
    def outbox_claim(
        self, now: float | None = None, limit: int = 50, lease_seconds: float = 60.0
    ) -> list[OutboxEntry]:
        ts = self._now(now)

        def body(uow: UnitOfWork) -> list[OutboxEntry]:
            due = self._read_entries(self._due_ids(ts, limit))
            for entry, version in due:
                hidden = dataclasses.replace(entry, next_attempt_at=ts + lease_seconds)
                uow.put_outbox(hidden, version)  # guards the version read
            return sorted((e for e, _ in due), key=lambda o: (o.next_attempt_at, o.created_at))

        return self._transact(ts, body)

    @_available
    def outbox_delivered(self, entry_id: str, now: float | None = None) -> None:
        self._outbox_update(entry_id, status="delivered")

    @_available
    def outbox_retry(self, entry_id: str, next_attempt_at: float, error: str) -> None:
        self._outbox_update(entry_id, next_attempt_at=next_attempt_at, last_error=error)

    @_available
    def outbox_give_up(self, entry_id: str, error: str) -> None:
        self._outbox_update(entry_id, status="failed", last_error=error)

    @_available
    def outbox_get(self, entry_id: str) -> OutboxEntry | None:
        body = self._r.hget(self.keys.outbox(entry_id), "b")
        return _entry(str(body)) if body else None

    def _outbox_update(self, entry_id: str, **changes: Any) -> None:
        def body(uow: UnitOfWork) -> None:
            found = self._read_entries([entry_id])
            if not found:
                raise NotFound(f"outbox entry {entry_id} not found")
            entry, version = found[0]
            changes["attempts"] = entry.attempts + 1
            uow.put_outbox(dataclasses.replace(entry, **changes), version)

        self._transact(self._now(None), body)


def _entry(body: str) -> OutboxEntry:
    return OutboxEntry(**json.loads(body))
