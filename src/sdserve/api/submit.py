"""The one job core every facade goes through: resolve, validate, enqueue, wait."""

from __future__ import annotations

import secrets
import time
from typing import Any

from starlette.concurrency import run_in_threadpool

from sdserve.api.services import Services
from sdserve.config import Settings
from sdserve.domain import limits
from sdserve.domain.errors import GenerationTimeout, InvalidRequest, NotFound
from sdserve.domain.jobs import Job, NewJob
from sdserve.domain.requests import GenerateRequest, JobSpec, request_fingerprint
from sdserve.engine.catalog import Catalog


def resolve_spec(req: GenerateRequest, catalog: Catalog, settings: Settings) -> JobSpec:
    """Fill every default (model size, random seed) and apply deployment limits."""
    info = catalog.get(req.model)
    width = req.width or info.default_width
    height = req.height or info.default_height
    if width * height > settings.max_pixels:
        raise InvalidRequest.single(
            "width",
            f"width*height = {width * height} pixels exceeds the limit of "
            f"{settings.max_pixels} pixels",
            settings.max_pixels,
        )
    seed = req.seed if req.seed is not None else secrets.randbelow(limits.MAX_SEED + 1)
    return JobSpec(
        prompt=req.prompt,
        negative_prompt=req.negative_prompt,
        width=width,
        height=height,
        num_inference_steps=req.num_inference_steps,
        guidance_scale=req.guidance_scale,
        seed=seed,
        num_images=req.num_images,
        scheduler=req.scheduler or info.default_scheduler,
        model=info.name,
        priority=req.priority,
        output_format=req.output_format,
    )


async def submit(
    services: Services,
    req: GenerateRequest,
    *,
    callback_url: str | None = None,
    idempotency_key: str | None = None,
    owner: str | None = None,
) -> tuple[Job, bool]:
    spec = resolve_spec(req, services.catalog, services.settings)
    if callback_url is not None:
        from sdserve.webhooks.guard import validate_callback_url

        # Resolving the host is blocking I/O: keep it off the event loop.
        await run_in_threadpool(validate_callback_url, callback_url, services.webhook_policy)
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= 255:
        raise InvalidRequest.single("Idempotency-Key", "must be 1 to 255 characters", 255)
    body: dict[str, Any] = req.model_dump(mode="json")
    body["callback_url"] = callback_url
    new = NewJob(
        spec=spec,
        callback_url=callback_url,
        idempotency_key=idempotency_key,
        request_hash=request_fingerprint(body),
        owner=owner,
        max_attempts=services.settings.max_attempts,
    )
    job, created = await run_in_threadpool(services.queue.enqueue, new)
    if created:
        services.wakeups.notify_workers()
        services.metrics.jobs_submitted.labels(spec.priority.value).inc()
    return job, created


async def get_job(services: Services, job_id: str) -> Job:
    job = await run_in_threadpool(services.queue.get, job_id)
    if job is None:
        raise NotFound(f"no job with id {job_id!r}")
    return job


async def wait_for_terminal(services: Services, job_id: str, timeout: float) -> Job:
    """Wait until the job ends; wake-ups make this prompt, polling makes it safe."""
    deadline = time.monotonic() + timeout
    poll = services.settings.poll_interval_ms / 1000
    while True:
        job = await get_job(services, job_id)
        if job.status.terminal:
            return job
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise GenerationTimeout(
                f"job {job_id} did not finish within {timeout:g} s; it is still "
                f"{job.status.value} — poll GET /v1/jobs/{job_id}",
                job_id=job_id,
                status=job.status.value,
                poll_url=f"/v1/jobs/{job_id}",
            )
        await services.wakeups.wait_job(job_id, min(remaining, poll))
