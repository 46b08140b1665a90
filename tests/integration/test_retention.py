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
