"""The safety record: every decision (prompt refusals, image verdicts, reviews, appeals)
with who made it and when, beside the job store (memory, SQLite v5, Redis).

A prompt is kept only as its SHA-256 and length unless SDSERVE_SAFETY_RECORD_PROMPTS
is set: a refused prompt is often exactly what a retention policy says not to keep.
One appeal per subject (a refused prompt's record, or a job): the backend enforces it
atomically (a unique index, SET NX, a lock), so two racing appeals cannot both land.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from sdserve.domain.errors import Conflict

Kind = Literal["prompt", "image", "review", "appeal", "appeal_decision"]


def new_record_id() -> str:
    return "sfd_" + uuid.uuid4().hex


class SafetyRecord(BaseModel):
    id: str = Field(default_factory=new_record_id)
    kind: Kind
    # What it is about: a job id (image, review, job appeal), a prompt record's id
    # (its appeal), an appeal's id (its decision).
    subject: str
    tenant: str | None = None
    # prompt: refused | error; image: flagged | error; review: approved | rejected;
    # appeal: pending; appeal_decision: granted | denied
    outcome: str
    actor: str  # "policy:builtin", "checker:model", "key:<id>", "open" (auth off)
    at: float = Field(default_factory=time.time)
    categories: dict[str, float] = Field(default_factory=dict)
    reason: str = ""
    note: str = ""
    prompt: str | None = None
    prompt_sha256: str | None = None
    prompt_length: int | None = None

    def public(self) -> dict[str, Any]:
        out = self.model_dump(exclude_none=True)
        out["object"] = "safety_record"
        return out


class DecisionLog(Protocol):
    def add(self, record: SafetyRecord) -> SafetyRecord:
        """Store it; Conflict for a second appeal of the same subject."""
        ...

    def get(self, record_id: str) -> SafetyRecord | None: ...

    def list(
        self,
        *,
        kind: str | None = None,
        subject: str | None = None,
        tenant: str | None = None,
        limit: int = 100,
    ) -> list[SafetyRecord]:
        """Newest first."""
        ...

    def close(self) -> None: ...


def _appealed(subject: str) -> Conflict:
    return Conflict(f"{subject} has already been appealed (one appeal each)")


def _matches(r: SafetyRecord, kind: str | None, subject: str | None, tenant: str | None) -> bool:
    return (
        (kind is None or r.kind == kind)
        and (subject is None or r.subject == subject)
        and (tenant is None or r.tenant == tenant)
    )


class MemoryDecisionLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[SafetyRecord] = []

    def add(self, record: SafetyRecord) -> SafetyRecord:
        with self._lock:
            if record.kind == "appeal" and any(
                r.kind == "appeal" and r.subject == record.subject for r in self._records
            ):
                raise _appealed(record.subject)
            self._records.append(record)
        return record

    def get(self, record_id: str) -> SafetyRecord | None:
        with self._lock:
            return next((r for r in self._records if r.id == record_id), None)

    def list(
        self,
        *,
        kind: str | None = None,
        subject: str | None = None,
        tenant: str | None = None,
        limit: int = 100,
    ) -> list[SafetyRecord]:
        with self._lock:
            found = [r for r in reversed(self._records) if _matches(r, kind, subject, tenant)]
        return found[:limit]

    def close(self) -> None:
        pass


class SqliteDecisionLog:
    """Table ``safety_records`` (schema v5) in the job store's file."""

    def __init__(self, path: Path) -> None:
        from sdserve.queue import sqlite_schema as schema

        self._lock = threading.Lock()
        self._conn: sqlite3.Connection = schema.connect(Path(path), "FULL")
        schema.migrate(self._conn)

    def add(self, record: SafetyRecord) -> SafetyRecord:
        with self._lock:
            try:
                self._conn.execute(
                    "INSERT INTO safety_records (id, kind, subject, tenant, at, body)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        record.id,
                        record.kind,
                        record.subject,
                        record.tenant,
                        record.at,
                        record.model_dump_json(),
                    ),
                )
            except sqlite3.IntegrityError as exc:
                raise _appealed(record.subject) from exc
        return record

    def get(self, record_id: str) -> SafetyRecord | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT body FROM safety_records WHERE id = ?", (record_id,)
            ).fetchone()
        return SafetyRecord.model_validate_json(row[0]) if row else None

    def list(
        self,
        *,
        kind: str | None = None,
        subject: str | None = None,
        tenant: str | None = None,
        limit: int = 100,
    ) -> list[SafetyRecord]:
        where, args = [], []
        for column, value in (("kind", kind), ("subject", subject), ("tenant", tenant)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = "SELECT body FROM safety_records"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._lock:
            rows = self._conn.execute(f"{sql} ORDER BY seq DESC LIMIT ?", (*args, limit))
            return [SafetyRecord.model_validate_json(r[0]) for r in rows.fetchall()]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class RedisDecisionLog:
    """``<p>safety:rec:<id>`` (JSON), ``<p>safety:log`` (zset of ids by sequence),
    ``<p>safety:appeal:<subject>`` (SET NX: one appeal each)."""

    def __init__(self, client: Any, prefix: str = "sdserve:") -> None:
        self.client = client
        self.p = f"{prefix}safety:"

    @classmethod
    def from_url(cls, url: str, prefix: str) -> RedisDecisionLog:
        import redis

        return cls(redis.Redis.from_url(url, decode_responses=True), prefix)

    def add(self, record: SafetyRecord) -> SafetyRecord:
        if record.kind == "appeal" and not self.client.set(
            f"{self.p}appeal:{record.subject}", record.id, nx=True
        ):
            raise _appealed(record.subject)
        seq = self.client.incr(f"{self.p}seq")
        with self.client.pipeline(transaction=True) as pipe:
            pipe.set(f"{self.p}rec:{record.id}", record.model_dump_json())
            pipe.zadd(f"{self.p}log", {record.id: seq})
            pipe.execute()
        return record

    def get(self, record_id: str) -> SafetyRecord | None:
        raw = self.client.get(f"{self.p}rec:{record_id}")
        return SafetyRecord.model_validate_json(raw) if raw else None

    def list(
        self,
        *,
        kind: str | None = None,
        subject: str | None = None,
        tenant: str | None = None,
        limit: int = 100,
    ) -> list[SafetyRecord]:
        found: list[SafetyRecord] = []
        start, page = 0, 500
        while len(found) < limit:
            ids = self.client.zrevrange(f"{self.p}log", start, start + page - 1)
            if not ids:
                break
            raws = self.client.mget([f"{self.p}rec:{i}" for i in ids])
            for raw in raws:
                if raw:
                    rec = SafetyRecord.model_validate_json(raw)
                    if _matches(rec, kind, subject, tenant):
                        found.append(rec)
            start += page
        return found[:limit]

    def close(self) -> None:
        self.client.close()


def build_decision_log(backend: str, path: Path, redis_url: str, prefix: str) -> DecisionLog:
    if backend == "sqlite":
        path.parent.mkdir(parents=True, exist_ok=True)
        return SqliteDecisionLog(path)
    if backend == "redis":
        return RedisDecisionLog.from_url(redis_url, prefix)
    return MemoryDecisionLog()
