"""Server-sent events: a job's progress and status as they happen."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from sdserve.api.auth import Reader
from sdserve.api.routes_native import job_view, services_of
from sdserve.api.submit import get_job

router = APIRouter()
_KEEPALIVE_S = 15.0


@router.get("/v1/jobs/{job_id}/events", tags=["native"])
async def job_events(job_id: str, request: Request, principal: Reader) -> StreamingResponse:
    """`text/event-stream` of the job view: one `job` event per change (status,
    progress, queue position); the stream ends after the terminal state."""
    services = services_of(request)
    await get_job(services, job_id, principal)  # 404 before the stream starts

    async def stream() -> AsyncIterator[str]:
        last = ""
        last_sent = time.monotonic()
        while not await request.is_disconnected():
            job = await get_job(services, job_id, principal)
            view = json.dumps(await job_view(services, job))
            if view != last:
                last, last_sent = view, time.monotonic()
                yield f"event: job\ndata: {view}\n\n"
            if job.status.terminal:
                return
            if time.monotonic() - last_sent > _KEEPALIVE_S:
                last_sent = time.monotonic()
                yield ": keep-alive\n\n"
            poll = services.settings.poll_interval_ms / 1000
            await services.wakeups.wait_job(job_id, poll)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
