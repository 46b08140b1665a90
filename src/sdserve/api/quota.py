"""Quota admission for a resolved job: the one call ``submit`` makes before enqueueing.

Order matters so that nothing is charged for a refused request: the bounds (pixels,
steps, images per request) and the tenant's jobs in flight are checked first, then
every rate is tested before any is hit (security/ratelimit.py), and what was taken is
given back if the job is not created after all (a queue full, an idempotent replay).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from starlette.concurrency import run_in_threadpool

from sdserve.api.services import Services
from sdserve.domain.errors import InvalidRequest, RateLimited
from sdserve.domain.jobs import JobStatus
from sdserve.domain.requests import JobSpec
from sdserve.queue.base import JobQueue, ListFilter
from sdserve.security.ratelimit import Charge, Quota, QuotaPolicy, Refusal

# Jobs in flight free up as workers finish them; this is how soon to look again.
QUEUED_RETRY_AFTER = 5


@dataclass
class Admission:
    """What a request consumed; kept unless ``charged`` is set False."""

    charges: list[Charge] = field(default_factory=list)
    charged: bool = True


def policy_of(services: Services) -> QuotaPolicy:
    if services.quota_policy is None:
        services.quota_policy = QuotaPolicy.from_settings(services.settings)
    return services.quota_policy


def check_bounds(quota: Quota, spec: JobSpec, where: str = "") -> None:
    """``where``: the field prefix of a workflow step (``steps.1.``)."""
    pixels = spec.width * spec.height
    if quota.max_pixels and pixels > quota.max_pixels:
        raise InvalidRequest.single(
            f"{where}width",
            f"width*height = {pixels} pixels exceeds this key's quota of {quota.max_pixels} pixels",
            quota.max_pixels,
        )
    if quota.max_steps and spec.num_inference_steps > quota.max_steps:
        raise InvalidRequest.single(
            f"{where}num_inference_steps",
            f"{spec.num_inference_steps} steps exceeds this key's quota of {quota.max_steps}",
            quota.max_steps,
        )


def check_images(quota: Quota, images: int, field_name: str) -> None:
    if quota.images is not None and images > quota.images.amount:
        raise InvalidRequest.single(
            field_name,
            f"{images} images can never fit this key's quota of {quota.images}",
            quota.images.amount,
        )


def in_flight(queue: JobQueue, owner: str | None, at_least: int) -> int:
    """The owner's queued and running jobs, counted up to ``at_least`` (enough to
    decide; a full count of a long queue is not needed)."""
    total = 0
    for status in (JobStatus.running, JobStatus.queued):
        page = queue.list_jobs(ListFilter(status=status, owner=owner, limit=at_least))
        total += len(page.jobs)
        if total >= at_least:
            break
    return total


def rate_limited(refusal: Refusal) -> RateLimited:
    retry = refusal.retry_after()
    what = {"requests": "generation requests", "images": "images"}[refusal.name]
    err = RateLimited(
        f"quota of {refusal.item.amount} {what} per {_window(refusal)} reached; retry in {retry} s",
        limit=refusal.name,
        retry_after=retry,
    )
    err.headers = {
        "Retry-After": str(retry),
        "RateLimit-Limit": str(refusal.item.amount),
        "RateLimit-Remaining": str(refusal.remaining),
        "RateLimit-Reset": str(retry),
        "RateLimit-Policy": f"{refusal.item.amount};w={refusal.item.get_expiry()}",
    }
    return err


def _window(refusal: Refusal) -> str:
    item = refusal.item
    unit = type(item).__name__.removeprefix("RateLimitItemPer").lower()
    return unit if item.multiples == 1 else f"{item.multiples} {unit}s"


@asynccontextmanager
async def admitted(
    services: Services,
    spec: JobSpec | Sequence[JobSpec],
    *,
    owner: str | None,
    key_id: str | None,
) -> AsyncIterator[Admission]:
    """Refuse (422 for a bound, 429 ``rate_limited`` for a rate) or consume the caller's
    quota; an exception in the body, or ``charged = False``, gives it back. A sequence
    of specs is a workflow: one request, every step's images."""
    quota = policy_of(services).for_caller(owner, key_id)
    if isinstance(spec, JobSpec):
        check_bounds(quota, spec)
        images = spec.num_images
        check_images(quota, images, "num_images")
    else:
        for i, step in enumerate(spec):
            check_bounds(quota, step, f"steps.{i}.")
        images = sum(s.num_images for s in spec)
        check_images(quota, images, "steps")
    if quota.max_queued:
        count = await run_in_threadpool(in_flight, services.queue, owner, quota.max_queued)
        if count >= quota.max_queued:
            err = RateLimited(
                f"{count} jobs queued or running; this tenant's quota is {quota.max_queued} "
                "at once — retry when one finishes",
                limit="max_queued",
                retry_after=QUEUED_RETRY_AFTER,
            )
            err.headers = {
                "Retry-After": str(QUEUED_RETRY_AFTER),
                "RateLimit-Limit": str(quota.max_queued),
                "RateLimit-Remaining": "0",
            }
            raise err
    # Counted per key (per tenant with auth off there is none: one shared identity).
    identity = key_id or f"tenant:{owner or ''}"
    charges = [
        Charge(name, item, identity, cost)
        for name, item, cost in (
            ("requests", quota.requests, 1),
            ("images", quota.images, images),
        )
        if item is not None
    ]
    admission = Admission(charges)
    if charges:
        refusal = await run_in_threadpool(services.rate_limiter.acquire, charges)
        if refusal is not None:
            raise rate_limited(refusal)
    try:
        yield admission
    except BaseException:
        await run_in_threadpool(services.rate_limiter.refund, charges)
        raise
    if not admission.charged:
        await run_in_threadpool(services.rate_limiter.refund, charges)
