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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sdserve.domain.errors import Conflict, NotFound, QueueFull
from sdserve.domain.jobs import Job, JobError, JobResult, NewJob
from sdserve.domain.workflows import NewWorkflow, Workflow
from sdserve.queue import sqlite_ops as ops
from sdserve.queue import sqlite_purge
from sdserve.queue import sqlite_schema as schema
from sdserve.queue import transitions as tr
from sdserve.queue.base import Claim, JobPage, ListFilter, QueueStats
from sdserve.queue.batching import (
    CANDIDATE_SCAN_LIMIT,
    DEFAULT_AFFINITY_MAX_WAIT_S,
    Affinity,
    Candidate,
    select_batch,
    window_wait,
)
from sdserve.queue.common import decode_cursor, encode_cursor, now_or
from sdserve.queue.purge import PurgeFilter, PurgeResult
from sdserve.queue.sqlite_outbox import SqliteOutbox

_COLS = ops.COLS

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
            existing = ops.idempotent_match(
                conn, "jobs", job.owner, job.idempotency_key, job.request_hash
            )
            if existing is not None:
                found = ops.fetch(conn, existing)
                assert found is not None
                return found, False
            if conn.execute("SELECT 1 FROM jobs WHERE id = ?", (job.id,)).fetchone():
                raise Conflict(f"job id {job.id} already exists")
            self._check_depth(conn)
            stored = tr.new_job(job, ts)
            ops.insert(conn, stored)
        return stored, True

    def _check_depth(self, conn: sqlite3.Connection) -> None:
        depth = conn.execute("SELECT value FROM counters WHERE name = 'queued'").fetchone()
        if depth[0] >= self.max_depth:
            raise QueueFull(f"queue is full ({self.max_depth} jobs waiting)")

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
        prefer_models: frozenset[str] = frozenset(),
        affinity_max_wait: float = DEFAULT_AFFINITY_MAX_WAIT_S,
    ) -> Claim:
        ts = now_or(now)
        affinity = Affinity(prefer_models, ts, affinity_max_wait)
        with self._write() as conn:
            ops.reclaim(conn, ts)
            cur = conn.execute(
                "SELECT id, priority_rank, batch_key, num_images, created_at, solo,"
                " json_extract(spec, '$.model') FROM jobs"
                " WHERE status = 'queued' AND available_at <= ?"
                " ORDER BY priority_rank, seq LIMIT ?",
                (ts, CANDIDATE_SCAN_LIMIT),
            )
            # select_batch reads the cursor lazily and stops early.
            selection = select_batch(
                (Candidate(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6]) for r in cur),
                max_images,
                affinity,
            )
            cur.close()
            if selection is None:
                return Claim([], None)
            wait = window_wait(selection, max_images, window_seconds, ts)
            if wait > 0:
                return Claim([], wait)
            ids = [c.key for c in selection.chosen]
            found = ops.fetch_many(conn, ids)
            claimed = [tr.claim(found[i], worker_id, ts, lease_seconds, len(ids)) for i in ids]
            ops.save(conn, claimed)
        return Claim(claimed)

    def heartbeat(
        self, worker_id: str, job_ids: list[str], lease_seconds: float, now: float | None = None
    ) -> set[str]:
        if not job_ids:
            return set()
        ts = now_or(now)
        with self._write() as conn:
            beats = [
                b
                for j in ops.fetch_many(conn, job_ids).values()
                if (b := tr.heartbeat(j, worker_id, ts, lease_seconds)) is not None
            ]
            ops.save(conn, beats)
        return {b.id for b in beats}

    def update_progress(self, job_id: str, worker_id: str, step: int, total: int) -> None:
        with self._write() as conn:
            job = ops.fetch(conn, job_id)
            moved = tr.progress(job, worker_id, step, total, now_or(None)) if job else None
            if moved is not None:
                ops.save(conn, [moved])

    def complete(
        self, job_id: str, worker_id: str, result: JobResult, now: float | None = None
    ) -> bool:
        ts = now_or(now)
        return self._apply(job_id, lambda j: tr.complete(j, worker_id, result, ts), ts) is not None

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
        return self._apply(
            job_id, lambda j: tr.fail(j, worker_id, error, retryable, retry_delay, ts), ts
        )

    def hold(
        self,
        job_id: str,
        worker_id: str,
        result: JobResult,
        reason: JobError,
        now: float | None = None,
    ) -> bool:
        ts = now_or(now)
        return (
            self._apply(job_id, lambda j: tr.hold(j, worker_id, result, reason, ts), ts) is not None
        )

    def review(
        self,
        job_id: str,
        approve: bool,
        result: JobResult,
        error: JobError | None = None,
        now: float | None = None,
    ) -> Job:
        ts = now_or(now)
        decide = lambda j: tr.review(j, approve, result, error, ts)  # noqa: E731
        job = self._apply(job_id, decide, ts, acknowledged=True)
        if job is None:
            raise NotFound(f"job {job_id} not found")
        return job

    def release(self, job_ids: list[str], worker_id: str, refund_attempt: bool = True) -> None:
        ts = now_or(None)
        with self._write() as conn:
            for job in ops.fetch_many(conn, job_ids).values():
                out = tr.release(job, worker_id, refund_attempt, ts)
                if out is not None:
                    ops.store(conn, out, ts)

    def cancel(self, job_id: str, now: float | None = None) -> Job:
        ts = now_or(now)
        job = self._apply(job_id, lambda j: tr.cancel(j, ts), ts, acknowledged=True)
        if job is None:
            raise NotFound(f"job {job_id} not found")
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
        ts = now_or(now)
        return self._apply(job_id, lambda j: tr.mark_canceled(j, worker_id, ts), ts) is not None

    def reclaim_expired(self, now: float | None = None, every_lease: bool = False) -> list[str]:
        with self._write() as conn:
            return ops.reclaim(conn, now_or(now), _EVERY_LEASE if every_lease else None)

    def _apply(
        self,
        job_id: str,
        decide: Callable[[Job], tr.Outcome | None],
        ts: float,
        acknowledged: bool = False,
    ) -> Job | None:
        """Load, decide, persist: one write transaction."""
        with self._write(acknowledged) as conn:
            job = ops.fetch(conn, job_id)
            out = decide(job) if job is not None else None
            return ops.store(conn, out, ts) if out is not None else None

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
        job = self._apply(job_id, lambda j: tr.requeue_dead_letter(j, ts), ts, acknowledged=True)
        if job is None:
            raise NotFound(f"job {job_id} not found")
        return job

    # --- workflows ---
    def enqueue_workflow(
        self, workflow: NewWorkflow, now: float | None = None
    ) -> tuple[Workflow, bool]:
        ts = now_or(now)
        with self._write(acknowledged=True) as conn:
            existing = ops.idempotent_match(
                conn, "workflows", workflow.owner, workflow.idempotency_key, workflow.request_hash
            )
            if existing is not None:
                found = ops.fetch_workflow(conn, existing)
                assert found is not None
                return found, False
            if ops.fetch_workflow(conn, workflow.id) is not None:
                raise Conflict(f"workflow id {workflow.id} already exists")
            self._check_depth(conn)
            wf, first = tr.start_workflow(workflow, ts)
            ops.insert_workflow(conn, wf)
            ops.insert(conn, first)
        return wf, True

    def get_workflow(self, workflow_id: str) -> Workflow | None:
        return ops.fetch_workflow(self._conn(), workflow_id)

    def cancel_workflow(self, workflow_id: str, now: float | None = None) -> Workflow:
        ts = now_or(now)
        with self._write(acknowledged=True) as conn:
            wf = ops.fetch_workflow(conn, workflow_id)
            if wf is None:
                raise NotFound(f"workflow {workflow_id} not found")
            out = tr.cancel_workflow(wf, ts)
            ops.store_workflow(conn, out, ts)
            step_job = out.workflow.steps[out.workflow.current].job_id
            job = ops.fetch(conn, step_job) if out.changed and step_job else None
            if job is not None:
                ops.store(conn, tr.cancel(job, ts), ts)
        return out.workflow

    def purge(self, flt: PurgeFilter, now: float | None = None) -> PurgeResult:
        with self._write(acknowledged=True) as conn:
            return sqlite_purge.purge(conn, flt)

    def close(self) -> None:
        self._closed = True
        with self._conns_lock:
            conns, self._all_conns = self._all_conns, []
        for conn in conns:
            conn.close()
        self._local = threading.local()
