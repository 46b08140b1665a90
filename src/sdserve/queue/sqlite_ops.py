"""Statements ``SqliteQueue`` runs inside its transactions (the caller holds
``BEGIN IMMEDIATE``), kept apart so each file stays one concern."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from sdserve.domain.errors import IdempotencyConflict, NotFound
from sdserve.domain.jobs import Job, JobStatus, NewJob
from sdserve.domain.requests import Priority
from sdserve.queue import sqlite_schema as schema
from sdserve.queue.base import QueueStats
from sdserve.queue.common import lease_expired_error, new_outbox_id, outbox_payload

COLS = schema.JOB_COLUMNS
LEASE_CLEARED: dict[str, Any] = {"lease_owner": None, "lease_expires_at": None}
HELD = "status = 'running' AND lease_owner = ?"


def fetch(conn: sqlite3.Connection, job_id: str) -> Job | None:
    row = conn.execute(f"SELECT {COLS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return schema.row_to_job(row) if row else None


def held(conn: sqlite3.Connection, job_id: str, worker_id: str) -> Job | None:
    row = conn.execute(
        f"SELECT {COLS} FROM jobs WHERE id = ? AND {HELD}", (job_id, worker_id)
    ).fetchone()
    return schema.row_to_job(row) if row else None


def update_if(
    conn: sqlite3.Connection, job_id: str, sets: dict[str, Any], worker_id: str | None
) -> Job | None:
    """Apply ``sets`` (column names come from this module only); with ``worker_id``,
    only while that worker holds the lease. Returns the new job, None if no match."""
    assignments = ", ".join(f"{col} = ?" for col in sets)
    params = [schema.sql_value(v) for v in sets.values()]
    params.append(job_id)
    guard = ""
    if worker_id is not None:
        guard = f" AND {HELD}"
        params.append(worker_id)
    row = conn.execute(
        f"UPDATE jobs SET {assignments} WHERE id = ?{guard} RETURNING {COLS}", params
    ).fetchone()
    return schema.row_to_job(row) if row else None


def update(conn: sqlite3.Connection, job_id: str, sets: dict[str, Any]) -> Job:
    job = update_if(conn, job_id, sets, None)
    if job is None:
        raise NotFound(f"job {job_id} not found")
    return job


def finish(
    conn: sqlite3.Connection,
    job_id: str,
    status: JobStatus,
    ts: float,
    worker_id: str | None,
    **changes: Any,
) -> Job | None:
    """Terminal transition (lease-guarded when ``worker_id`` is given) + outbox entry."""
    sets = {"status": status, "finished_at": ts, "updated_at": ts, **LEASE_CLEARED, **changes}
    job = update_if(conn, job_id, sets, worker_id)
    if job is not None and job.callback_url:
        add_outbox(conn, job, ts)
    return job


def finish_unchecked(
    conn: sqlite3.Connection, job_id: str, status: JobStatus, ts: float, **changes: Any
) -> Job:
    job = finish(conn, job_id, status, ts, None, **changes)
    if job is None:
        raise NotFound(f"job {job_id} not found")
    return job


def add_outbox(conn: sqlite3.Connection, job: Job, ts: float) -> None:
    conn.execute(
        "INSERT INTO outbox (id, job_id, url, payload, next_attempt_at, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (new_outbox_id(), job.id, job.callback_url, json.dumps(outbox_payload(job)), ts, ts),
    )


def reclaim(conn: sqlite3.Connection, ts: float, cutoff: float | None = None) -> list[str]:
    """Leases expired by ``cutoff`` (default ``ts``): back to the queue, canceled if that
    was asked, or dead letters."""
    rows = conn.execute(
        "SELECT id, attempts, max_attempts, cancel_requested FROM jobs"
        " WHERE status = 'running' AND lease_expires_at <= ?",
        (ts if cutoff is None else cutoff,),
    ).fetchall()
    for job_id, attempts, max_attempts, cancel in rows:
        if cancel:
            finish_unchecked(conn, job_id, JobStatus.canceled, ts)
        elif attempts >= max_attempts:
            finish_unchecked(
                conn,
                job_id,
                JobStatus.failed,
                ts,
                error=lease_expired_error(attempts),
                dead_lettered=True,
            )
        else:
            update(
                conn,
                job_id,
                {
                    "status": JobStatus.queued,
                    "progress_step": 0,
                    "available_at": ts,
                    "updated_at": ts,
                    **LEASE_CLEARED,
                },
            )
    return [row[0] for row in rows]


def idempotent_match(conn: sqlite3.Connection, job: NewJob) -> Job | None:
    if job.idempotency_key is None:
        return None
    row = conn.execute(
        f"SELECT {COLS} FROM jobs WHERE idempotency_key = ? AND owner IS ?",
        (job.idempotency_key, job.owner),
    ).fetchone()
    if row is None:
        return None
    if row["request_hash"] != job.request_hash:
        raise IdempotencyConflict(
            "idempotency key already used with a different request", job_id=row["id"]
        )
    return schema.row_to_job(row)


def stats(conn: sqlite3.Connection, ts: float) -> QueueStats:
    """Queue depth by priority, running jobs, dead letters, oldest waiting job's age."""
    queued = {p.value: 0 for p in Priority}
    oldest: float | None = None
    for rank, count, first in conn.execute(
        "SELECT priority_rank, count(*), min(created_at) FROM jobs"
        " WHERE status = 'queued' GROUP BY priority_rank"
    ):
        queued[Priority.from_rank(rank).value] = count
        oldest = first if oldest is None else min(oldest, first)
    running = conn.execute("SELECT count(*) FROM jobs WHERE status = 'running'").fetchone()[0]
    dead = conn.execute("SELECT count(*) FROM jobs WHERE dead_lettered = 1").fetchone()[0]
    return QueueStats(queued, running, dead, ts - oldest if oldest is not None else None)
