"""``SqliteQueue.purge``: one write transaction per call (queue/purge.py has the rules).
The queued counter is untouched: only finished jobs are deleted."""

from __future__ import annotations

import sqlite3

from sdserve.domain.jobs import JobStatus
from sdserve.queue import sqlite_ops as ops
from sdserve.queue.purge import (
    PurgeFilter,
    PurgeResult,
    images_expired,
    job_matches,
    redacted,
    workflow_matches,
)
from sdserve.queue.sqlite_schema import JOB_COLUMNS, row_to_job

_TERMINAL = tuple(s.value for s in JobStatus if s.terminal)


def purge(conn: sqlite3.Connection, flt: PurgeFilter) -> PurgeResult:
    marks = ", ".join("?" for _ in _TERMINAL)
    where = f"status IN ({marks})"
    args: list[object] = list(_TERMINAL)
    if flt.finished_before is not None:
        where += " AND finished_at < ?"
        args.append(flt.finished_before)
    rows = conn.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE {where} ORDER BY seq", args)
    picked = []
    for row in rows:
        job = row_to_job(row)
        if job_matches(job, flt):
            picked.append(job)
            if len(picked) > flt.limit:
                break
    more = len(picked) > flt.limit
    picked = picked[: flt.limit]
    if flt.redact_prompts:
        for job in picked:
            spec = redacted(job.spec).model_dump_json()
            conn.execute("UPDATE jobs SET spec = ? WHERE id = ?", (spec, job.id))
        return PurgeResult(picked, [], more)
    if flt.expire_images:
        for job in picked:
            kept = images_expired(job)
            result = kept.result.model_dump_json() if kept.result is not None else None
            conn.execute(
                "UPDATE jobs SET spec = ?, result = ? WHERE id = ?",
                (kept.spec.model_dump_json(), result, job.id),
            )
        return PurgeResult(picked, [], more)
    for job in picked:
        conn.execute("DELETE FROM jobs WHERE id = ?", (job.id,))
        conn.execute("DELETE FROM outbox WHERE job_id = ?", (job.id,))
    workflows = []
    for (wf_id,) in conn.execute("SELECT id FROM workflows WHERE status != 'running'").fetchall():
        wf = ops.fetch_workflow(conn, wf_id)
        if wf is not None and workflow_matches(wf, flt):
            workflows.append(wf.id)
            conn.execute("DELETE FROM workflows WHERE id = ?", (wf.id,))
            conn.execute("DELETE FROM outbox WHERE job_id = ?", (wf.id,))
    return PurgeResult(picked, workflows, more)
