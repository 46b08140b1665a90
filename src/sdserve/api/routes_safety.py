"""Review and appeal (docs/safety.md).

Admins (``/v1/admin/safety``): list held jobs, approve one (its images leave the
quarantine and are served) or reject it (its images are deleted; the job fails
``content_policy_violation``), read the safety record, decide appeals, and set a
tenant's prompt-policy threshold. Users (``/v1/safety/appeals``): appeal a rejected
job or a refused prompt once, with a note. Every decision is recorded with who and when.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from sdserve.api.auth import Admin, Principal, Writer
from sdserve.api.routes_native import job_view
from sdserve.api.services import Services, services_of
from sdserve.api.submit import get_job
from sdserve.domain.errors import Conflict, InvalidRequest, NotFound
from sdserve.domain.jobs import Job, JobError, JobStatus
from sdserve.domain.tenants import checked_tenant
from sdserve.queue.base import ListFilter
from sdserve.safety.records import SafetyRecord
from sdserve.safety.service import safety_of
from sdserve.worker.moderation import CONTENT_POLICY

admin = APIRouter(prefix="/v1/admin/safety", tags=["safety"])
user = APIRouter(prefix="/v1/safety", tags=["safety"])
MAX_NOTE = 2000


class ReviewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field("", max_length=MAX_NOTE)


class AppealRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    subject: str = Field(
        max_length=64, description="a rejected job's id, or a prompt refusal's decision_id"
    )
    note: str = Field(min_length=1, max_length=MAX_NOTE)


class AppealDecisionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decision: Literal["granted", "denied"]
    note: str = Field("", max_length=MAX_NOTE)


class ThresholdRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt_threshold: float | None = Field(
        ge=0.0, le=1.0, description="null: back to SDSERVE_PROMPT_POLICY_THRESHOLD"
    )


def actor(principal: Principal) -> str:
    return f"key:{principal.key_id}" if principal.key_id else "open"


def _listing(records: list[SafetyRecord]) -> dict[str, Any]:
    return {"object": "list", "data": [r.public() for r in records]}


# --- admin: held jobs ---


@admin.get("/held")
async def list_held(
    request: Request, principal: Admin, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> dict[str, Any]:
    """Jobs held for review, every tenant's."""
    services = services_of(request)
    page = await run_in_threadpool(
        services.queue.list_jobs, ListFilter(status=JobStatus.held, limit=limit)
    )
    views = [await job_view(services, j) | {"owner": j.owner} for j in page.jobs]
    return {"object": "list", "data": views}


async def _held(services: Services, job_id: str) -> Job:
    job = await run_in_threadpool(services.queue.get, job_id)
    if job is None:
        raise NotFound(f"no job with id {job_id[:64]!r}")
    if job.status is not JobStatus.held or job.result is None:
        raise Conflict(f"job {job_id} is {job.status.value}, not held for review")
    return job


def _approve(services: Services, job: Job) -> Job:
    assert job.result is not None
    quarantine = safety_of(services).quarantine
    images = []
    for im in job.result.images:
        if not quarantine.release(im.id, job.owner):
            raise Conflict(f"job {job.id}: image {im.id} is no longer in quarantine")
        images.append(im.model_copy(update={"withheld": False}))
    result = job.result.model_copy(update={"images": images})
    try:
        return services.queue.review(job.id, True, result)
    except Exception:
        # Rejected meanwhile (or the store failed): nothing may stay served.
        for im in images:
            services.blobs.delete(im.id, tenant=job.owner)
        raise


def _reject(services: Services, job: Job, reviewer: str) -> Job:
    assert job.result is not None
    error = JobError(
        type=CONTENT_POLICY, message=f"rejected on review ({reviewer}); the images were deleted"
    )
    done = services.queue.review(job.id, False, job.result, error)
    for im in job.result.images:  # after the transition: never served either way
        safety_of(services).quarantine.delete(im.id, job.owner)
    return done


@admin.post("/jobs/{job_id}/{decision}")
async def review_job(
    job_id: str,
    decision: Literal["approve", "reject"],
    request: Request,
    principal: Admin,
    body: ReviewRequest | None = None,
) -> dict[str, Any]:
    """Approve (images released) or reject (images deleted) a held job."""
    services = services_of(request)
    job = await _held(services, job_id)
    who = actor(principal)
    if decision == "approve":
        done = await run_in_threadpool(_approve, services, job)
    else:
        done = await run_in_threadpool(_reject, services, job, who)
    record = SafetyRecord(
        kind="review",
        subject=job.id,
        tenant=job.owner,
        outcome="approved" if decision == "approve" else "rejected",
        actor=who,
        note=(body.note if body else ""),
    )
    await run_in_threadpool(safety_of(services).log.add, record)
    services.wakeups.notify_job(job.id)
    return {"job": await job_view(services, done), "decision": record.public()}


# --- admin: the record, appeals, thresholds ---


@admin.get("/records")
async def list_records(
    request: Request,
    principal: Admin,
    kind: Annotated[str | None, Query(max_length=32)] = None,
    subject: Annotated[str | None, Query(max_length=64)] = None,
    tenant: Annotated[str | None, Query(max_length=63)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    log = safety_of(services_of(request)).log
    found = await run_in_threadpool(
        lambda: log.list(kind=kind, subject=subject, tenant=tenant, limit=limit)
    )
    return _listing(found)


def _decision_of(services: Services, appeal_id: str) -> SafetyRecord | None:
    found = safety_of(services).log.list(kind="appeal_decision", subject=appeal_id, limit=1)
    return found[0] if found else None


def _appeal_view(services: Services, appeal: SafetyRecord) -> dict[str, Any]:
    decision = _decision_of(services, appeal.id)
    out = appeal.public()
    out["status"] = decision.outcome if decision else "pending"
    out["decision"] = decision.public() if decision else None
    return out


@admin.get("/appeals")
async def list_appeals(
    request: Request,
    principal: Admin,
    status: Literal["pending", "granted", "denied"] | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    services = services_of(request)

    def views() -> list[dict[str, Any]]:
        appeals = safety_of(services).log.list(kind="appeal", limit=limit)
        out = [_appeal_view(services, a) for a in appeals]
        return [v for v in out if status is None or v["status"] == status]

    return {"object": "list", "data": await run_in_threadpool(views)}


@admin.post("/appeals/{appeal_id}")
async def decide_appeal(
    appeal_id: str, body: AppealDecisionRequest, request: Request, principal: Admin
) -> dict[str, Any]:
    """Grant or deny an appeal (once)."""
    services = services_of(request)
    log = safety_of(services).log

    def decide() -> dict[str, Any]:
        appeal = log.get(appeal_id)
        if appeal is None or appeal.kind != "appeal":
            raise NotFound(f"no appeal with id {appeal_id[:64]!r}")
        if _decision_of(services, appeal_id) is not None:
            raise Conflict(f"appeal {appeal_id} has already been decided")
        log.add(
            SafetyRecord(
                kind="appeal_decision",
                subject=appeal_id,
                tenant=appeal.tenant,
                outcome=body.decision,
                actor=actor(principal),
                note=body.note,
            )
        )
        return _appeal_view(services, appeal)

    return await run_in_threadpool(decide)


@admin.put("/tenants/{name}")
async def set_tenant_threshold(
    name: str, body: ThresholdRequest, request: Request, principal: Admin
) -> dict[str, Any]:
    """A tenant's prompt-policy threshold (null: the deployment's)."""
    services = services_of(request)
    checked_tenant(name, "name")
    await run_in_threadpool(services.keys.set_prompt_threshold, name, body.prompt_threshold)
    effective = body.prompt_threshold
    if effective is None:
        effective = services.settings.prompt_policy_threshold
    return {"object": "tenant_safety", "tenant": name, "prompt_threshold": effective}


@admin.put("/keys/{key_id}")
async def set_key_threshold(
    key_id: str, body: ThresholdRequest, request: Request, principal: Admin
) -> dict[str, Any]:
    """One key's prompt-policy threshold (null: its tenant's)."""
    services = services_of(request)
    record = await run_in_threadpool(
        services.keys.set_key_prompt_threshold, key_id, body.prompt_threshold
    )
    return {"object": "key_safety", "key": record.id, "prompt_threshold": record.prompt_threshold}


# --- users: appeals ---


async def _appealable(services: Services, subject: str, principal: Principal) -> str | None:
    """The subject's tenant, after checking the caller may appeal it."""
    if subject.startswith("job_"):
        job = await get_job(services, subject, principal)
        rejected = job.status is JobStatus.failed and job.error is not None
        if not rejected or job.error is None or job.error.type != CONTENT_POLICY:
            raise InvalidRequest.single(
                "subject", f"job {subject} was not refused by the content policy"
            )
        return job.owner
    record = await run_in_threadpool(safety_of(services).log.get, subject)
    if record is None or record.kind != "prompt" or not principal.can_see(record.tenant):
        raise NotFound(f"no refused prompt with decision_id {subject[:64]!r}")
    return record.tenant


@user.post("/appeals", status_code=201)
async def appeal(body: AppealRequest, request: Request, principal: Writer) -> dict[str, Any]:
    """Appeal a rejected job or a refused prompt, once, with a note."""
    services = services_of(request)
    tenant = await _appealable(services, body.subject, principal)
    record = SafetyRecord(
        kind="appeal",
        subject=body.subject,
        tenant=tenant,
        outcome="pending",
        actor=actor(principal),
        note=body.note,
    )
    await run_in_threadpool(safety_of(services).log.add, record)
    return await run_in_threadpool(_appeal_view, services, record)


@user.get("/appeals/{appeal_id}")
async def get_appeal(appeal_id: str, request: Request, principal: Writer) -> dict[str, Any]:
    services = services_of(request)
    record = await run_in_threadpool(safety_of(services).log.get, appeal_id)
    if record is None or record.kind != "appeal" or not principal.can_see(record.tenant):
        raise NotFound(f"no appeal with id {appeal_id[:64]!r}")
    return await run_in_threadpool(_appeal_view, services, record)
