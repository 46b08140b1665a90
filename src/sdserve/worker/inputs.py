"""Input images of editing jobs: read back from the blob store, fitted to the job."""

from __future__ import annotations

from PIL import Image

from sdserve.domain import limits
from sdserve.domain.errors import SdserveError
from sdserve.domain.jobs import Job
from sdserve.domain.requests import JobSpec, Task
from sdserve.imaging import load_stored
from sdserve.storage.base import BlobStore


class InputUnavailable(SdserveError):
    """An input image was deleted (retention, erasure) before its job ran."""

    type = "input_unavailable"


def input_size(spec: JobSpec, stored: tuple[int, int]) -> tuple[int, int]:
    """The size the engine gets an input at: the job's own for img2img/inpaint; for
    an upscale, the input itself down to a multiple of 8 (the output follows)."""
    if spec.task is Task.upscale:
        w, h = stored
        return w - w % limits.SIDE_MULTIPLE, h - h % limits.SIDE_MULTIPLE
    return spec.width, spec.height


def fit(image: Image.Image, size: tuple[int, int], is_mask: bool) -> Image.Image:
    """Resize when the job asked for another size (deterministic: same input, same
    pixels). Masks stay hard-edged; their softening is the job's ``mask_blur``."""
    if image.size == size:
        return image
    resample = Image.Resampling.NEAREST if is_mask else Image.Resampling.LANCZOS
    return image.resize(size, resample)


class InputCache:
    """Loads each job's inputs once per batch (a shared image is read once)."""

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs
        self._raw: dict[tuple[str | None, str], Image.Image] = {}  # by (tenant, id)
        self._fitted: dict[tuple[str | None, str, tuple[int, int], bool], Image.Image] = {}
        self._size_of: dict[str, tuple[int, int]] = {}

    def preload(self, job: Job) -> None:
        spec = job.spec
        if spec.image is None:
            return
        image = self._read(spec.image, job.owner)
        target = input_size(spec, image.size)
        self._size_of[job.id] = target
        self._fitted[(job.owner, spec.image, target, False)] = fit(image, target, False)
        if spec.mask is not None:
            mask = self._read(spec.mask, job.owner).convert("L")
            self._fitted[(job.owner, spec.mask, target, True)] = fit(mask, target, True)

    def _read(self, blob_id: str, tenant: str | None) -> Image.Image:
        """An input of a job of ``tenant``: it is read from that tenant's images only."""
        hit = self._raw.get((tenant, blob_id))
        if hit is None:
            data = self.blobs.get(blob_id, tenant=tenant)
            if data is None:
                raise InputUnavailable(f"input image {blob_id} is no longer stored")
            hit = self._raw[(tenant, blob_id)] = load_stored(data)
        return hit

    def load(self, job: Job) -> tuple[Image.Image | None, Image.Image | None]:
        """The job's (image, mask) at the engine's size; ``preload`` ran first."""
        spec = job.spec
        if spec.image is None:
            return None, None
        target = self._size_of[job.id]
        image = self._fitted[(job.owner, spec.image, target, False)]
        mask = self._fitted[(job.owner, spec.mask, target, True)] if spec.mask is not None else None
        return image, mask
