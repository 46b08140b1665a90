"""The Job: one accepted request and everything that happens to it."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sdserve.domain.requests import JobSpec, OutputFormat


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    canceled = "canceled"
    # An image was flagged and the job waits for a reviewer (docs/safety.md); not
    # terminal: approval ends it succeeded, rejection failed.
    held = "held"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.succeeded, JobStatus.failed, JobStatus.canceled)

    @property
    def settled(self) -> bool:
        """Nothing more happens without a person: terminal, or held for review."""
        return self.terminal or self is JobStatus.held


class ImageRef(BaseModel):
    id: str
    seed: int
    # Not served: flagged by the image check (or held for review until approved).
    withheld: bool = False
    safety: str | None = None  # the checker's reason, for a flagged image
    # Deleted by the image TTL (SDSERVE_RETENTION_IMAGES_SECONDS); the job is kept.
    expired: bool = False


class JobResult(BaseModel):
    images: list[ImageRef]
    generation_time: float
    seed_used: int
    warnings: list[str] = Field(default_factory=list)
    # Answered from the result cache (an exact earlier request), without engine work.
    cached: bool = False


class JobError(BaseModel):
    type: str
    message: str


class NewJob(BaseModel):
    """What the API hands the queue to enqueue."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(default_factory=lambda: new_job_id())
    spec: JobSpec
    callback_url: str | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None
    owner: str | None = None
    max_attempts: int = 3
    workflow_id: str | None = None
    workflow_step: int | None = None


class Job(BaseModel):
    id: str
    spec: JobSpec
    status: JobStatus
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float
    attempts: int = 0
    max_attempts: int = 3
    progress_step: int = 0
    progress_total: int = 0
    cancel_requested: bool = False
    dead_lettered: bool = False
    callback_url: str | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None
    owner: str | None = None
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    result: JobResult | None = None
    error: JobError | None = None
    # Queue bookkeeping (not shown to clients): when a queued job may be claimed, how
    # many jobs its current claim holds, and whether it must run alone next time
    # (its batch died: only its own crashes may count against it).
    available_at: float = 0.0
    batch_size: int = 0
    solo: bool = False
    workflow_id: str | None = None
    workflow_step: int | None = None

    @property
    def num_images(self) -> int:
        return self.spec.num_images

    @property
    def batch_key(self) -> str:
        return self.spec.batch_key

    def public(self, queue_position: int | None = None, base_url: str = "") -> dict[str, Any]:
        """The client-facing view (GET /v1/jobs/{id}, webhook payloads)."""
        result: dict[str, Any] | None = None
        if self.result is not None:
            result = {
                "images": [_public_image(im, base_url) for im in self.result.images],
                "generation_time": self.result.generation_time,
                "seed_used": self.result.seed_used,
                "warnings": self.result.warnings,
                "cached": self.result.cached,
            }
        return {
            "id": self.id,
            "object": "job",
            "status": self.status.value,
            "priority": self.spec.priority.value,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "queue_position": queue_position,
            "attempts": self.attempts,
            "progress": {"step": self.progress_step, "total": self.progress_total},
            "parameters": self.spec.public(),
            "result": result,
            "error": self.error.model_dump() if self.error else None,
            "workflow": {"id": self.workflow_id, "step": self.workflow_step}
            if self.workflow_id
            else None,
            "links": {"self": f"{base_url}/v1/jobs/{self.id}"},
        }


def _public_image(im: ImageRef, base_url: str) -> dict[str, Any]:
    if im.withheld or im.expired:  # never a link to an image that is not served
        return {
            "id": None,
            "url": None,
            "seed": im.seed,
            "withheld": im.withheld,
            "reason": im.safety if im.withheld else None,
            "expired": im.expired,
        }
    return {
        "id": im.id,
        "url": f"{base_url}/v1/images/{im.id}",
        "seed": im.seed,
        "withheld": False,
        "reason": None,
        "expired": False,
    }


def new_job_id() -> str:
    return "job_" + uuid.uuid4().hex


def image_id(job_id: str, index: int, fmt: OutputFormat, key: bytes) -> str:
    """Deterministic per job and index, so a retried job overwrites its own outputs;
    keyed (HMAC-SHA256 with the server's image-id key, 128 bits kept), so nobody who
    knows a job id can work out its images' ids without the key."""
    if not key:
        raise ValueError("image ids need the server's image-id key")
    digest = hmac.new(key, f"{job_id}:{index}".encode(), hashlib.sha256).hexdigest()[:32]
    return f"{digest}.{fmt.value}"
