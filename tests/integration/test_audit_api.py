"""The audit trail over real HTTP on the SQLite store: generations and admin actions
(including refused ones) are recorded with who, what, on whose data and the outcome;
admins list them; `sdserve audit verify` passes, and after tampering with the file
exits non-zero naming the first bad entry."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from sdserve.security.keys import Role
from tests.integration.live import LiveService

Factory = Callable[..., LiveService]


def _cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, SDSERVE_DATA_DIR=str(data_dir), SDSERVE_QUEUE_BACKEND="sqlite")
    return subprocess.run(
        [sys.executable, "-m", "sdserve", "audit", *args], env=env, capture_output=True, text=True
    )


def test_actions_are_audited_listed_and_verified(live_factory: Factory) -> None:
    svc = live_factory(auth="on", queue_backend="sqlite")
    admin = svc.services.keys.create("ops", Role.admin)
    with svc.client(headers={"X-API-Key": admin.key}) as a:
        made = a.post("/v1/admin/keys", json={"tenant": "acme", "role": "user"}).json()
        with svc.client(headers={"X-API-Key": made["key"]}) as u:
            job = u.post("/v1/jobs", json={"prompt": "a cat", "num_inference_steps": 2}).json()
            assert u.get("/v1/admin/audit").status_code == 403  # admins only
        assert a.delete(f"/v1/admin/keys/{made['id']}").status_code == 200
        # Refused: the last admin key. Recorded with the refusal's type.
        assert a.delete(f"/v1/admin/keys/{admin.record.id}").status_code == 409
        entries = a.get("/v1/admin/audit").json()["data"]
        seen = [(e["action"], e["actor"], e["tenant"], e["target"], e["outcome"]) for e in entries]
        assert seen == [
            ("key.create", admin.record.id, "acme", "acme", "ok"),
            ("job.create", made["id"], "acme", job["id"], "ok"),
            ("key.revoke", admin.record.id, "acme", made["id"], "ok"),
            ("key.revoke", admin.record.id, "ops", admin.record.id, "conflict"),
        ]
        assert entries[0]["details"]["key_id"] == made["id"]
        assert "prompt" not in entries[1]["details"] and made["key"] not in str(entries)
        only = a.get("/v1/admin/audit", params={"action": "key.revoke", "after": 3}).json()
        assert [e["seq"] for e in only["data"]] == [4]
        assert a.get("/v1/admin/audit/verify").json()["ok"] is True
        assert a.get("/v1/admin/audit", params={"limit": 0}).status_code == 422

    data_dir = svc.services.settings.data_dir
    ok = _cli(data_dir, "verify")
    assert ok.returncode == 0 and "4 entries verified" in ok.stdout
    listed = _cli(data_dir, "list", "--tenant", "acme")
    assert listed.returncode == 0 and len(listed.stdout.splitlines()) == 3

    conn = sqlite3.connect(svc.services.settings.resolved_database_path)
    try:
        conn.execute("UPDATE audit_log SET outcome = 'x' WHERE seq = 2")
        raise AssertionError("the append-only trigger let an UPDATE through")
    except sqlite3.IntegrityError as exc:
        assert "append-only" in str(exc)
    conn.execute("DROP TRIGGER audit_log_append_only")
    conn.execute("UPDATE audit_log SET outcome = 'ok' WHERE seq = 4")
    conn.commit()
    conn.close()
    broken = _cli(data_dir, "verify")
    assert broken.returncode == 1
    assert "BROKEN at entry 4" in broken.stderr and "edited" in broken.stderr


def _sdserve(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, SDSERVE_DATA_DIR=str(data_dir), SDSERVE_QUEUE_BACKEND="sqlite")
    return subprocess.run(
        [sys.executable, "-m", "sdserve", *args], env=env, capture_output=True, text=True
    )


def test_cli_key_actions_are_audited(tmp_path: Path) -> None:
    data = tmp_path / "data"
    made = _sdserve(data, "keys", "create", "--tenant", "acme")
    assert made.returncode == 0, made.stderr
    assert _sdserve(data, "keys", "revoke", "nosuchkey").returncode == 1
    listed = _sdserve(data, "audit", "list")
    rows = [line.split("\t") for line in listed.stdout.splitlines()]
    assert [(r[0], r[2], r[3], r[4], r[6]) for r in rows] == [
        ("1", "cli", "acme", "key.create", "ok"),
        ("2", "cli", "-", "key.revoke", "not_found"),
    ]
    assert made.stdout.strip() not in listed.stdout
    assert _sdserve(data, "audit", "verify").returncode == 0


def test_cli_erase_needs_yes_and_is_audited(tmp_path: Path) -> None:
    from sdserve.domain.jobs import NewJob
    from sdserve.queue.sqlite import SqliteQueue
    from sdserve.testing import job_spec

    data = tmp_path / "data"
    data.mkdir()
    queue = SqliteQueue(data / "sdserve.db")
    job, _ = queue.enqueue(NewJob(spec=job_spec(), owner="acme"))
    queue.close()
    refused = _sdserve(data, "tenants", "erase", "acme")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    done = _sdserve(data, "tenants", "erase", "acme", "--yes")
    assert done.returncode == 0, done.stderr
    assert "acme: 1 jobs" in done.stdout and "1 canceled" in done.stdout
    queue = SqliteQueue(data / "sdserve.db")
    assert queue.get(job.id) is None
    queue.close()
    listed = _sdserve(data, "audit", "list", "--action", "tenant.erase")
    assert listed.stdout.split("\t")[2:5] == ["cli", "acme", "tenant.erase"]
