"""Record API actions in the audit log: who (the key), what, on whose data, outcome.

``audited`` wraps an action: it records ``ok`` when the body finishes, or the error
type when it raises one of ours (a refused revoke is worth knowing about too).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.concurrency import run_in_threadpool

from sdserve.api.auth import Principal
from sdserve.api.services import Services
from sdserve.domain.errors import SdserveError


def actor_of(principal: Principal) -> str:
    return principal.key_id or "open"


async def record_for(
    services: Services,
    actor: str,
    action: str,
    target: str,
    *,
    tenant: str | None,
    outcome: str = "ok",
    details: dict[str, Any] | None = None,
) -> None:
    now = services.clock()
    await run_in_threadpool(
        lambda: services.audit.append(
            action,
            target,
            actor=actor,
            tenant=tenant,
            outcome=outcome,
            details=details,
            now=now,
        )
    )


async def record(
    services: Services,
    principal: Principal,
    action: str,
    target: str,
    *,
    tenant: str | None,
    outcome: str = "ok",
    details: dict[str, Any] | None = None,
) -> None:
    await record_for(
        services,
        actor_of(principal),
        action,
        target,
        tenant=tenant,
        outcome=outcome,
        details=details,
    )


@asynccontextmanager
async def audited(
    services: Services,
    principal: Principal,
    action: str,
    target: str,
    *,
    tenant: str | None,
) -> AsyncIterator[dict[str, Any]]:
    """Yields a dict the body may fill with details (never secrets)."""
    details: dict[str, Any] = {}
    try:
        yield details
    except SdserveError as exc:
        await record(
            services, principal, action, target, tenant=tenant, outcome=exc.type, details=details
        )
        raise
    await record(services, principal, action, target, tenant=tenant, details=details)


async def record_job(services: Services, job: Any, key_id: str | None) -> None:
    """A generation was queued (its spec summary, never the prompt: prompts expire
    under retention, the audit log outlives them)."""
    spec = job.spec
    details = {
        "task": spec.task.value,
        "model": spec.model,
        "images": spec.num_images,
        "size": f"{spec.width}x{spec.height}",
        "steps": spec.num_inference_steps,
    }
    await record_for(
        services, key_id or "open", "job.create", job.id, tenant=job.owner, details=details
    )
