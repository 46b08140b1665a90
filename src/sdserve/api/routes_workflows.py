"""POST/GET/DELETE /v1/workflows: chained editing steps under one id."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from sdserve.api.auth import Principal, Reader, Writer
from sdserve.api.body import parse
from sdserve.api.openapi_doc import request_body_doc
from sdserve.api.routes_native import services_of
from sdserve.api.services import Services
from sdserve.api.workflows import submit_workflow
from sdserve.domain.errors import NotFound
from sdserve.domain.requests import WorkflowRequest
from sdserve.domain.workflows import Workflow

router = APIRouter()
_KEEPALIVE_S = 15.0


async def _get(services: Services, workflow_id: str, viewer: Principal) -> Workflow:
    """The workflow, if ``viewer`` may see it (else 404, as for an unknown id)."""
    wf = await run_in_threadpool(services.queue.get_workflow, workflow_id)
    if wf is None or not viewer.can_see(wf.owner):
        raise NotFound(f"no workflow with id {workflow_id[:64]!r}")
    return wf


async def workflow_view(services: Services, wf: Workflow) -> dict[str, Any]:
    jobs = {}
    for job_id in wf.job_ids:
        job = await run_in_threadpool(services.queue.get, job_id)
        if job is not None:
            jobs[job_id] = job
    return wf.public(jobs, services.settings.public_base_url)


@router.post(
    "/v1/workflows",
    status_code=202,
    tags=["workflows"],
    openapi_extra=request_body_doc(WorkflowRequest),
)
async def create_workflow(
    request: Request,
    response: Response,
    principal: Writer,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    """Queue ordered steps (e.g. txt2img -> inpaint -> upscale); each step's input is
    the previous step's first image or the workflow's own `image`. Multipart: steps as
    a JSON text field `steps`, file parts `image` and `mask_<step index>`."""
    services = services_of(request)
    body, uploads = await parse(request, WorkflowRequest, services.settings.max_upload_bytes)
    wf, created = await submit_workflow(
        services,
        body,
        uploads,
        idempotency_key=idempotency_key,
        owner=principal.owner,
        key_id=principal.key_id,
    )
    response.headers["Location"] = f"/v1/workflows/{wf.id}"
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return await workflow_view(services, wf)


@router.get("/v1/workflows/{workflow_id}", tags=["workflows"])
async def read_workflow(workflow_id: str, request: Request, principal: Reader) -> dict[str, Any]:
    """Status, progress (step k of n and the denoising step inside it), and every
    step's effective parameters and images, so any step can be reproduced alone."""
    services = services_of(request)
    return await workflow_view(services, await _get(services, workflow_id, principal))


@router.delete("/v1/workflows/{workflow_id}", tags=["workflows"])
async def cancel_workflow(workflow_id: str, request: Request, principal: Writer) -> dict[str, Any]:
    """Cancel: the running step stops at its next denoising step; no later step runs."""
    services = services_of(request)
    await _get(services, workflow_id, principal)
    wf = await run_in_threadpool(services.queue.cancel_workflow, workflow_id)
    for job_id in wf.job_ids:
        services.wakeups.notify_job(job_id)
    return await workflow_view(services, wf)


@router.get("/v1/workflows/{workflow_id}/events", tags=["workflows"])
async def workflow_events(
    workflow_id: str, request: Request, principal: Reader
) -> StreamingResponse:
    """`text/event-stream` of the workflow view, one `workflow` event per change."""
    services = services_of(request)
    await _get(services, workflow_id, principal)

    async def stream() -> AsyncIterator[str]:
        last, last_sent = "", time.monotonic()
        poll = services.settings.poll_interval_ms / 1000
        while not await request.is_disconnected():
            wf = await _get(services, workflow_id, principal)
            view = json.dumps(await workflow_view(services, wf))
            if view != last:
                last, last_sent = view, time.monotonic()
                yield f"event: workflow\ndata: {view}\n\n"
            if wf.status.terminal:
                return
            if time.monotonic() - last_sent > _KEEPALIVE_S:
                last_sent = time.monotonic()
                yield ": keep-alive\n\n"
            current = wf.steps[wf.current].job_id
            if current is not None:
                await services.wakeups.wait_job(current, poll)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
