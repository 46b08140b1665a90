"""Retention: the sweeper that deletes what has outlived its TTL, in the API process.

Today it prunes audit entries older than SDSERVE_RETENTION_AUDIT_SECONDS (the oldest
first, so the rest of the chain still verifies from the new anchor) and records each
sweep that deleted something as an audit entry of its own. Time comes from
``services.clock``, so tests step a clock instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool

if TYPE_CHECKING:
    from sdserve.api.services import Services

log = logging.getLogger("sdserve.retention")


@dataclass(frozen=True)
class SweepReport:
    audit_entries: int = 0

    @property
    def deleted(self) -> int:
        return self.audit_entries


def enabled(services: Services) -> bool:
    return services.settings.retention_audit_seconds > 0


def sweep(services: Services, now: float | None = None) -> SweepReport:
    """One pass; returns what it deleted."""
    ts = services.clock() if now is None else now
    settings = services.settings
    pruned = 0
    if settings.retention_audit_seconds > 0:
        pruned = services.audit.prune_before(ts - settings.retention_audit_seconds)
    report = SweepReport(audit_entries=pruned)
    if report.deleted:
        services.audit.append(
            "retention.sweep",
            "audit",
            actor="system",
            tenant=None,
            details={"audit_entries": pruned, "ttl_seconds": settings.retention_audit_seconds},
            now=ts,
        )
        log.info("retention sweep deleted %d audit entries", pruned)
    return report


async def run(services: Services, stop: asyncio.Event) -> None:
    """Sweep every SDSERVE_RETENTION_SWEEP_INTERVAL_SECONDS until ``stop``; a failed pass
    is logged and retried at the next interval (the store may be briefly away)."""
    interval = services.settings.retention_sweep_interval_seconds
    while not stop.is_set():
        try:
            await run_in_threadpool(sweep, services)
        except Exception:
            log.exception("retention sweep failed; retrying in %g s", interval)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)


def start(services: Services, stop: asyncio.Event) -> asyncio.Task[None] | None:
    """The sweeper task, when any TTL is set (none: nothing to sweep, no task)."""
    return asyncio.create_task(run(services, stop)) if enabled(services) else None
