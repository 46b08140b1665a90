"""Build engine batches from claimed jobs, and split them when memory runs out."""

from __future__ import annotations

from sdserve.domain.jobs import Job
from sdserve.engine.base import BatchItem, BatchOutput, BatchRequest, ItemOutput


def batch_request(jobs: list[Job]) -> BatchRequest:
    """All jobs of a claim share a batch key, so the first one's parameters hold for all."""
    spec = jobs[0].spec
    return BatchRequest(
        model=spec.model,
        task=spec.task.value,
        width=spec.width,
        height=spec.height,
        num_inference_steps=spec.num_inference_steps,
        guidance_scale=spec.guidance_scale,
        scheduler=spec.scheduler,
        items=[BatchItem(j.id, j.spec.prompt, j.spec.negative_prompt, j.spec.seeds) for j in jobs],
    )


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
            items.append(BatchItem(item.job_id, item.prompt, item.negative_prompt, [seed]))
    return BatchRequest(
        req.model,
        req.task,
        req.width,
        req.height,
        req.num_inference_steps,
        req.guidance_scale,
        req.scheduler,
        items,
    )


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
