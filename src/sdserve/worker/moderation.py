"""Image checks in the worker: each finished job's images are checked before anything
is stored, and a flagged image is never stored where a route can serve it.

- Nothing flagged: stored and completed as usual.
- Flagged, SDSERVE_SAFETY_REVIEW=hold: every image of the job is sealed into the
  quarantine (safety/quarantine.py) and the job is ``held`` for a reviewer.
- Flagged, ``reject``: flagged images are not stored at all; the clean ones are and the
  job succeeds with the flagged ones marked withheld, or fails
  ``content_policy_violation`` when every image was flagged.
- The checker raised (or answered for the wrong number of images): fail closed; no
  image is stored and the job fails ``image_check_failed`` (retried like any failure).

Every flag and failure goes into the safety record; counts into the metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from prometheus_client import CollectorRegistry

from sdserve.domain.jobs import ImageRef, Job, JobError, JobResult, JobStatus, image_id
from sdserve.engine.base import ItemOutput
from sdserve.safety.decisions import ImageChecker, ImageVerdict
from sdserve.safety.metrics import SafetyMetrics
from sdserve.safety.quarantine import KEY_PURPOSE, Quarantine
from sdserve.safety.records import DecisionLog, SafetyRecord, build_decision_log
from sdserve.worker.encode import encode_image

if TYPE_CHECKING:
    from sdserve.config import Settings
    from sdserve.engine.catalog import Catalog
    from sdserve.security.server_key import ServerKey
    from sdserve.storage.base import BlobStore
    from sdserve.worker.loop import Worker

log = logging.getLogger("sdserve.worker.moderation")

IMAGE_CHECK_FAILED = "image_check_failed"
HELD_FOR_REVIEW = "held_for_review"
CONTENT_POLICY = "content_policy_violation"


class CheckerAnswerError(RuntimeError):
    pass


@dataclass
class ImageModeration:
    checker_for: Callable[[str], ImageChecker]  # by model name
    quarantine: Quarantine
    log: DecisionLog
    metrics: SafetyMetrics
    review: Literal["hold", "reject"] = "hold"

    def check(self, job: Job, item: ItemOutput) -> list[ImageVerdict]:
        checker = self.checker_for(job.spec.model)
        verdicts = checker.check(list(item.images))
        if len(verdicts) != len(item.images):
            raise CheckerAnswerError(
                f"{checker.name} returned {len(verdicts)} verdicts for {len(item.images)} images"
            )
        return verdicts

    def complete(
        self, worker: Worker, job: Job, item: ItemOutput, elapsed: float
    ) -> JobStatus | None:
        """Check, then store and complete, hold, or fail the job (see the module doc).
        Returns where the job settled (None: lease lost, or back in the queue)."""
        try:
            verdicts = self.check(job, item)
        except Exception as exc:  # any checker failure withholds the images
            log.exception("job %s: image check failed; images withheld", job.id)
            return self._failed_check(worker, job, exc)
        self.metrics.images(verdicts)
        flagged = [i for i, v in enumerate(verdicts) if v.flagged]
        hold = bool(flagged) and self.review == "hold"
        fmt = job.spec.output_format
        refs: list[ImageRef] = []
        for index, (image, seed, verdict) in enumerate(
            zip(item.images, job.spec.seeds, verdicts, strict=True)
        ):
            ident = image_id(job.id, index, fmt, worker.image_key)
            reason = verdict.reason if verdict.flagged else None
            if hold:
                self.quarantine.put(ident, encode_image(image, fmt), job.owner)
            elif not verdict.flagged:
                worker.blobs.put(ident, encode_image(image, fmt), tenant=job.owner)
            refs.append(
                ImageRef(id=ident, seed=seed, withheld=hold or verdict.flagged, safety=reason)
            )
        result = JobResult(
            images=refs,
            generation_time=round(elapsed, 4),
            seed_used=job.spec.seed,
            warnings=item.warnings,
        )
        if not flagged:
            if not worker.queue.complete(job.id, worker.id, result):
                return None
            if worker.results is not None:  # only images every check passed
                worker.results.remember(job, result)
            return JobStatus.succeeded
        self._record(job, verdicts, flagged, "held" if hold else "withheld")
        summary = f"{len(flagged)} of {len(verdicts)} image(s) flagged by the image check"
        if hold:
            why = JobError(type=HELD_FOR_REVIEW, message=f"{summary}; held for review")
            return JobStatus.held if worker.queue.hold(job.id, worker.id, result, why) else None
        if len(flagged) == len(verdicts):
            err = JobError(type=CONTENT_POLICY, message=f"{summary}; none is served")
            return _settled(worker.queue.fail(job.id, worker.id, err, retryable=False))
        result.warnings.append(f"{summary}; those are withheld")
        return JobStatus.succeeded if worker.queue.complete(job.id, worker.id, result) else None

    def _record(
        self, job: Job, verdicts: list[ImageVerdict], flagged: list[int], outcome: str
    ) -> None:
        categories: dict[str, float] = {}
        for v in verdicts:
            for cat, score in v.categories.items():
                categories[cat] = max(categories.get(cat, 0.0), score)
        reasons = "; ".join(f"image {i}: {verdicts[i].reason}" for i in flagged)
        source = verdicts[flagged[0]].source
        self.log.add(
            SafetyRecord(
                kind="image",
                subject=job.id,
                tenant=job.owner,
                outcome=outcome,
                actor=f"checker:{source}",
                categories=categories,
                reason=reasons,
            )
        )

    def _failed_check(self, worker: Worker, job: Job, exc: BaseException) -> JobStatus | None:
        self.metrics.image_error()
        message = (
            f"the image check could not run ({type(exc).__name__}: {exc}); "
            "no image was stored (fail closed)"
        )
        after: Job | None = None
        try:
            self.log.add(
                SafetyRecord(
                    kind="image",
                    subject=job.id,
                    tenant=job.owner,
                    outcome="error",
                    actor="checker",
                    reason=message,
                )
            )
        finally:
            after = worker.queue.fail(
                job.id,
                worker.id,
                JobError(type=IMAGE_CHECK_FAILED, message=message),
                retryable=True,
                retry_delay=worker.config.retry_delay_s,
            )
        return _settled(after)


def _settled(job: Job | None) -> JobStatus | None:
    """The status a failed job settled in (None: lease lost, or queued for a retry)."""
    return job.status if job is not None and job.status.settled else None


def model_checkers(settings: Settings, catalog: Catalog) -> Callable[[str], ImageChecker]:
    """The checker SDSERVE_IMAGE_CHECKER names, one per model, loaded on first use."""
    from sdserve.safety.factory import build_image_checker

    cache: dict[str, ImageChecker] = {}

    def checker_for(model: str) -> ImageChecker:
        if model not in cache:
            info = catalog.get(model)
            folder = Path(info.source) if Path(info.source).is_dir() else None
            checker = build_image_checker(settings, folder)
            if checker is None:  # pragma: no cover - build_moderation returns None for off
                raise RuntimeError("image checker is off")
            cache[model] = checker
        return cache[model]

    return checker_for


def build_moderation(
    settings: Settings,
    blobs: BlobStore,
    server_key: ServerKey,
    catalog: Catalog,
    *,
    log: DecisionLog | None = None,
    metrics: SafetyMetrics | None = None,
    checker_for: Callable[[str], ImageChecker] | None = None,
) -> ImageModeration | None:
    """None when SDSERVE_IMAGE_CHECKER=off and no checker is given."""
    if checker_for is None:
        if settings.image_checker == "off":
            return None
        checker_for = model_checkers(settings, catalog)
    return ImageModeration(
        checker_for=checker_for,
        quarantine=Quarantine(blobs, server_key.derive(KEY_PURPOSE)),
        log=log
        or build_decision_log(
            settings.queue_backend,
            settings.resolved_database_path,
            settings.redis_url,
            settings.redis_prefix,
        ),
        metrics=metrics or SafetyMetrics(CollectorRegistry()),
        review=settings.safety_review,
    )
