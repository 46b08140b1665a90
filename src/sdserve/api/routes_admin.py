"""/v1/admin: keys, tenants and every tenant's jobs, for keys with the admin role.

An admin key acts in its own tenant on the data plane like any key; reaching across
tenants (operations: find a stuck job, cancel abuse) is only possible here, so a
cross-tenant action is always an explicit admin call.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from sdserve.api.audit_trail import audited
from sdserve.api.auth import Admin
from sdserve.api.routes_native import job_view
from sdserve.api.services import Services, services_of
from sdserve.domain.errors import InvalidRequest, NotFound
from sdserve.domain.jobs import Job, JobStatus
from sdserve.domain.requests import Priority
from sdserve.domain.tenants import checked_tenant
from sdserve.queue.base import ListFilter
from sdserve.security import retention
from sdserve.security.audit import AuditQuery
from sdserve.security.base import MAX_KEY_NAME, MAX_OVERLAP_SECONDS
from sdserve.security.keys import IssuedKey, Role
from sdserve.webhooks.signing import generate_secret
from sdserve.webhooks.tenants import WEBHOOK_SECRET_PURPOSE, check_tenant_secret

router = APIRouter(prefix="/v1/admin", tags=["admin"])
_MAX_LIFETIME_S = 10 * 365 * 24 * 3600


class NewKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: str = Field(max_length=63)
    role: Role = Role.user
    name: str = Field("", max_length=MAX_KEY_NAME)
    expires_in_seconds: int | None = Field(None, ge=1, le=_MAX_LIFETIME_S)


class RotateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    overlap_seconds: int = Field(3600, ge=0, le=MAX_OVERLAP_SECONDS)
    expires_in_seconds: int | None = Field(None, ge=1, le=_MAX_LIFETIME_S)


class WebhookSecretRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    secret: str | None = Field(None, max_length=200, description="whsec_...; absent: generated")


def _issued(issued: IssuedKey, now: float) -> dict[str, Any]:
    out = issued.record.public(now)
    out["key"] = issued.key  # shown once: only its hash is kept
    return out


def _expiry(services: Services, seconds: int | None) -> float | None:
    return None if seconds is None else services.clock() + seconds


@router.post("/keys", status_code=201)
async def create_key(body: NewKeyRequest, request: Request, principal: Admin) -> dict[str, Any]:
    """A new key for a tenant (created with its first key). The response is the only
    time the full key is shown."""
    services = services_of(request)
    checked_tenant(body.tenant)
    now = services.clock()
    async with audited(services, principal, "key.create", body.tenant, tenant=body.tenant) as d:
        issued = await run_in_threadpool(
            lambda: services.keys.create(
                body.tenant,
                body.role,
                name=body.name,
                expires_at=_expiry(services, body.expires_in_seconds),
                now=now,
            )
        )
        d.update(key_id=issued.record.id, role=body.role.value)
    return _issued(issued, now)


@router.get("/keys")
async def list_keys(
    request: Request,
    principal: Admin,
    tenant: Annotated[str | None, Query(max_length=63)] = None,
) -> dict[str, Any]:
    services = services_of(request)
    if tenant is not None:
        checked_tenant(tenant)
    records = await run_in_threadpool(services.keys.list_keys, tenant)
    now = services.clock()
    return {"object": "list", "data": [r.public(now) for r in records]}


@router.get("/keys/{key_id}")
async def read_key(key_id: str, request: Request, principal: Admin) -> dict[str, Any]:
    services = services_of(request)
    record = await run_in_threadpool(services.keys.get, key_id)
    if record is None:
        raise NotFound(f"no API key with id {key_id[:64]!r}")
    return record.public(services.clock())


@router.delete("/keys/{key_id}")
async def revoke_key(key_id: str, request: Request, principal: Admin) -> dict[str, Any]:
    """Revoke at once: the next request with it gets 401."""
    services = services_of(request)
    now = services.clock()
    target = await run_in_threadpool(services.keys.get, key_id)
    tenant = target.tenant if target is not None else None
    async with audited(services, principal, "key.revoke", key_id[:64], tenant=tenant):
        record = await run_in_threadpool(lambda: services.keys.revoke(key_id, now=now))
    return record.public(now)


@router.post("/keys/{key_id}/rotate", status_code=201)
async def rotate_key(
    key_id: str, body: RotateRequest, request: Request, principal: Admin
) -> dict[str, Any]:
    """A new key (same tenant, role and name); the old one keeps working for
    ``overlap_seconds`` (default one hour), then 401s."""
    services = services_of(request)
    now = services.clock()
    target = await run_in_threadpool(services.keys.get, key_id)
    tenant = target.tenant if target is not None else None
    async with audited(services, principal, "key.rotate", key_id[:64], tenant=tenant) as d:
        issued = await run_in_threadpool(
            lambda: services.keys.rotate(
                key_id,
                body.overlap_seconds,
                expires_at=_expiry(services, body.expires_in_seconds),
                now=now,
            )
        )
        d.update(new_key_id=issued.record.id, overlap_seconds=body.overlap_seconds)
    out = _issued(issued, now)
    old = await run_in_threadpool(services.keys.get, key_id)
    out["replaces"] = old.public(now) if old is not None else None
    return out


@router.get("/tenants")
async def list_tenants(request: Request, principal: Admin) -> dict[str, Any]:
    services = services_of(request)

    def read() -> list[dict[str, Any]]:
        keys = services.keys.list_keys()
        out = []
        for name in services.keys.tenants():
            count = sum(1 for k in keys if k.tenant == name)
            tenant = services.keys.tenant(name)
            out.append(tenant.public(count) if tenant else _bare_tenant(name, count))
        return out

    return {"object": "list", "data": await run_in_threadpool(read)}


def _bare_tenant(name: str, count: int) -> dict[str, Any]:
    return {"object": "tenant", "name": name, "keys": count, "webhook_secret": False}


@router.put("/tenants/{tenant}/webhook-secret")
async def set_webhook_secret(
    tenant: str, request: Request, principal: Admin, body: WebhookSecretRequest | None = None
) -> dict[str, Any]:
    """The tenant's own Standard Webhooks secret (given, or generated): its jobs' and
    workflows' webhooks are signed with it from now on. Shown once; kept sealed."""
    services = services_of(request)
    checked_tenant(tenant)
    given = body.secret if body is not None else None
    secret = check_tenant_secret(given) if given is not None else generate_secret()
    sealed = services.server_key.sealer.seal(secret, WEBHOOK_SECRET_PURPOSE)
    now = services.clock()
    async with audited(services, principal, "tenant.webhook_secret.set", tenant, tenant=tenant):
        await run_in_threadpool(lambda: services.keys.set_webhook_secret(tenant, sealed, now=now))
    return {"object": "tenant", "name": tenant, "webhook_secret": secret}


@router.delete("/tenants/{tenant}/webhook-secret")
async def clear_webhook_secret(tenant: str, request: Request, principal: Admin) -> dict[str, Any]:
    """Back to the deployment's secret for this tenant's webhooks."""
    services = services_of(request)
    checked_tenant(tenant)
    now = services.clock()
    async with audited(services, principal, "tenant.webhook_secret.clear", tenant, tenant=tenant):
        await run_in_threadpool(lambda: services.keys.set_webhook_secret(tenant, None, now=now))
    return {"object": "tenant", "name": tenant, "webhook_secret": False}


async def _admin_view(services: Services, job: Job) -> dict[str, Any]:
    view = await job_view(services, job)
    view["tenant"] = job.owner
    return view


async def _job(services: Services, job_id: str) -> Job:
    job = await run_in_threadpool(services.queue.get, job_id)
    if job is None:
        raise NotFound(f"no job with id {job_id[:64]!r}")
    return job


@router.get("/jobs")
async def list_all_jobs(
    request: Request,
    principal: Admin,
    tenant: Annotated[str | None, Query(max_length=63)] = None,
    status: JobStatus | None = None,
    priority: Priority | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    """Every tenant's jobs (or one tenant's), newest first; each view names its tenant."""
    services = services_of(request)
    if tenant is not None:
        checked_tenant(tenant)
    flt = ListFilter(status=status, priority=priority, owner=tenant, limit=limit, cursor=cursor)
    try:
        page = await run_in_threadpool(services.queue.list_jobs, flt)
    except ValueError as exc:
        raise InvalidRequest.single("cursor", "not a cursor this server issued") from exc
    data = [await _admin_view(services, j) for j in page.jobs]
    return {"object": "list", "data": data, "next_cursor": page.next_cursor}


@router.get("/jobs/{job_id}")
async def read_any_job(job_id: str, request: Request, principal: Admin) -> dict[str, Any]:
    services = services_of(request)
    return await _admin_view(services, await _job(services, job_id))


@router.delete("/jobs/{job_id}")
async def cancel_any_job(
    job_id: str, request: Request, response: Response, principal: Admin
) -> dict[str, Any]:
    services = services_of(request)
    found = await _job(services, job_id)
    async with audited(services, principal, "job.cancel", job_id, tenant=found.owner):
        job = await run_in_threadpool(services.queue.cancel, job_id)
    services.wakeups.notify_job(job_id)
    if job.status is JobStatus.running:
        response.status_code = 202
    return await _admin_view(services, job)


@router.post("/models/reload")
async def reload_models(request: Request, principal: Admin) -> dict[str, Any]:
    """Re-read the model registry file and the models folder (new models, aliases,
    rollout weights, routing rules) without a restart; a broken file is refused with
    422 and the current catalog keeps serving."""
    from sdserve.models.registry_file import RegistryError
    from sdserve.models.reload import summary

    services = services_of(request)
    catalog = services.catalog
    async with audited(services, principal, "models.reload", "registry", tenant=None) as d:
        try:
            await run_in_threadpool(catalog.reload)
        except RegistryError as exc:
            raise InvalidRequest.single("registry", str(exc)) from exc
        d["models"] = len(catalog.names())
        d["generation"] = catalog.generation
    return summary(catalog)


@router.get("/audit")
async def list_audit(
    request: Request,
    principal: Admin,
    tenant: Annotated[str | None, Query(max_length=63)] = None,
    action: Annotated[str | None, Query(max_length=100)] = None,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    """Audit entries oldest first, after the ``after`` sequence number (the cursor:
    pass the last entry's ``seq``); filtered by tenant and action."""
    services = services_of(request)
    if tenant is not None:
        checked_tenant(tenant)
    q = AuditQuery(tenant=tenant, action=action, after=after, limit=limit)
    entries = await run_in_threadpool(services.audit.query, q)
    last = entries[-1].seq if len(entries) == limit else None
    return {"object": "list", "data": [e.public() for e in entries], "next_after": last}


@router.get("/audit/verify")
async def verify_audit(request: Request, principal: Admin) -> dict[str, Any]:
    """Walk the whole chain; names the first edited, missing or reordered entry."""
    services = services_of(request)
    verdict = await run_in_threadpool(services.audit.verify)
    return {
        "object": "audit_verification",
        "ok": verdict.ok,
        "checked": verdict.checked,
        "first_bad_seq": verdict.bad_seq,
        "reason": verdict.reason,
    }


@router.post("/tenants/{tenant}/erase")
async def erase_tenant(tenant: str, request: Request, principal: Admin) -> dict[str, Any]:
    """Erasure request: cancel the tenant's work and delete its jobs, workflows, inputs
    and images now (its keys stay; revoke them separately). Audited. A job a worker
    is running stops at its next step and is counted in ``still_running``: erase
    again once it has."""
    services = services_of(request)
    checked_tenant(tenant)
    actor = principal.key_id or "open"
    done = await run_in_threadpool(retention.erase_tenant, services, tenant, actor)
    return done.public()
