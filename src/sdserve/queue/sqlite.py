"""SQLite JobQueue: the embedded default, shared by the API process and its workers.

Concurrency: one connection per thread (and per process: a forked child opens its
own), every write is one short ``BEGIN IMMEDIATE`` transaction, so the writers of
all processes queue on SQLite's lock (``busy_timeout``) instead of failing.

Durability (WAL mode): a write the client is told about (enqueue, cancel, requeue)
commits with ``synchronous=FULL``, i.e. an fsync of the WAL, so a 2xx survives even
an OS crash or power cut. Worker-side transitions (claim, heartbeat, progress,
complete, fail, release, outbox) commit with ``NORMAL``: with WAL that already
survives a killed *process* (the commit is in the OS's hands), and an OS crash can
only roll back the latest of them, to a state the lease machinery recovers from
(at-least-once; outputs are idempotent per job). The WAL is append-only, so the next
FULL commit makes every earlier NORMAL commit durable too. This keeps the hot
worker path off fsync (here: ~3,500 vs ~140 claim+complete/s). Pass
``synchronous="NORMAL"`` to drop the fsync for client writes as well (process kills
are still safe; an OS crash may lose the last accepted jobs).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sdserve.domain.errors import Conflict, NotFound, QueueFull
from sdserve.domain.jobs import Job, JobError, JobResult, JobStatus, NewJob
from sdserve.queue import sqlite_ops as ops
from sdserve.queue import sqlite_schema as schema
from sdserve.queue.base import Claim, JobPage, ListFilter, QueueStats
from sdserve.queue.batching import CANDIDATE_SCAN_LIMIT, Candidate, select_batch, window_wait
from sdserve.queue.common import (
    decode_cursor,
    encode_cursor,
    now_or,
    retry_keeps_going,
)
from sdserve.queue.sqlite_outbox import SqliteOutbox

_COLS = ops.COLS
_LEASE_CLEARED = ops.LEASE_CLEARED
_HELD = ops.HELD


# Later than any lease: "every running job lost its worker".
_EVERY_LEASE = 1e300


class SqliteQueue(SqliteOutbox):
    def __init__(self, path: Path, max_depth: int = 10_000, *, synchronous: str = "FULL") -> None:
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError(f"unsupported synchronous mode {synchronous!r}")
        self.path = Path(path)
        self.max_depth = max_depth
        self._ack_sync = synchronous.upper()  # for client-acknowledged writes
        self._local = threading.local()
        self._all_conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._closed = False
        schema.migrate(self._conn())

    # --- connections and transactions ---
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            return conn
        if self._closed:
            raise RuntimeError("SqliteQueue is closed")
        conn = schema.connect(self.path, "NORMAL")
        self._local.conn, self._local.pid = conn, os.getpid()
        with self._conns_lock:
            self._all_conns.append(conn)
        return conn

    @contextmanager
    def _write(self, acknowledged: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction; ``acknowledged``: the client is told it happened,
        so its commit is fsynced (see the module docstring)."""
        conn = self._conn()
        raise_sync = acknowledged and self._ack_sync != "NORMAL"
        if raise_sync:  # the level cannot change inside a transaction
            conn.execute(f"PRAGMA synchronous = {self._ack_sync}")
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            if raise_sync:
                conn.execute("PRAGMA synchronous = NORMAL")

    # --- submit / read ---
    def enqueue(self, job: NewJob, now: float | None = None) -> tuple[Job, bool]:
        ts = now_or(now)
        with self._write(acknowledged=True) as conn:
            existing = ops.idempotent_match(conn, job)
            if existing is not None:
                return existing, False
            if conn.execute("SELECT 1 FROM jobs WHERE id = ?", (job.id,)).fetchone():
                raise Conflict(f"job id {job.id} already exists")
            depth = conn.execute("SELECT value FROM counters WHERE name = 'queued'").fetchone()
            if depth[0] >= self.max_depth:
                raise QueueFull(f"queue is full ({self.max_depth} jobs waiting)")
            row = conn.execute(
                "INSERT INTO jobs (id, spec, status, priority_rank, batch_key, num_images,"
                " available_at, created_at, updated_at, max_attempts, callback_url,"
                " idempotency_key, request_hash, owner)"
                f" VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {_COLS}",
                (
                    job.id,
                    job.spec.model_dump_json(),
                    job.spec.priority.rank,
                    job.spec.batch_key,
                    job.spec.num_images,
                    ts,
                    ts,
                    ts,
                    job.max_attempts,
                    job.callback_url,
                    job.idempotency_key,
                    job.request_hash,
                    job.owner,
                ),
            ).fetchone()
        return schema.row_to_job(row), True

    def get(self, job_id: str) -> Job | None:
        row = self._conn().execute(f"SELECT {_COLS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return schema.row_to_job(row) if row else None

    def list_jobs(self, flt: ListFilter) -> JobPage:
        below = decode_cursor(flt.cursor)
        where, params = ["1 = 1"], []
        for clause, value in (
            ("status = ?", flt.status.value if flt.status else None),
            ("priority_rank = ?", flt.priority.rank if flt.priority else None),
            ("owner = ?", flt.owner),
            ("seq < ?", below),
        ):
            if value is not None:
                where.append(clause)
                params.append(value)
        rows = (
            self._conn()
            .execute(
                f"SELECT {_COLS} FROM jobs WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?",
                (*params, flt.limit + 1),
            )
            .fetchall()
        )
        more = len(rows) > flt.limit
        rows = rows[: flt.limit]
        cursor = encode_cursor(rows[-1]["seq"]) if more and rows else None
        return JobPage([schema.row_to_job(r) for r in rows], cursor)

    def queue_position(self, job_id: str) -> int | None:
        conn = self._conn()
        conn.execute("BEGIN")  # one snapshot for both reads
        try:
            mine = conn.execute(
                "SELECT priority_rank, seq FROM jobs WHERE id = ? AND status = 'queued'",
                (job_id,),
            ).fetchone()
            if mine is None:
                return None
            rank, seq = mine
            ahead = conn.execute(
                "SELECT count(*) FROM jobs WHERE status = 'queued' AND"
                " (priority_rank < ? OR (priority_rank = ? AND seq < ?))",
                (rank, rank, seq),
            ).fetchone()
            return int(ahead[0])
        finally:
            conn.execute("COMMIT")

    def stats(self, now: float | None = None) -> QueueStats:
        conn = self._conn()
        conn.execute("BEGIN")  # one snapshot for all the counts
        try:
            return ops.stats(conn, now_or(now))
        finally:
            conn.execute("COMMIT")

    # --- worker side ---
    def claim_batch(
        self,
        worker_id: str,
        max_images: int,
        lease_seconds: float,
        window_seconds: float = 0.0,
        now: float | None = None,
    ) -> Claim:
        ts = now_or(now)
        with self._write() as conn:
            ops.reclaim(conn, ts)
            cur = conn.execute(
                "SELECT id, priority_rank, batch_key, num_images, created_at FROM jobs"
                " WHERE status = 'queued' AND available_at <= ?"
                " ORDER BY priority_rank, seq LIMIT ?",
                (ts, CANDIDATE_SCAN_LIMIT),
            )
            # select_batch reads the cursor lazily and stops early.
            selection = select_batch((Candidate(*row) for row in cur), max_images)
            cur.close()
            if selection is None:
                return Claim([], None)
            wait = window_wait(selection, max_images, window_seconds, ts)
            if wait > 0:
                return Claim([], wait)
            ids = [c.key for c in selection.chosen]
            rows = conn.execute(
                "UPDATE jobs SET status = 'running', attempts = attempts + 1,"
                " started_at = coalesce(started_at, ?), lease_owner = ?,"
                " lease_expires_at = ?, updated_at = ?"
                f" WHERE id IN ({', '.join('?' * len(ids))}) RETURNING {_COLS}",
                (ts, worker_id, ts + lease_seconds, ts, *ids),
            ).fetchall()
        by_id = {row["id"]: schema.row_to_job(row) for row in rows}
        return Claim([by_id[i] for i in ids])

    def heartbeat(
        self, worker_id: str, job_ids: list[str], lease_seconds: float, now: float | None = None
    ) -> set[str]:
        if not job_ids:
            return set()
        ts = now_or(now)
        with self._write() as conn:
            rows = conn.execute(
                "UPDATE jobs SET lease_expires_at = ?, updated_at = ?"
                f" WHERE id IN ({', '.join('?' * len(job_ids))}) AND {_HELD} RETURNING id",
                (ts + lease_seconds, ts, *job_ids, worker_id),
            ).fetchall()
        return {row[0] for row in rows}

    def update_progress(self, job_id: str, worker_id: str, step: int, total: int) -> None:
        with self._write() as conn:
            ops.update_if(
                conn,
                job_id,
                {"progress_step": step, "progress_total": total, "updated_at": now_or(None)},
                worker_id,
            )

    def complete(
        self, job_id: str, worker_id: str, result: JobResult, now: float | None = None
    ) -> bool:
        with self._write() as conn:
            done = ops.finish(
                conn, job_id, JobStatus.succeeded, now_or(now), worker_id, result=result, error=None
            )
        return done is not None

    def fail(
        self,
        job_id: str,
        worker_id: str,
        error: JobError,
        retryable: bool,
        retry_delay: float = 0.0,
        now: float | None = None,
    ) -> Job | None:
        ts = now_or(now)
        with self._write() as conn:
            job = ops.held(conn, job_id, worker_id)
            if job is None:
                return None
            if retry_keeps_going(job, retryable):
                return ops.update(
                    conn,
                    job_id,
                    {
                        "status": JobStatus.queued,
                        "error": error,
                        "progress_step": 0,
                        "available_at": ts + retry_delay,
                        "updated_at": ts,
                        **_LEASE_CLEARED,
                    },
                )
            return ops.finish(
                conn, job_id, JobStatus.failed, ts, None, error=error, dead_lettered=retryable
            )

    def release(self, job_ids: list[str], worker_id: str, refund_attempt: bool = True) -> None:
        ts = now_or(None)
        with self._write() as conn:
            for job_id in job_ids:
                job = ops.held(conn, job_id, worker_id)
                if job is None:
                    continue
                attempts = max(job.attempts - 1, 0) if refund_attempt else job.attempts
                ops.update(
                    conn,
                    job_id,
                    {
                        "status": JobStatus.queued,
                        "attempts": attempts,
                        "started_at": job.started_at if attempts else None,
                        "progress_step": 0,
                        "updated_at": ts,
                        **_LEASE_CLEARED,
                    },
                )

    def cancel(self, job_id: str, now: float | None = None) -> Job:
        ts = now_or(now)
        with self._write(acknowledged=True) as conn:
            job = ops.fetch(conn, job_id)
            if job is None:
                raise NotFound(f"job {job_id} not found")
            if job.status == JobStatus.queued:
                return ops.finish_unchecked(conn, job_id, JobStatus.canceled, ts)
            if job.status == JobStatus.running and not job.cancel_requested:
                return ops.update(conn, job_id, {"cancel_requested": True, "updated_at": ts})
            return job

    def cancel_requested(self, job_ids: list[str]) -> set[str]:
        if not job_ids:
            return set()
        rows = (
            self._conn()
            .execute(
                f"SELECT id FROM jobs WHERE id IN ({', '.join('?' * len(job_ids))})"
                " AND status = 'running' AND cancel_requested = 1",
                job_ids,
            )
            .fetchall()
        )
        return {row[0] for row in rows}

    def mark_canceled(self, job_id: str, worker_id: str, now: float | None = None) -> bool:
        with self._write() as conn:
            return ops.finish(conn, job_id, JobStatus.canceled, now_or(now), worker_id) is not None

    def reclaim_expired(self, now: float | None = None, every_lease: bool = False) -> list[str]:
        with self._write() as conn:
            return ops.reclaim(conn, now_or(now), _EVERY_LEASE if every_lease else None)

    def dead_letters(self, limit: int = 100) -> list[Job]:
        rows = (
            self._conn()
            .execute(
                f"SELECT {_COLS} FROM jobs WHERE dead_lettered = 1 AND status = 'failed'"
                " ORDER BY finished_at DESC LIMIT ?",
                (limit,),
            )
            .fetchall()
        )
        return [schema.row_to_job(r) for r in rows]

    def requeue_dead_letter(self, job_id: str) -> Job:
        ts = now_or(None)
        with self._write(acknowledged=True) as conn:
            job = ops.fetch(conn, job_id)
            if job is None:
                raise NotFound(f"job {job_id} not found")
            if not job.dead_lettered:
                raise Conflict(f"job {job_id} is not in the dead letters")
            return ops.update(
                conn,
                job_id,
                {
                    "status": JobStatus.queued,
                    "attempts": 0,
                    "dead_lettered": False,
                    "error": None,
                    "started_at": None,
                    "finished_at": None,
                    "progress_step": 0,
                    "updated_at": ts,  # available_at stays: <= the last claim, so ready now
                },
            )

    def close(self) -> None:
        self._closed = True
        with self._conns_lock:
            conns, self._all_conns = self._all_conns, []
        for conn in conns:
            conn.close()
        self._local = threading.local()
