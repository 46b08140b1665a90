"""Submit a job and wait for its images: the synchronous path every facade shares
(native /v1/generate, OpenAI /v1/images/*, A1111 /sdapi/v1/*). The job is an ordinary
queued job, so auth, tenants, validation and limits are the job core's."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool

from sdserve.api.auth import Principal
from sdserve.api.services import Services
from sdserve.api.submit import Uploads, submit, wait_for_terminal
from sdserve.domain.errors import JobCanceled, NotFound, SdserveError
from sdserve.domain.jobs import ImageRef, Job, JobStatus
from sdserve.domain.requests import GenerateRequest
from sdserve.safety.service import HeldForReview


class JobFailed(SdserveError):
    """A synchronous request whose job ended without images: the status is the job
    error type's, from the one table (a refused checkpoint is not a 500)."""

    def __init__(self, job: Job) -> None:
        err = job.error
        super().__init__(err.message if err else "generation failed", job_id=job.id)
        self.type = err.type if err else "generation_failed"


@dataclass(frozen=True)
class Finished:
    job: Job
    images: list[bytes]  # the served ones, in order
    served: list[ImageRef]  # their refs (a withheld image is never served)


async def run_sync(
    services: Services,
    req: GenerateRequest,
    principal: Principal,
    *,
    uploads: Uploads | None = None,
    idempotency_key: str | None = None,
    on_submit: Callable[[Job], None] | None = None,
) -> Finished:
    """Queue ``req`` and wait for it. With ``idempotency_key`` a retried request
    waits on the job the first attempt made, so a retry never makes a second image."""
    job, _ = await submit(
        services,
        req,
        uploads=uploads,
        idempotency_key=idempotency_key,
        owner=principal.owner,
        key_id=principal.key_id,
    )
    if on_submit is not None:
        on_submit(job)
    timeout = services.settings.sync_timeout_seconds
    job = await wait_for_terminal(services, job.id, timeout, principal)
    if job.status is JobStatus.canceled:
        raise JobCanceled(f"job {job.id} was canceled", job_id=job.id)
    if job.status is JobStatus.held:
        raise HeldForReview(job.id)
    if job.status is not JobStatus.succeeded or job.result is None:
        raise JobFailed(job)
    served = [im for im in job.result.images if not im.withheld]  # flagged: never sent
    images = await run_in_threadpool(read_images, services, [im.id for im in served], job.owner)
    return Finished(job, images, served)


def read_images(services: Services, ids: list[str], tenant: str | None) -> list[bytes]:
    out = []
    for ident in ids:
        data = services.blobs.get(ident, tenant=tenant)
        if data is None:
            raise NotFound(f"image {ident} is no longer stored")
        out.append(data)
    return out
