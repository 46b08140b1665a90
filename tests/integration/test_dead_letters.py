"""Dead letters over HTTP (admin API, real uvicorn) and from the CLI: list, inspect,
redrive, purge; a purge neither re-sends the webhook nor forgets the job."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from sdserve.domain.jobs import Job, JobError, NewJob
from sdserve.queue.base import JobQueue
from sdserve.queue.sqlite import SqliteQueue
from sdserve.security.audit import AuditQuery
from sdserve.security.keys import Role
from sdserve.testing import job_spec
from tests.integration.live import LiveService


def _dead_letter(q: JobQueue, prompt: str, callback: str | None = None) -> Job:
    job, _ = q.enqueue(
        NewJob(spec=job_spec(prompt=prompt), max_attempts=1, owner="acme", callback_url=callback)
    )
    assert [j.id for j in q.claim_batch("w", 1, 30).jobs] == [job.id]
    q.fail(job.id, "w", JobError(type="generation_failed", message="boom"), retryable=True)
    return job


def test_admin_api_lists_inspects_redrives_and_purges(
    live_factory: Callable[..., LiveService],
) -> None:
    svc = live_factory(auth="on", queue_backend="sqlite")
    q = svc.services.queue
    first = _dead_letter(q, "one", callback="https://example.com/hook")
    second = _dead_letter(q, "two")
    third = _dead_letter(q, "three")
    outbox_before = len(q.outbox_due(limit=100))
    admin = svc.services.keys.create("ops", Role.admin).key
    user = svc.services.keys.create("acme", Role.user).key
    with svc.client(headers={"X-API-Key": admin}) as c:
        listed = c.get("/v1/admin/dead-letters").json()["data"]
        assert {j["id"] for j in listed} == {first.id, second.id, third.id}
        assert all(j["error"]["type"] == "generation_failed" for j in listed)
        assert all(j["attempts"] == 1 and j["tenant"] == "acme" for j in listed)

        one = c.get(f"/v1/admin/dead-letters/{first.id}").json()
        assert one["request"]["prompt"] == "one" and one["dead_lettered"] is True

        redriven = c.post(f"/v1/admin/dead-letters/{second.id}/redrive").json()
        assert redriven["status"] == "queued" and redriven["attempts"] == 0
        assert c.get(f"/v1/admin/dead-letters/{second.id}").status_code == 404

        purged = c.delete(f"/v1/admin/dead-letters/{first.id}").json()
        assert purged["status"] == "failed" and purged["dead_lettered"] is False
        assert c.get(f"/v1/admin/jobs/{first.id}").json()["status"] == "failed"  # kept
        assert len(q.outbox_due(limit=100)) == outbox_before  # no second webhook

        everything = c.delete("/v1/admin/dead-letters").json()
        assert everything["purged"] == 1 and everything["ids"] == [third.id]
        assert c.get("/v1/admin/dead-letters").json()["data"] == []

        missing = c.post("/v1/admin/dead-letters/job_nope/redrive")
        assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found"
        too_many = c.get("/v1/admin/dead-letters", params={"limit": 10_000})
        assert too_many.status_code == 422
        assert too_many.json()["error"]["fields"][0]["field"] == "limit"
    with svc.client(headers={"X-API-Key": user}) as c:
        assert c.get("/v1/admin/dead-letters").status_code == 403
    actions = [e.action for e in svc.services.audit.query(AuditQuery(limit=1000))]
    for action in ("dead_letter.redrive", "dead_letter.purge", "dead_letter.purge_all"):
        assert action in actions, actions


def _cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, SDSERVE_DATA_DIR=str(data_dir))
    return subprocess.run(
        [sys.executable, "-m", "sdserve", "jobs", *args], env=env, capture_output=True, text=True
    )


def test_cli_inspects_redrives_and_purges(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    q = SqliteQueue(data / "sdserve.db")
    a, b, c = (_dead_letter(q, p) for p in ("a", "b", "c"))
    q.close()
    shown = _cli(data, "inspect", a.id)
    assert shown.returncode == 0 and '"dead_lettered": true' in shown.stdout
    assert _cli(data, "redrive", a.id).returncode == 0
    assert _cli(data, "purge", b.id).stdout.strip() == "purged 1 dead letter(s)"
    assert _cli(data, "purge").returncode == 2  # neither an id nor --all
    assert _cli(data, "purge", "--all").stdout.strip() == "purged 1 dead letter(s)"
    assert _cli(data, "dead-letters").stdout.strip() == ""
    assert _cli(data, "purge", a.id).returncode == 1  # queued again: not a dead letter
    assert c.id not in _cli(data, "dead-letters").stdout
