"""Build engine batches from claimed jobs, and split them when memory runs out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from PIL import Image

from sdserve.domain import limits
from sdserve.domain.jobs import Job
from sdserve.domain.requests import JobSpec
from sdserve.engine.base import BatchItem, BatchOutput, BatchRequest, ItemOutput

# A job's (image, mask) as the engine takes them; raises if they are gone.
InputLoader = Callable[[Job], tuple[Image.Image | None, Image.Image | None]]


def batch_request(jobs: list[Job], load: InputLoader | None = None) -> BatchRequest:
    """All jobs of a claim share a batch key, so the first one's parameters hold for
    all; each job brings its own prompts, seeds and input images."""
    spec = jobs[0].spec
    return BatchRequest(
        model=spec.model,
        task=spec.task.value,
        width=spec.width,
        height=spec.height,
        num_inference_steps=spec.num_inference_steps,
        guidance_scale=spec.guidance_scale,
        scheduler=spec.scheduler,
        items=[_item(j, load) for j in jobs],
        strength=spec.strength if spec.strength is not None else 1.0,
        mask_blur=spec.mask_blur or 0,
        keep_unmasked=spec.keep_unmasked if spec.keep_unmasked is not None else True,
        noise_level=spec.noise_level
        if spec.noise_level is not None
        else limits.DEFAULT_NOISE_LEVEL,
        original_size=spec.original_size,
        target_size=spec.target_size,
        crops_coords_top_left=spec.crops_coords_top_left,
        loras=tuple((ref.name, ref.scale) for ref in spec.loras),
    )


def _item(job: Job, load: InputLoader | None) -> BatchItem:
    spec: JobSpec = job.spec
    image = mask = None
    if spec.image is not None:
        if load is None:
            raise ValueError(f"job {job.id} has input images but no loader was given")
        image, mask = load(job)
    return BatchItem(job.id, spec.prompt, spec.negative_prompt, spec.seeds, image, mask)


def split_request(req: BatchRequest) -> tuple[BatchRequest, BatchRequest] | None:
    """Halve a batch by images (a job's images may land in both halves, which is safe
    because every image has its own seed). None when it is a single image."""
    pairs = [(it, s) for it in req.items for s in it.seeds]
    if len(pairs) < 2:
        return None
    mid = len(pairs) // 2
    return _from_pairs(req, pairs[:mid]), _from_pairs(req, pairs[mid:])


def _from_pairs(req: BatchRequest, pairs: list[tuple[BatchItem, int]]) -> BatchRequest:
    items: list[BatchItem] = []
    for item, seed in pairs:
        if items and items[-1].job_id == item.job_id:
            items[-1].seeds.append(seed)
        else:
            items.append(replace(item, seeds=[seed]))
    return replace(req, items=items)


def merge_outputs(first: BatchOutput, second: BatchOutput) -> BatchOutput:
    items: dict[str, ItemOutput] = {}
    for out in (first, second):
        for job_id, item in out.items.items():
            have = items.get(job_id)
            if have is None:
                items[job_id] = ItemOutput(job_id, list(item.images), list(item.warnings))
            else:
                have.images.extend(item.images)
                have.warnings.extend(w for w in item.warnings if w not in have.warnings)
    canceled = first.canceled | second.canceled
    for job_id in canceled:
        items.pop(job_id, None)
    return BatchOutput(items, canceled)
