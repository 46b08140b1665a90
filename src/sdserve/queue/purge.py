"""What ``JobQueue.purge`` removes: the rules every backend applies the same way.

Only finished jobs and workflows are purged (a queued or running one is canceled
first by whoever wants it gone: a worker may hold it). ``redact_prompts`` keeps the
jobs and blanks their prompts instead (prompts usually expire before results);
``expire_images`` keeps the jobs and marks their images expired, dropping the input
image ids (the caller deletes those blobs: images may expire long before records).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sdserve.domain.jobs import Job
from sdserve.domain.requests import JobSpec
from sdserve.domain.workflows import Workflow

REDACTED = "[redacted]"


@dataclass(frozen=True)
class PurgeFilter:
    owners: tuple[str | None, ...] | None = None  # None: every owner
    except_owners: tuple[str | None, ...] = ()  # ...but these (they have their own TTLs)
    finished_before: float | None = None  # None: finished at any time
    redact_prompts: bool = False
    expire_images: bool = False
    limit: int = 500  # jobs per call; call again while ``more``


@dataclass(frozen=True)
class PurgeResult:
    jobs: list[Job] = field(default_factory=list)  # as they were: images to delete
    workflows: list[str] = field(default_factory=list)
    more: bool = False


def _owner_ok(owner: str | None, flt: PurgeFilter) -> bool:
    if owner in flt.except_owners:
        return False
    return flt.owners is None or owner in flt.owners


def _old_enough(finished_at: float | None, flt: PurgeFilter) -> bool:
    if flt.finished_before is None:
        return True
    return finished_at is not None and finished_at < flt.finished_before


def job_matches(job: Job, flt: PurgeFilter) -> bool:
    if not job.status.terminal or not _owner_ok(job.owner, flt):
        return False
    if not _old_enough(job.finished_at, flt):
        return False
    if flt.expire_images:
        return has_live_images(job)
    return not flt.redact_prompts or is_unredacted(job.spec)


def workflow_matches(wf: Workflow, flt: PurgeFilter) -> bool:
    if flt.redact_prompts or flt.expire_images:
        return False  # a workflow's steps keep their specs until it is purged
    return wf.status.terminal and _owner_ok(wf.owner, flt) and _old_enough(wf.finished_at, flt)


def is_unredacted(spec: JobSpec) -> bool:
    return spec.prompt != REDACTED or spec.negative_prompt not in ("", REDACTED)


def redacted(spec: JobSpec) -> JobSpec:
    return spec.model_copy(
        update={
            "prompt": REDACTED,
            "negative_prompt": REDACTED if spec.negative_prompt else "",
        }
    )


def has_live_images(job: Job) -> bool:
    """Images (outputs or stored inputs) the image TTL has not expired yet."""
    if job.spec.image is not None or job.spec.mask is not None:
        return True
    return job.result is not None and any(not im.expired for im in job.result.images)


def images_expired(job: Job) -> Job:
    """The job as kept once its images are deleted: outputs marked expired (their ids
    stay, never shown, so a later purge finds nothing to delete twice), inputs gone."""
    update: dict[str, object] = {"spec": job.spec.model_copy(update={"image": None, "mask": None})}
    if job.result is not None:
        images = [im.model_copy(update={"expired": True}) for im in job.result.images]
        update["result"] = job.result.model_copy(update={"images": images})
    return job.model_copy(update=update)
