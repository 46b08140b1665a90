"""Retention: the sweeper that deletes what has outlived its TTL, in the API process.

It blanks the prompts of finished jobs older than SDSERVE_RETENTION_PROMPTS_SECONDS,
deletes the images and inputs of finished jobs older than
SDSERVE_RETENTION_IMAGES_SECONDS (the jobs stay, their images shown as expired),
deletes finished jobs (and workflows) older than SDSERVE_RETENTION_JOBS_SECONDS with
their images and inputs, per-tenant overrides first; and prunes audit entries older
than SDSERVE_RETENTION_AUDIT_SECONDS (the oldest first, so the rest of the chain still
verifies from the new anchor). Each sweep that deleted something is audited.
``erase_tenant`` is the erasure request: everything of one tenant, now. Time comes from
``services.clock``, so tests step a clock instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool

from sdserve.config import Settings
from sdserve.domain.errors import SdserveError
from sdserve.domain.jobs import Job, JobError, JobStatus
from sdserve.domain.tenants import checked_tenant
from sdserve.queue.base import ListFilter
from sdserve.queue.purge import PurgeFilter

if TYPE_CHECKING:
    from sdserve.api.services import Services

log = logging.getLogger("sdserve.retention")


@dataclass(frozen=True)
class SweepReport:
    audit_entries: int = 0
    prompts: int = 0
    jobs: int = 0
    workflows: int = 0
    images: int = 0

    @property
    def deleted(self) -> int:
        return self.audit_entries + self.prompts + self.jobs + self.workflows + self.images


RETENTION_KINDS = ("prompts", "jobs", "images")


@dataclass(frozen=True)
class TenantTTL:
    prompts: int
    jobs: int
    images: int = 0


def tenant_ttls(settings: Settings) -> dict[str, TenantTTL]:
    """The per-tenant overrides, checked (a bad one fails at start-up)."""
    out: dict[str, TenantTTL] = {}
    for tenant, values in settings.retention_overrides.items():
        checked_tenant(tenant)
        unknown = set(values) - set(RETENTION_KINDS)
        if unknown:
            raise ValueError(
                f"retention override {tenant}: unknown {sorted(unknown)} "
                f"(known: {', '.join(RETENTION_KINDS)})"
            )
        if any(not isinstance(v, int) or v < 0 for v in values.values()):
            raise ValueError(f"retention override {tenant}: TTLs are seconds >= 0 (0: kept)")
        out[tenant] = TenantTTL(
            values.get("prompts", settings.retention_prompts_seconds),
            values.get("jobs", settings.retention_jobs_seconds),
            values.get("images", settings.retention_images_seconds),
        )
    return out


def enabled(services: Services) -> bool:
    s = services.settings
    return bool(
        s.retention_audit_seconds
        or s.retention_prompts_seconds
        or s.retention_jobs_seconds
        or s.retention_images_seconds
        or any(any(v.values()) for v in s.retention_overrides.values())
    )


def delete_job_blobs(services: Services, jobs: list[Job]) -> int:
    """Delete the images and stored inputs of purged jobs; returns how many existed."""
    count = 0
    for job in jobs:
        ids = [im.id for im in job.result.images] if job.result is not None else []
        ids += [i for i in (job.spec.image, job.spec.mask) if i]
        for image_id in ids:
            count += services.blobs.delete(image_id, tenant=job.owner)
    return count


@dataclass
class _Tally:
    prompts: int = 0
    jobs: int = 0
    workflows: int = 0
    images: int = 0


def purge_all(services: Services, flt: PurgeFilter, tally: _Tally) -> None:
    """``purge`` until nothing more matches, deleting blobs as jobs go."""
    while True:
        out = services.queue.purge(flt)
        if flt.redact_prompts:
            tally.prompts += len(out.jobs)
        elif flt.expire_images:
            tally.images += delete_job_blobs(services, out.jobs)
        else:
            tally.jobs += len(out.jobs)
            tally.workflows += len(out.workflows)
            tally.images += delete_job_blobs(services, out.jobs)
        if not out.more:
            return


def sweep(services: Services, now: float | None = None) -> SweepReport:
    """One pass; returns what it deleted (and audits it)."""
    ts = services.clock() if now is None else now
    settings = services.settings
    overrides = tenant_ttls(settings)
    scopes: list[tuple[PurgeFilter, TenantTTL]] = [
        (
            PurgeFilter(except_owners=tuple(overrides)),
            TenantTTL(
                settings.retention_prompts_seconds,
                settings.retention_jobs_seconds,
                settings.retention_images_seconds,
            ),
        )
    ]
    scopes += [(PurgeFilter(owners=(t,)), ttl) for t, ttl in overrides.items()]
    tally = _Tally()
    for base, ttl in scopes:
        if ttl.prompts:
            flt = replace(base, finished_before=ts - ttl.prompts, redact_prompts=True)
            purge_all(services, flt, tally)
        if ttl.images and (not ttl.jobs or ttl.images < ttl.jobs):
            flt = replace(base, finished_before=ts - ttl.images, expire_images=True)
            purge_all(services, flt, tally)
        if ttl.jobs:
            purge_all(services, replace(base, finished_before=ts - ttl.jobs), tally)
    pruned = 0
    if settings.retention_audit_seconds > 0:
        pruned = services.audit.prune_before(ts - settings.retention_audit_seconds)
    report = SweepReport(pruned, tally.prompts, tally.jobs, tally.workflows, tally.images)
    if report.deleted:
        services.audit.append(
            "retention.sweep",
            "retention",
            actor="system",
            tenant=None,
            details={
                "audit_entries": report.audit_entries,
                "prompts": report.prompts,
                "jobs": report.jobs,
                "workflows": report.workflows,
                "images": report.images,
            },
            now=ts,
        )
        log.info("retention sweep: %s", report)
    return report


@dataclass(frozen=True)
class Erasure:
    tenant: str
    canceled: int
    jobs: int
    workflows: int
    images: int
    still_running: int  # asked to stop; erase again once they have

    def public(self) -> dict[str, object]:
        return {"object": "erasure", **asdict(self)}


def erase_tenant(services: Services, tenant: str, actor: str) -> Erasure:
    """Cancel the tenant's queued and running work, purge every finished job and
    workflow with their images and inputs, drop every blob stored under the tenant,
    and audit it. A job a worker is running stops at its next step; it is reported in
    ``still_running`` and goes on the next erasure (or sweep)."""
    checked_tenant(tenant)
    ts = services.clock()
    canceled, running = 0, 0
    for status in (JobStatus.queued, JobStatus.running, JobStatus.held):
        cursor = None
        while True:
            page = services.queue.list_jobs(
                ListFilter(status=status, owner=tenant, limit=200, cursor=cursor)
            )
            for job in page.jobs:
                if job.workflow_id is not None:
                    with contextlib.suppress(SdserveError):
                        services.queue.cancel_workflow(job.workflow_id, now=ts)
                if job.status is JobStatus.held and job.result is not None:
                    # Held for review: ended as rejected, so the purge below takes it.
                    erased = JobError(type="canceled", message="the tenant's data was erased")
                    after = services.queue.review(job.id, False, job.result, erased, now=ts)
                else:
                    after = services.queue.cancel(job.id, now=ts)
                canceled += 1
                running += after.status is JobStatus.running
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    tally = _Tally()
    purge_all(services, PurgeFilter(owners=(tenant,)), tally)
    images = tally.images + services.blobs.delete_tenant(tenant)
    result = Erasure(tenant, canceled, tally.jobs, tally.workflows, images, running)
    services.audit.append(
        "tenant.erase",
        tenant,
        actor=actor,
        tenant=tenant,
        details={k: v for k, v in asdict(result).items() if k != "tenant"},
        now=ts,
    )
    return result


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
