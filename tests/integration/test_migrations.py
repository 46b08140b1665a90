"""A data dir written by release 0.1.0 (schema v1) opens under this release with its
jobs, images, idempotency keys and webhook outbox intact."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from sdserve.domain.jobs import JobStatus, NewJob
from sdserve.queue import sqlite_schema as schema
from sdserve.queue.sqlite import SqliteQueue
from sdserve.storage.local import LocalBlobStore
from sdserve.testing import job_spec

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "datadir_v1"


def _id(name: str) -> str:
    return f"job_v1{name:0>26}"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    target = tmp_path / "data"
    shutil.copytree(FIXTURE, target)
    return target


def test_fixture_is_a_v1_database() -> None:
    conn = sqlite3.connect(FIXTURE / "sdserve.db")
    try:
        assert schema.schema_version(conn) == 1
        cols = {r[1] for r in conn.execute("PRAGMA table_info(jobs)")}
        assert "workflow_id" not in cols
    finally:
        conn.close()


def test_v1_data_dir_opens_with_jobs_intact(data_dir: Path) -> None:
    q = SqliteQueue(data_dir / "sdserve.db")
    try:
        conn = sqlite3.connect(data_dir / "sdserve.db")
        assert schema.schema_version(conn) == schema.SCHEMA_VERSION
        conn.close()
        expected = {
            "queued": JobStatus.queued,
            "queuedhigh": JobStatus.queued,
            "idem": JobStatus.queued,
            "done": JobStatus.succeeded,
            "running": JobStatus.running,
            "dead": JobStatus.failed,
            "canceled": JobStatus.canceled,
        }
        for name, status in expected.items():
            job = q.get(_id(name))
            assert job is not None and job.status == status, name
            assert job.spec.prompt == f"v1 {name}" and job.spec.task.value == "txt2img"
        done = q.get(_id("done"))
        assert done is not None and done.result is not None
        blobs = LocalBlobStore(data_dir / "images")
        stored = [blobs.get(im.id) or b"" for im in done.result.images]
        assert [data[:8] for data in stored] == [b"\x89PNG\r\n\x1a\n"] * 2
        # The webhook entry written by v1 is still deliverable.
        (entry,) = q.outbox_claim(now=2e9)
        assert entry.job_id == _id("done") and entry.payload["event"] == "job.succeeded"
        # An idempotent retry sent to the old key still finds the old job.
        retry = NewJob(spec=job_spec(), idempotency_key="key-1", request_hash="h1")
        again, created = q.enqueue(retry)
        assert not created and again.id == _id("idem")
        # The job left running by v1 is reclaimed, and the queue keeps its order.
        assert q.reclaim_expired(every_lease=True) == [_id("running")]
        order = [j.id for j in q.claim_batch("w", 1, 30.0).jobs]
        assert order == [_id("queuedhigh")]
        (nxt,) = q.claim_batch("w", 1, 30.0).jobs
        assert nxt.id == _id("queued")
    finally:
        q.close()


def test_migration_is_idempotent_across_reopen(data_dir: Path) -> None:
    for _ in range(2):
        q = SqliteQueue(data_dir / "sdserve.db")
        assert q.get(_id("done")) is not None
        q.close()
    conn = sqlite3.connect(data_dir / "sdserve.db")
    versions = [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY 1")]
    conn.close()
    assert versions == sorted(schema.MIGRATIONS)


def test_newer_schema_is_refused(data_dir: Path) -> None:
    conn = sqlite3.connect(data_dir / "sdserve.db")
    conn.execute("INSERT INTO schema_version (version) VALUES (99)")
    conn.commit()
    conn.close()
    with pytest.raises(Exception, match="newer than this sdserve"):
        SqliteQueue(data_dir / "sdserve.db")


def test_v1_data_dir_gains_the_key_tables_empty(data_dir: Path) -> None:
    SqliteQueue(data_dir / "sdserve.db").close()
    conn = sqlite3.connect(data_dir / "sdserve.db")
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"api_keys", "tenants"} <= tables
        assert conn.execute("SELECT count(*) FROM api_keys").fetchone()[0] == 0
    finally:
        conn.close()


def test_v1_images_are_served_with_auth_off(data_dir: Path, tmp_path: Path) -> None:
    """0.1 had no tenants: its images have none, and auth off serves them by id."""
    from sdserve.config import Settings
    from sdserve.testing import free_port
    from tests.integration.live import start_live

    settings = Settings(data_dir=data_dir, queue_backend="sqlite", auth="off", port=free_port())
    svc = start_live(settings)
    try:
        with svc.client() as c:
            done = c.get(f"/v1/jobs/{_id('done')}").json()
            for image in done["result"]["images"]:
                r = c.get(image["url"])
                assert r.status_code == 200 and r.content.startswith(b"\x89PNG")
    finally:
        svc.stop()


def test_a_version_that_lands_late_is_still_applied(tmp_path: Path) -> None:
    """Versions are assigned to parallel work: a database made by a build holding v5
    but not v4 gets v4 when it arrives."""
    db = tmp_path / "late.db"
    conn = schema.connect(db, "FULL")
    late = dict(schema.MIGRATIONS)
    del late[4]
    saved = schema.MIGRATIONS
    try:
        schema.MIGRATIONS = late
        schema.migrate(conn)
    finally:
        schema.MIGRATIONS = saved
    assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'audit_log'").fetchone()
    schema.migrate(conn)
    assert conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'audit_log'").fetchone()
    versions = [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY 1")]
    assert versions == sorted(schema.MIGRATIONS)
    conn.close()
