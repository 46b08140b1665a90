"""Retention on a clock the test steps: the sweeper prunes audit entries past their TTL
(the rest still verifies), records the deletion, and runs inside the API process."""

from __future__ import annotations

import time
from collections.abc import Callable

from sdserve.security import retention
from sdserve.security.audit import AuditQuery
from sdserve.security.keys import Role
from tests.integration.live import LiveService

Factory = Callable[..., LiveService]


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_audit_entries_expire_and_the_sweep_is_audited(live_factory: Factory) -> None:
    clock = Clock()
    svc = live_factory(auth="on", queue_backend="sqlite", retention_audit_seconds=3600, clock=clock)
    admin = svc.services.keys.create("ops", Role.admin).key
    with svc.client(headers={"X-API-Key": admin}) as a:
        for tenant in ("t1", "t2"):
            assert a.post("/v1/admin/keys", json={"tenant": tenant}).status_code == 201
        clock.t += 1800
        assert a.post("/v1/admin/keys", json={"tenant": "t3"}).status_code == 201
        clock.t += 1800
        assert retention.sweep(svc.services).deleted == 0  # exactly an hour old: kept
        clock.t += 1
        report = retention.sweep(svc.services)
        assert report.audit_entries == 2
        entries = svc.services.audit.query(AuditQuery())
        assert [(e.seq, e.action) for e in entries] == [(3, "key.create"), (4, "retention.sweep")]
        assert entries[1].actor == "system" and entries[1].details["audit_entries"] == 2
        assert a.get("/v1/admin/audit/verify").json() == {
            "object": "audit_verification",
            "ok": True,
            "checked": 2,
            "first_bad_seq": None,
            "reason": "",
        }


def test_the_sweeper_runs_in_the_api_process(live_factory: Factory) -> None:
    old = time.time() - 7200
    svc = live_factory(
        auth="on", retention_audit_seconds=3600, retention_sweep_interval_seconds=0.05
    )
    svc.services.audit.append("key.create", "x", actor="cli", tenant="x", now=old)
    deadline = time.monotonic() + 10
    while svc.services.audit.query(AuditQuery(action="key.create")):
        assert time.monotonic() < deadline, "the sweeper never pruned the old entry"
        time.sleep(0.02)
    assert svc.services.audit.verify().ok


def _key(svc: LiveService, tenant: str, role: Role = Role.user) -> dict[str, str]:
    return {"X-API-Key": svc.services.keys.create(tenant, role).key}


def _finished_job(svc: LiveService, headers: dict[str, str], prompt: str) -> str:
    with svc.client(headers=headers) as c:
        job_id: str = c.post("/v1/jobs", json={"prompt": prompt, "num_inference_steps": 2}).json()[
            "id"
        ]
        deadline = time.monotonic() + 60
        while c.get(f"/v1/jobs/{job_id}").json()["status"] != "succeeded":
            assert time.monotonic() < deadline, f"job {job_id} never succeeded"
            time.sleep(0.02)
    return job_id


def _images(svc: LiveService, job_id: str) -> list[str]:
    job = svc.services.queue.get(job_id)
    assert job is not None and job.result is not None
    return [im.id for im in job.result.images]


def test_prompts_and_jobs_expire_per_tenant_with_their_images(live_factory: Factory) -> None:
    from sdserve.engine.fake import FakeEngine

    clock = Clock(time.time())
    svc = live_factory(
        auth="on",
        queue_backend="sqlite",
        retention_prompts_seconds=100,
        retention_jobs_seconds=1000,
        retention_overrides={"beta": {"jobs": 50}},
        clock=clock,
    )
    svc.start_workers(FakeEngine())
    acme, beta = _key(svc, "acme"), _key(svc, "beta")
    a_job, b_job = _finished_job(svc, acme, "a secret plan"), _finished_job(svc, beta, "b")
    a_imgs, b_imgs = _images(svc, a_job), _images(svc, b_job)
    blobs = svc.services.blobs
    assert all(blobs.exists(i, tenant="acme") for i in a_imgs)

    clock.t += 60
    report = retention.sweep(svc.services)
    assert (report.jobs, report.prompts) == (1, 0)
    assert report.images == len(b_imgs)
    assert svc.services.queue.get(b_job) is None
    assert not any(blobs.exists(i, tenant="beta") for i in b_imgs)
    with svc.client(headers=acme) as c:
        assert c.get(f"/v1/jobs/{a_job}").json()["parameters"]["prompt"] == "a secret plan"

    clock.t += 100
    assert retention.sweep(svc.services).prompts == 1
    with svc.client(headers=acme) as c:
        view = c.get(f"/v1/jobs/{a_job}").json()
        assert view["parameters"]["prompt"] == "[redacted]" and view["status"] == "succeeded"
        assert c.get(view["result"]["images"][0]["url"]).status_code == 200
    assert retention.sweep(svc.services).deleted == 0  # nothing new to do

    clock.t += 1000
    assert retention.sweep(svc.services).jobs == 1
    with svc.client(headers=acme) as c:
        assert c.get(f"/v1/jobs/{a_job}").status_code == 404
    assert not any(blobs.exists(i, tenant="acme") for i in a_imgs)
    sweeps = svc.services.audit.query(AuditQuery(action="retention.sweep"))
    assert [(e.details["jobs"], e.details["prompts"]) for e in sweeps] == [(1, 0), (0, 1), (1, 0)]
    assert svc.services.audit.verify().ok


def test_images_expire_before_their_jobs_per_tenant(live_factory: Factory) -> None:
    from sdserve.engine.fake import FakeEngine

    clock = Clock(time.time())
    svc = live_factory(
        auth="on",
        queue_backend="sqlite",
        retention_images_seconds=100,
        retention_jobs_seconds=10_000,
        retention_overrides={"beta": {"images": 30}},
        clock=clock,
    )
    svc.start_workers(FakeEngine())
    acme, beta = _key(svc, "acme"), _key(svc, "beta")
    a_job, b_job = _finished_job(svc, acme, "a"), _finished_job(svc, beta, "b")
    a_imgs, b_imgs = _images(svc, a_job), _images(svc, b_job)
    blobs = svc.services.blobs
    with svc.client(headers=beta) as c:
        b_url = c.get(f"/v1/jobs/{b_job}").json()["result"]["images"][0]["url"]
        assert c.get(b_url).status_code == 200

    clock.t += 60  # past beta's 30 s, not the default 100 s
    report = retention.sweep(svc.services)
    assert (report.images, report.jobs, report.prompts) == (len(b_imgs), 0, 0)
    assert not any(blobs.exists(i, tenant="beta") for i in b_imgs)
    assert all(blobs.exists(i, tenant="acme") for i in a_imgs)
    with svc.client(headers=beta) as c:
        view = c.get(f"/v1/jobs/{b_job}").json()
        assert view["status"] == "succeeded" and view["parameters"]["prompt"] == "b"
        assert view["result"]["images"][0] == {
            "id": None,
            "url": None,
            "seed": view["result"]["seed_used"],
            "withheld": False,
            "reason": None,
            "expired": True,
        }
        assert c.get(b_url).status_code == 404

    clock.t += 60
    assert retention.sweep(svc.services).images == len(a_imgs)
    assert not any(blobs.exists(i, tenant="acme") for i in a_imgs)
    assert retention.sweep(svc.services).deleted == 0  # nothing new to do
    with svc.client(headers=acme) as c:
        assert c.get(f"/v1/jobs/{a_job}").json()["result"]["images"][0]["expired"] is True

    clock.t += 10_000  # the records go too, with no image left to count
    assert (retention.sweep(svc.services).jobs, svc.services.queue.get(a_job)) == (2, None)
    sweeps = svc.services.audit.query(AuditQuery(action="retention.sweep"))
    assert [(e.details["images"], e.details["jobs"]) for e in sweeps] == [
        (len(b_imgs), 0),
        (len(a_imgs), 0),
        (0, 2),
    ]
    assert svc.services.audit.verify().ok


def test_erasure_deletes_a_tenants_data_and_is_audited(live_factory: Factory) -> None:
    from sdserve.engine.fake import FakeEngine

    svc = live_factory(auth="on", queue_backend="sqlite")
    svc.start_workers(FakeEngine())
    acme, beta, admin = _key(svc, "acme"), _key(svc, "beta"), _key(svc, "ops", Role.admin)
    done_job = _finished_job(svc, acme, "mine")
    kept_job = _finished_job(svc, beta, "theirs")
    imgs = _images(svc, done_job)
    with svc.client(headers=acme) as c:
        assert c.post("/v1/admin/tenants/acme/erase").status_code == 403
    with svc.client(headers=admin) as c:
        out = c.post("/v1/admin/tenants/acme/erase").json()
        assert out["object"] == "erasure" and out["tenant"] == "acme"
        assert out["jobs"] == 1 and out["images"] >= len(imgs) and out["still_running"] == 0
        assert c.post("/v1/admin/tenants/..%2F/erase").status_code in (404, 422)
        entries = c.get("/v1/admin/audit", params={"action": "tenant.erase"}).json()["data"]
        assert [(e["tenant"], e["details"]["jobs"], e["outcome"]) for e in entries] == [
            ("acme", 1, "ok")
        ]
    with svc.client(headers=acme) as c:
        assert c.get(f"/v1/jobs/{done_job}").status_code == 404
        assert c.get("/v1/jobs").json()["data"] == []
    assert not any(svc.services.blobs.exists(i, tenant="acme") for i in imgs)
    with svc.client(headers=beta) as c:
        assert c.get(f"/v1/jobs/{kept_job}").json()["status"] == "succeeded"
