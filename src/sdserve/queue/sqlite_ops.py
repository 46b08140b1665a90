"""Statements ``SqliteQueue`` runs inside its transactions (the caller holds
``BEGIN IMMEDIATE``): load rows, persist what queue/transitions.py decided."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from sdserve.domain.errors import IdempotencyConflict
from sdserve.domain.jobs import Job
from sdserve.domain.requests import Priority
from sdserve.domain.workflows import Workflow
from sdserve.queue import sqlite_schema as schema
from sdserve.queue import transitions as tr
from sdserve.queue.base import QueueStats
from sdserve.queue.common import new_outbox_id, outbox_payload, workflow_payload

COLS = schema.JOB_COLUMNS
_SAVE = f"UPDATE jobs SET {', '.join(f'{c} = ?' for c in schema.MUTABLE_JOB_COLUMNS)} WHERE id = ?"
_INSERT_COLS = (
    "id",
    "spec",
    "status",
    "priority_rank",
    "batch_key",
    "num_images",
    "available_at",
    "created_at",
    "updated_at",
    "max_attempts",
    "callback_url",
    "idempotency_key",
    "request_hash",
    "owner",
    "workflow_id",
    "workflow_step",
)


def fetch(conn: sqlite3.Connection, job_id: str) -> Job | None:
    row = conn.execute(f"SELECT {COLS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return schema.row_to_job(row) if row else None


def fetch_many(conn: sqlite3.Connection, job_ids: list[str]) -> dict[str, Job]:
    if not job_ids:
        return {}
    rows = conn.execute(
        f"SELECT {COLS} FROM jobs WHERE id IN ({', '.join('?' * len(job_ids))})", job_ids
    ).fetchall()
    return {row["id"]: schema.row_to_job(row) for row in rows}


def insert(conn: sqlite3.Connection, job: Job) -> None:
    values = {
        "id": job.id,
        "spec": job.spec.model_dump_json(),
        "status": job.status.value,
        "priority_rank": job.spec.priority.rank,
        "batch_key": job.spec.batch_key,
        "num_images": job.spec.num_images,
        "available_at": job.available_at,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "max_attempts": job.max_attempts,
        "callback_url": job.callback_url,
        "idempotency_key": job.idempotency_key,
        "request_hash": job.request_hash,
        "owner": job.owner,
        "workflow_id": job.workflow_id,
        "workflow_step": job.workflow_step,
    }
    conn.execute(
        f"INSERT INTO jobs ({', '.join(_INSERT_COLS)})"
        f" VALUES ({', '.join('?' * len(_INSERT_COLS))})",
        [values[c] for c in _INSERT_COLS],
    )


def save(conn: sqlite3.Connection, jobs: list[Job]) -> None:
    conn.executemany(
        _SAVE, [[*schema.job_values(j, schema.MUTABLE_JOB_COLUMNS), j.id] for j in jobs]
    )


def store(conn: sqlite3.Connection, out: tr.Outcome, ts: float) -> Job:
    """Persist a decided transition with its consequences: the webhook outbox entry and
    the workflow it advances, all in the caller's transaction."""
    job = out.job
    save(conn, [job])
    if out.notify_webhook and job.callback_url:
        add_outbox(conn, job.id, job.callback_url, outbox_payload(job), ts)
    if out.ended and job.workflow_id is not None:
        wf = fetch_workflow(conn, job.workflow_id)
        if wf is not None:
            store_workflow(conn, tr.advance_workflow(wf, job, ts), ts)
    return job


def add_outbox(
    conn: sqlite3.Connection, subject_id: str, url: str, payload: dict[str, Any], ts: float
) -> None:
    conn.execute(
        "INSERT INTO outbox (id, job_id, url, payload, next_attempt_at, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (new_outbox_id(), subject_id, url, json.dumps(payload), ts, ts),
    )


def reclaim(conn: sqlite3.Connection, ts: float, cutoff: float | None = None) -> list[str]:
    """Leases expired by ``cutoff`` (default ``ts``): as transitions.reclaim decides."""
    rows = conn.execute(
        f"SELECT {COLS} FROM jobs WHERE status = 'running' AND lease_expires_at <= ?",
        (ts if cutoff is None else cutoff,),
    ).fetchall()
    for row in rows:
        store(conn, tr.reclaim(schema.row_to_job(row), ts), ts)
    return [row["id"] for row in rows]


def idempotent_match(
    conn: sqlite3.Connection,
    table: str,
    owner: str | None,
    key: str | None,
    request_hash: str | None,
) -> str | None:
    """The id stored under (owner, key) in ``table`` (jobs | workflows), if any; a
    different request under the same key is a conflict."""
    if key is None:
        return None
    cols = "id, request_hash" if table == "jobs" else "id, body"
    row = conn.execute(
        f"SELECT {cols} FROM {table} WHERE idempotency_key = ? AND owner IS ?", (key, owner)
    ).fetchone()
    if row is None:
        return None
    stored = row[1] if table == "jobs" else json.loads(row[1]).get("request_hash")
    if stored != request_hash:
        raise IdempotencyConflict(
            "idempotency key already used with a different request", job_id=row[0]
        )
    return str(row[0])


# --- workflows ---


def fetch_workflow(conn: sqlite3.Connection, workflow_id: str) -> Workflow | None:
    row = conn.execute("SELECT body FROM workflows WHERE id = ?", (workflow_id,)).fetchone()
    return Workflow.model_validate_json(row[0]) if row else None


def insert_workflow(conn: sqlite3.Connection, wf: Workflow) -> None:
    conn.execute(
        "INSERT INTO workflows (id, status, owner, idempotency_key, created_at, body)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (wf.id, wf.status.value, wf.owner, wf.idempotency_key, wf.created_at, wf.model_dump_json()),
    )


def store_workflow(conn: sqlite3.Connection, out: tr.WorkflowOutcome, ts: float) -> None:
    if not out.changed:
        return
    wf = out.workflow
    conn.execute(
        "UPDATE workflows SET status = ?, body = ? WHERE id = ?",
        (wf.status.value, wf.model_dump_json(), wf.id),
    )
    if out.next_job is not None:
        insert(conn, out.next_job)
    if out.notify_webhook and wf.callback_url:
        jobs = fetch_many(conn, wf.job_ids)
        add_outbox(conn, wf.id, wf.callback_url, workflow_payload(wf, jobs), ts)


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
