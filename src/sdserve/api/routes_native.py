"""The native /v1 API."""

from __future__ import annotations

import base64
import time
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from sdserve.api.auth import Reader, Writer
from sdserve.api.body import parse
from sdserve.api.models_view import model_list
from sdserve.api.openapi_doc import request_body_doc
from sdserve.api.schemas import GenerateResponse, JobList, JobView, ModelList
from sdserve.api.services import Services, services_of
from sdserve.api.submit import get_job, submit
from sdserve.api.sync_run import run_sync
from sdserve.domain.errors import InvalidRequest, NotFound
from sdserve.domain.jobs import Job, JobStatus
from sdserve.domain.requests import GenerateRequest, JobRequest, Priority
from sdserve.queue.base import ListFilter
from sdserve.storage.base import IMAGE_CACHE_CONTROL, valid_image_id
from sdserve.worker.registry import READY_TTL_S, ready_workers

router = APIRouter()

__all__ = ["job_view", "router", "services_of"]


async def job_view(services: Services, job: Job) -> dict[str, Any]:
    position = None
    if job.status is JobStatus.queued:
        position = await run_in_threadpool(services.queue.queue_position, job.id)
    return job.public(position, services.settings.public_base_url)


@router.post(
    "/v1/generate",
    response_model=GenerateResponse,
    tags=["native"],
    openapi_extra=request_body_doc(GenerateRequest),
)
async def generate(
    request: Request,
    principal: Writer,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    """Generate images and wait for them (same queue as async jobs). JSON (input images
    as base64) or multipart/form-data (input images as file parts `image`, `mask`).
    With an `Idempotency-Key`, a retry waits on the first attempt's job."""
    services = services_of(request)
    body, uploads = await parse(request, GenerateRequest, services.settings.max_upload_bytes)
    done = await run_sync(
        services, body, principal, uploads=uploads, idempotency_key=idempotency_key
    )
    job = done.job
    assert job.result is not None  # run_sync returns succeeded jobs only
    return {
        "images": [base64.b64encode(data).decode() for data in done.images],
        "parameters": job.spec.public(),
        "generation_time": job.result.generation_time,
        "seed_used": job.result.seed_used,
        "job_id": job.id,
        "seeds": [im.seed for im in done.served],
        "image_ids": [im.id for im in done.served],
        "warnings": job.result.warnings,
        "cached": job.result.cached,
    }


@router.post(
    "/v1/jobs",
    status_code=202,
    response_model=JobView,
    tags=["native"],
    openapi_extra=request_body_doc(JobRequest),
)
async def create_job(
    request: Request,
    response: Response,
    principal: Writer,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    """Queue a job and return at once; poll it or pass ``callback_url``. JSON or
    multipart/form-data, as for /v1/generate."""
    services = services_of(request)
    body, uploads = await parse(request, JobRequest, services.settings.max_upload_bytes)
    req = GenerateRequest.model_validate(body.model_dump(exclude={"callback_url"}))
    job, created = await submit(
        services,
        req,
        uploads=uploads,
        callback_url=body.callback_url,
        idempotency_key=idempotency_key,
        owner=principal.owner,
        key_id=principal.key_id,
    )
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return await job_view(services, job)


@router.get("/v1/jobs/{job_id}", response_model=JobView, tags=["native"])
async def read_job(job_id: str, request: Request, principal: Reader) -> dict[str, Any]:
    services = services_of(request)
    return await job_view(services, await get_job(services, job_id, principal))


@router.get("/v1/jobs", response_model=JobList, tags=["native"])
async def list_jobs(
    request: Request,
    principal: Reader,
    status: JobStatus | None = None,
    priority: Priority | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    services = services_of(request)
    owner = principal.owner if principal.authenticated else None  # auth off: all jobs
    flt = ListFilter(status=status, priority=priority, owner=owner, limit=limit, cursor=cursor)
    try:
        page = await run_in_threadpool(services.queue.list_jobs, flt)
    except ValueError as exc:
        raise InvalidRequest.single("cursor", "not a cursor this server issued") from exc
    data = [await job_view(services, j) for j in page.jobs]
    return {"object": "list", "data": data, "next_cursor": page.next_cursor}


@router.delete("/v1/jobs/{job_id}", response_model=JobView, tags=["native"])
async def cancel_job(
    job_id: str, request: Request, response: Response, principal: Writer
) -> dict[str, Any]:
    """Cancel: a queued job at once, a running one at its next denoising step."""
    services = services_of(request)
    await get_job(services, job_id, principal)  # another tenant's job: 404, untouched
    job = await run_in_threadpool(services.queue.cancel, job_id)
    services.wakeups.notify_job(job_id)
    if job.status is JobStatus.running:
        response.status_code = 202  # cancellation requested, takes effect at the next step
    return await job_view(services, job)


@router.get("/v1/images/{image_id}", tags=["native"], response_class=Response)
async def read_image(image_id: str, request: Request, principal: Reader) -> Response:
    """One of the caller's images (another tenant's id: 404, as an unknown one)."""
    if not valid_image_id(image_id):
        raise NotFound(f"no image with id {image_id[:64]!r}")
    services = services_of(request)
    data = await run_in_threadpool(services.blobs.get, image_id, principal.owner)
    if data is None:
        raise NotFound(f"no image with id {image_id[:64]!r}")
    media = "image/" + image_id.rsplit(".", 1)[1]
    # Private and short: a shared cache never keeps it, a deleted image soon goes.
    return Response(data, media_type=media, headers={"Cache-Control": IMAGE_CACHE_CONTROL})


@router.get("/v1/models", response_model=ModelList, tags=["native"])
async def list_models(request: Request, principal: Reader) -> dict[str, Any]:
    services = services_of(request)
    workers = await run_in_threadpool(services.registry.live, READY_TTL_S)
    return model_list(services.catalog, workers)


@router.get("/metrics", tags=["ops"], response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus metrics: HTTP traffic, errors by type, queue depth, workers."""
    registry = services_of(request).metrics.registry
    body = await run_in_threadpool(generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


@router.get("/healthz", tags=["ops"])
async def healthz() -> dict[str, Any]:
    """The process is alive (answers even while a batch runs)."""
    return {"status": "ok", "time": time.time()}


@router.get("/readyz", tags=["ops"])
async def readyz(request: Request, response: Response) -> dict[str, Any]:
    """Ready when at least one worker has its model loaded and warmed."""
    services = services_of(request)
    workers = await run_in_threadpool(ready_workers, services.registry)
    if not workers:
        response.status_code = 503
        return {"status": "not_ready", "ready_workers": 0}
    return {"status": "ready", "ready_workers": len(workers)}
