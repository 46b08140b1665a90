"""SQLite schema, connection setup and row mapping for ``SqliteQueue``."""

from __future__ import annotations

import json
import sqlite3
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from sdserve.domain.errors import SdserveError
from sdserve.domain.jobs import Job, JobError, JobResult, JobStatus
from sdserve.domain.requests import JobSpec
from sdserve.queue.base import OutboxEntry
from sdserve.security.files import private_database

BUSY_TIMEOUT_MS = 10_000

JOB_COLUMNS = (
    "id, seq, spec, status, created_at, started_at, finished_at, updated_at, attempts, "
    "max_attempts, progress_step, progress_total, cancel_requested, dead_lettered, "
    "callback_url, idempotency_key, request_hash, owner, lease_owner, lease_expires_at, "
    "result, error, available_at, batch_size, solo, workflow_id, workflow_step"
)
# The columns a transition may change (queue/transitions.py decides, ops.save writes).
MUTABLE_JOB_COLUMNS = (
    "status",
    "started_at",
    "finished_at",
    "updated_at",
    "attempts",
    "progress_step",
    "progress_total",
    "cancel_requested",
    "dead_lettered",
    "lease_owner",
    "lease_expires_at",
    "result",
    "error",
    "available_at",
    "batch_size",
    "solo",
)

# Versioned migrations: MIGRATIONS[v] takes a database at version v-1 to v, in one
# transaction. A new database runs them all; a data dir written by an older release
# runs the ones it lacks (tests/fixtures/datadir_v1 is such a dir, kept as a fixture).
#
# v1 (release 0.1.0): jobs, outbox, the queued counter.
# seq is the rowid: claim order within a priority and the list/cursor order. The
# claim index serves claim, queue_position, stats and the depth check; the other
# indexes are partial so they cost nothing for the rows they do not describe.
_V1 = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    spec TEXT NOT NULL,
    status TEXT NOT NULL,
    priority_rank INTEGER NOT NULL,
    batch_key TEXT NOT NULL,
    num_images INTEGER NOT NULL,
    available_at REAL NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    updated_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    progress_step INTEGER NOT NULL DEFAULT 0,
    progress_total INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    dead_lettered INTEGER NOT NULL DEFAULT 0,
    callback_url TEXT,
    idempotency_key TEXT,
    request_hash TEXT,
    owner TEXT,
    lease_owner TEXT,
    lease_expires_at REAL,
    result TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS jobs_claim ON jobs (status, priority_rank, seq);
CREATE INDEX IF NOT EXISTS jobs_leases ON jobs (lease_expires_at) WHERE status = 'running';
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, seq);
CREATE INDEX IF NOT EXISTS jobs_idempotency ON jobs (idempotency_key, owner)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_dead ON jobs (finished_at) WHERE dead_lettered = 1;
CREATE TABLE IF NOT EXISTS outbox (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    url TEXT NOT NULL,
    payload TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    created_at REAL NOT NULL,
    last_error TEXT,
    status TEXT NOT NULL DEFAULT 'pending'
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (next_attempt_at) WHERE status = 'pending';
-- The depth check on every enqueue reads one row instead of counting the queue.
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO counters (name, value)
    VALUES ('queued', (SELECT count(*) FROM jobs WHERE status = 'queued'));
CREATE TRIGGER IF NOT EXISTS jobs_queued_insert AFTER INSERT ON jobs
    WHEN NEW.status = 'queued'
    BEGIN UPDATE counters SET value = value + 1 WHERE name = 'queued'; END;
CREATE TRIGGER IF NOT EXISTS jobs_queued_update AFTER UPDATE OF status ON jobs
    WHEN (OLD.status = 'queued') != (NEW.status = 'queued')
    BEGIN
        UPDATE counters SET value = value + (CASE WHEN NEW.status = 'queued' THEN 1 ELSE -1 END)
        WHERE name = 'queued';
    END;
CREATE TRIGGER IF NOT EXISTS jobs_queued_delete AFTER DELETE ON jobs
    WHEN OLD.status = 'queued'
    BEGIN UPDATE counters SET value = value - 1 WHERE name = 'queued'; END;
"""

# v2: editing tasks live in the spec JSON (no column); workflows and their step jobs;
# "run alone next time" for jobs whose batch died.
_V2 = """
ALTER TABLE jobs ADD COLUMN batch_size INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN solo INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN workflow_id TEXT;
ALTER TABLE jobs ADD COLUMN workflow_step INTEGER;
CREATE INDEX jobs_workflow ON jobs (workflow_id) WHERE workflow_id IS NOT NULL;
CREATE TABLE workflows (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    owner TEXT,
    idempotency_key TEXT,
    created_at REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX workflows_idempotency ON workflows (idempotency_key, owner)
    WHERE idempotency_key IS NOT NULL;
"""

# v3: API keys (only a hash of each secret) and per-tenant settings (a sealed webhook
# secret); written by security/sqlite.py, which shares this file and its migrations.
_V3 = """
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    role TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    secret_hash TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    revoked_at REAL,
    rotated_to TEXT
);
CREATE INDEX api_keys_tenant ON api_keys (tenant, created_at);
CREATE TABLE tenants (
    name TEXT PRIMARY KEY,
    webhook_secret TEXT,
    updated_at REAL NOT NULL
);
"""

# v4: the audit log (security/audit_sqlite.py): hash-chained entries, append-only (no
# UPDATE; DELETE only by retention, from the oldest), and its chain state (one row).
_V4 = """
CREATE TABLE audit_log (
    pos INTEGER PRIMARY KEY AUTOINCREMENT,
    seq INTEGER NOT NULL,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    tenant TEXT,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_log_tenant ON audit_log (tenant, seq);
CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TABLE audit_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    anchor_seq INTEGER NOT NULL,
    anchor_hash TEXT NOT NULL,
    head_seq INTEGER NOT NULL,
    head_hash TEXT NOT NULL
);
"""


# v5: content safety (safety/records.py): every decision (prompt refusals, image
# verdicts, reviews, appeals) with who and when; one appeal per subject, enforced by
# the unique index; per-tenant and per-key prompt-policy thresholds.
_V5 = """
ALTER TABLE tenants ADD COLUMN prompt_threshold REAL;
ALTER TABLE api_keys ADD COLUMN prompt_threshold REAL;
CREATE TABLE safety_records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    tenant TEXT,
    at REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX safety_records_subject ON safety_records (subject, kind);
CREATE INDEX safety_records_kind ON safety_records (kind, seq);
CREATE UNIQUE INDEX safety_one_appeal ON safety_records (subject) WHERE kind = 'appeal';
"""

MIGRATIONS: dict[int, str] = {1: _V1, 2: _V2, 3: _V3, 4: _V4, 5: _V5}
SCHEMA_VERSION = max(MIGRATIONS)


def connect(path: Path, synchronous: str) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves (BEGIN IMMEDIATE for writes,
    # so two processes never both read-then-upgrade and deadlock into SQLITE_BUSY).
    # check_same_thread=False only so close() may close every thread's connection; each
    # connection is otherwise used by the one thread that opened it.
    private_database(path)  # prompts inside: 0600, and so its WAL and SHM
    conn = sqlite3.connect(
        str(path),
        isolation_level=None,
        check_same_thread=False,
        timeout=BUSY_TIMEOUT_MS / 1000,
    )
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    return conn


def schema_version(conn: sqlite3.Connection) -> int:
    """0 for an empty database."""
    has_table = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if not has_table:
        return 0
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema to SCHEMA_VERSION; returns the version it started from.

    One write transaction for all steps, so several processes opening the file at
    once neither race nor see half a migration (a failed step leaves it untouched)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        start = schema_version(conn)
        if start > SCHEMA_VERSION:
            raise SdserveError(
                f"database schema v{start} is newer than this sdserve (v{SCHEMA_VERSION})"
            )
        # Sorted, not a range: versions are assigned to work done in parallel, so a
        # build may hold v5 before v4 lands; each applies once, in order. Missing, not
        # "above the highest": a database made at v5 still gets v4 when it lands.
        applied = _applied(conn) if start else set()
        for version in sorted(v for v in MIGRATIONS if v not in applied):
            for statement in _statements(MIGRATIONS[version]):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return start


def _applied(conn: sqlite3.Connection) -> set[int]:
    return {int(r[0]) for r in conn.execute("SELECT version FROM schema_version")}


def _statements(script: str) -> list[str]:
    """Split a script into statements (executescript() would COMMIT our transaction;
    a naive split on ';' would cut trigger bodies)."""
    out, buf = [], ""
    for line in script.splitlines(keepends=True):
        if line.lstrip().startswith("--"):
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    return out


def sql_value(value: Any) -> Any:
    """Python value -> SQLite parameter (models as JSON, enums as text, bools as 0/1)."""
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, bool):
        return int(value)
    return value


def row_to_job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"],
        spec=JobSpec.model_validate_json(row["spec"]),
        status=JobStatus(row["status"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        updated_at=row["updated_at"],
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        progress_step=row["progress_step"],
        progress_total=row["progress_total"],
        cancel_requested=bool(row["cancel_requested"]),
        dead_lettered=bool(row["dead_lettered"]),
        callback_url=row["callback_url"],
        idempotency_key=row["idempotency_key"],
        request_hash=row["request_hash"],
        owner=row["owner"],
        lease_owner=row["lease_owner"],
        lease_expires_at=row["lease_expires_at"],
        result=JobResult.model_validate_json(row["result"]) if row["result"] else None,
        error=JobError.model_validate_json(row["error"]) if row["error"] else None,
        available_at=row["available_at"],
        batch_size=row["batch_size"],
        solo=bool(row["solo"]),
        workflow_id=row["workflow_id"],
        workflow_step=row["workflow_step"],
    )


def job_values(job: Job, columns: tuple[str, ...]) -> list[Any]:
    """A Job's values for ``columns``, as SQLite parameters."""
    return [sql_value(getattr(job, col)) for col in columns]


def row_to_outbox(row: sqlite3.Row) -> OutboxEntry:
    return OutboxEntry(
        id=row["id"],
        job_id=row["job_id"],
        url=row["url"],
        payload=json.loads(row["payload"]),
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        created_at=row["created_at"],
        last_error=row["last_error"],
        status=row["status"],
    )
