"""/v1/admin/dead-letters: jobs that used up their attempts — list, inspect, redrive
(a fresh set of attempts), purge (off the list; the job stays failed in history).
Admin keys only: dead letters span every tenant."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from sdserve.api.audit_trail import audited
from sdserve.api.auth import Admin
from sdserve.api.routes_native import job_view
from sdserve.api.services import Services, services_of
from sdserve.domain.errors import NotFound
from sdserve.domain.jobs import Job

router = APIRouter(prefix="/v1/admin/dead-letters", tags=["admin"])
_MAX_LIST = 500


async def _view(services: Services, job: Job) -> dict[str, Any]:
    view = await job_view(services, job)
    view["tenant"] = job.owner
    view["attempts"] = job.attempts
    view["max_attempts"] = job.max_attempts
    view["dead_lettered"] = job.dead_lettered
    return view


async def _dead(services: Services, job_id: str) -> Job:
    job = await run_in_threadpool(services.queue.get, job_id)
    if job is None or not job.dead_lettered:
        raise NotFound(f"no dead-lettered job with id {job_id[:64]!r}")
    return job


@router.get("")
async def list_dead_letters(
    request: Request,
    principal: Admin,
    limit: Annotated[int, Query(ge=1, le=_MAX_LIST)] = 100,
) -> dict[str, Any]:
    """Newest first, with each job's error and attempts."""
    services = services_of(request)
    jobs = await run_in_threadpool(services.queue.dead_letters, limit)
    return {"object": "list", "data": [await _view(services, j) for j in jobs]}


@router.get("/{job_id}")
async def inspect_dead_letter(job_id: str, request: Request, principal: Admin) -> dict[str, Any]:
    services = services_of(request)
    job = await _dead(services, job_id)
    view = await _view(services, job)
    view["request"] = job.spec.model_dump(mode="json")  # what to look at for a poison job
    return view


@router.post("/{job_id}/redrive")
async def redrive_dead_letter(job_id: str, request: Request, principal: Admin) -> dict[str, Any]:
    """Queue it again with a fresh set of attempts (fix the cause first)."""
    services = services_of(request)
    found = await _dead(services, job_id)
    async with audited(services, principal, "dead_letter.redrive", job_id, tenant=found.owner):
        job = await run_in_threadpool(services.queue.requeue_dead_letter, job_id)
    services.wakeups.notify_job(job_id)
    services.wakeups.notify_workers()
    return await _view(services, job)


@router.delete("/{job_id}")
async def purge_dead_letter(job_id: str, request: Request, principal: Admin) -> dict[str, Any]:
    services = services_of(request)
    found = await _dead(services, job_id)
    async with audited(services, principal, "dead_letter.purge", job_id, tenant=found.owner):
        job = await run_in_threadpool(services.queue.purge_dead_letter, job_id)
    return await _view(services, job)


@router.delete("")
async def purge_all_dead_letters(
    request: Request,
    principal: Admin,
    limit: Annotated[int, Query(ge=1, le=_MAX_LIST)] = _MAX_LIST,
) -> dict[str, Any]:
    """Purge up to ``limit`` (newest first); repeat until ``purged`` is 0."""
    services = services_of(request)

    def purge() -> list[str]:
        ids = [j.id for j in services.queue.dead_letters(limit)]
        for job_id in ids:
            services.queue.purge_dead_letter(job_id)
        return ids

    async with audited(services, principal, "dead_letter.purge_all", "*", tenant=None) as d:
        ids = await run_in_threadpool(purge)
        d["purged"] = len(ids)
    return {"object": "purge", "purged": len(ids), "ids": ids}
