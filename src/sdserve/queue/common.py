"""Rules every JobQueue backend shares, so the backends cannot drift apart."""

from __future__ import annotations

import base64
import re
import time
import uuid
from typing import Any

from sdserve.domain.errors import InvalidRequest
from sdserve.domain.jobs import Job, JobStatus
from sdserve.domain.workflows import Workflow

_CURSOR = re.compile(r"s:[0-9]{1,18}")
_EVENTS = {
    JobStatus.succeeded: "job.succeeded",
    JobStatus.failed: "job.failed",
    JobStatus.canceled: "job.canceled",
    JobStatus.held: "job.held",
}


def now_or(now: float | None) -> float:
    return time.time() if now is None else now


def new_outbox_id() -> str:
    return "obx_" + uuid.uuid4().hex


def outbox_payload(job: Job) -> dict[str, Any]:
    """The webhook body: the client view of the job plus the event type."""
    payload = job.public()
    payload["event"] = _EVENTS[job.status]
    return payload


def workflow_payload(wf: Workflow, jobs: dict[str, Job]) -> dict[str, Any]:
    """The webhook body of a finished workflow: its client view plus the event type."""
    payload = wf.public(jobs)
    payload["event"] = f"workflow.{wf.status.value}"
    return payload


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"s:{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    """The seq to continue below; a malformed cursor is a client error (only what
    ``encode_cursor`` writes decodes: ASCII digits a store's integer can hold)."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest.single("cursor", "invalid pagination cursor") from exc
    if _CURSOR.fullmatch(raw) is None:
        raise InvalidRequest.single("cursor", "invalid pagination cursor")
    return int(raw[2:])
