"""The worker's side of live previews: store each job's latest preview (overwriting
the last) and delete them all when the batch ends (domain/previews.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from PIL import Image

from sdserve.domain.jobs import Job
from sdserve.domain.previews import preview_id
from sdserve.domain.requests import OutputFormat
from sdserve.storage.base import BlobStore
from sdserve.worker.encode import encode_image

log = logging.getLogger("sdserve.worker")


class JobPreviews:
    """The PreviewSink (engine/previews.py) the worker hands the engine for a batch."""

    def __init__(self, blobs: BlobStore, key: bytes, jobs: Iterable[Job], every_s: float) -> None:
        self.blobs = blobs
        self.key = key
        self.owners = {job.id: job.owner for job in jobs}
        self.every_s = every_s

    def __call__(self, job_id: str, image: Image.Image) -> None:
        if job_id not in self.owners:
            return
        try:
            data = encode_image(image, OutputFormat.png)
            self.blobs.put(preview_id(job_id, self.key), data, tenant=self.owners[job_id])
        except Exception:  # a preview is a nicety: it never fails the job
            log.exception("storing the preview of job %s failed", job_id)


def drop_previews(blobs: BlobStore, key: bytes, jobs: Iterable[Job]) -> None:
    """Delete the batch's previews (its jobs have ended or go back to the queue)."""
    for job in jobs:
        try:
            blobs.delete(preview_id(job.id, key), tenant=job.owner)
        except Exception:
            log.exception("deleting the preview of job %s failed", job.id)
