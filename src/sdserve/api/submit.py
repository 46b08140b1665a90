"""The one job core every facade goes through: resolve, validate, enqueue, wait."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.concurrency import run_in_threadpool

from sdserve.api import audit_trail, inputs, quota
from sdserve.api.auth import Principal
from sdserve.api.inputs import DecodedInput
from sdserve.api.model_choice import choice_fields, choose_model
from sdserve.api.services import Services
from sdserve.config import Settings
from sdserve.domain import limits
from sdserve.domain.errors import FieldProblem, GenerationTimeout, InvalidRequest, NotFound
from sdserve.domain.jobs import Job, NewJob
from sdserve.domain.requests import (
    GenerateRequest,
    JobSpec,
    Task,
    request_fingerprint,
    steps_run,
    task_field_problems,
)
from sdserve.engine.base import ModelInfo
from sdserve.engine.lora_files import check_loras
from sdserve.observability import context as log_context
from sdserve.observability.context import request_trace
from sdserve.safety.service import check_prompts
from sdserve.webhooks.tenants import CALLBACK_PURPOSE


@dataclass
class Uploads:
    """Multipart file parts by field name (JSON bodies carry base64 instead)."""

    files: dict[str, bytes] = field(default_factory=dict)

    def fingerprint(self) -> dict[str, str]:
        return {k: hashlib.sha256(v).hexdigest() for k, v in sorted(self.files.items())}


def model_for_task(req_model: str | None, task: Task, services: Services) -> ModelInfo:
    """The requested model, or the deployment's default for the task; it must be able
    to do the task."""
    catalog = services.catalog
    name = req_model or services.task_models.get(task.value)
    if name is None and task is Task.upscale:
        raise InvalidRequest.single(
            "model", "no upscaler model is installed (put one in the models folder)"
        )
    info = catalog.choose(name).info if name is not None else catalog.default
    if task.value not in info.tasks:
        raise InvalidRequest.single(
            "model",
            f"model {info.name!r} ({info.family}) cannot do {task.value}; "
            f"it does: {', '.join(info.tasks)}",
        )
    return info


def _floor8(side: int) -> int:
    return side - side % limits.SIDE_MULTIPLE


def output_size(
    req: GenerateRequest, info: ModelInfo, input_size: tuple[int, int] | None
) -> tuple[int, int]:
    """txt2img: the request or the model's native size; img2img/inpaint: the request or
    the input's size (down to a multiple of 8); upscale: the input times the factor."""
    if req.task is Task.txt2img or input_size is None:
        return req.width or info.default_width, req.height or info.default_height
    in_w, in_h = (_floor8(s) for s in input_size)
    factor = info.upscale_factor if req.task is Task.upscale else 1
    if min(in_w, in_h) * factor < limits.MIN_SIDE:
        least = -(-limits.MIN_SIDE // factor)
        raise InvalidRequest.single(
            "image",
            f"input image is {input_size[0]}x{input_size[1]}; each side must be at least "
            f"{least}"
            + (f" (x{factor} gives the {limits.MIN_SIDE} minimum)" if factor > 1 else ""),
            least,
        )
    if req.task is Task.upscale:
        return in_w * factor, in_h * factor
    return req.width or in_w, req.height or in_h


def resolve_spec(
    req: GenerateRequest,
    info: ModelInfo,
    settings: Settings,
    input_size: tuple[int, int] | None = None,
) -> JobSpec:
    """Fill every default (model size, random seed, task parameters) and apply the
    deployment's limits. Input ids are filled in by the caller."""
    width, height = output_size(req, info, input_size)
    if width * height > settings.max_pixels:
        raise InvalidRequest.single(
            "width",
            f"width*height = {width * height} pixels exceeds the limit of "
            f"{settings.max_pixels} pixels",
            settings.max_pixels,
        )
    strength = req.strength
    if strength is None and req.task in (Task.img2img, Task.inpaint):
        strength = (
            limits.DEFAULT_IMG2IMG_STRENGTH
            if req.task is Task.img2img
            else limits.DEFAULT_INPAINT_STRENGTH
        )
    if strength is not None and steps_run(req.num_inference_steps, strength) < 1:
        raise InvalidRequest.single(
            "strength",
            f"strength {strength} x {req.num_inference_steps} steps runs no denoising step; "
            "raise strength or num_inference_steps",
        )
    noise_level = req.noise_level
    if req.task is Task.upscale and info.family == "upscaler" and noise_level is None:
        noise_level = limits.DEFAULT_NOISE_LEVEL
    if noise_level is not None and info.family != "upscaler":
        raise InvalidRequest.single("noise_level", f"model {info.name!r} takes no noise_level")
    inpaint = req.task is Task.inpaint
    scheduler = req.scheduler or info.default_scheduler
    if scheduler not in info.schedulers:
        if req.scheduler is not None:
            raise InvalidRequest.single(
                "scheduler", f"model {info.name!r} takes only: {', '.join(info.schedulers)}"
            )
        scheduler = info.schedulers[0]
    if scheduler == "lcm" and req.num_inference_steps > limits.MAX_LCM_STEPS:
        raise InvalidRequest.single(
            "num_inference_steps",
            f"the lcm scheduler runs at most {limits.MAX_LCM_STEPS} steps",
            limits.MAX_LCM_STEPS,
        )
    guidance = req.guidance_scale
    if info.family == "latent-upscaler" and "guidance_scale" not in req.model_fields_set:
        guidance = 0.0  # its usual setting: the prompt does not steer a x2 latent upscale
    seed = req.seed if req.seed is not None else secrets.randbelow(limits.MAX_SEED + 1)
    return JobSpec(
        task=req.task,
        prompt=req.prompt,
        negative_prompt=req.negative_prompt,
        width=width,
        height=height,
        num_inference_steps=req.num_inference_steps,
        guidance_scale=guidance,
        seed=seed,
        num_images=req.num_images,
        scheduler=scheduler,
        model=info.name,
        priority=req.priority,
        output_format=req.output_format,
        strength=strength,
        mask_blur=(req.mask_blur if req.mask_blur is not None else limits.DEFAULT_MASK_BLUR)
        if inpaint
        else None,
        keep_unmasked=(req.keep_unmasked if req.keep_unmasked is not None else True)
        if inpaint
        else None,
        noise_level=noise_level,
        loras=check_loras(req.loras, info, settings),
    )


def check_task_fields(req: GenerateRequest, image_given: bool = False) -> None:
    problems: list[FieldProblem] = task_field_problems(req, image_given)
    if problems:
        raise InvalidRequest(problems)


async def decode_inputs(
    services: Services, req: GenerateRequest, uploads: Uploads, owner: str | None
) -> tuple[DecodedInput | None, DecodedInput | None]:
    max_bytes = services.settings.max_input_bytes
    raw_image = inputs.raw_input(
        "image", req.image, req.image_id, uploads.files.get("image"), max_bytes
    )
    raw_mask = inputs.raw_input("mask", req.mask, req.mask_id, uploads.files.get("mask"), max_bytes)
    image = await inputs.decode(services, raw_image, tenant=owner) if raw_image else None
    mask = None
    if raw_mask is not None and image is not None:
        mask = await inputs.decode(services, raw_mask, tenant=owner, mask_size=image.size)
    return image, mask


async def prepare(
    services: Services,
    req: GenerateRequest,
    uploads: Uploads | None,
    owner: str | None,
    key_id: str | None = None,
) -> tuple[JobSpec, list[DecodedInput]]:
    """Validate and resolve a request into its JobSpec; the decoded inputs still need
    ``inputs.persist`` before the job is enqueued."""
    uploads = uploads or Uploads()
    for name in uploads.files:
        if name not in ("image", "mask"):
            raise InvalidRequest.single(name, "unexpected file part (only image and mask)")
    # A file part stands in for the base64 field of the same name.
    with_uploads = req.model_copy(
        update={k: "<upload>" for k in uploads.files if getattr(req, k) is None}
    )
    check_task_fields(with_uploads)
    choice = choose_model(services, req, key_id)
    info = choice.info
    image, mask = await decode_inputs(services, req, uploads, owner)
    spec = resolve_spec(req, info, services.settings, image.size if image else None)
    spec = spec.model_copy(
        update={"image": image.id if image else None, "mask": mask.id if mask else None}
        | choice_fields(choice, req)
    )
    return spec, [d for d in (image, mask) if d is not None]


async def submit(
    services: Services,
    req: GenerateRequest,
    *,
    uploads: Uploads | None = None,
    callback_url: str | None = None,
    idempotency_key: str | None = None,
    owner: str | None,
    key_id: str | None = None,
) -> tuple[Job, bool]:
    spec, decoded = await prepare(services, req, uploads, owner, key_id)
    spec = spec.model_copy(update={"trace": request_trace()})  # for worker logs, webhooks
    await check_prompts(services, [(spec.prompt, spec.negative_prompt)], owner, key_id)
    await check_callback(services, callback_url)
    check_idempotency_key(idempotency_key)
    body: dict[str, Any] = req.model_dump(mode="json")
    body["callback_url"] = callback_url
    if uploads is not None:
        body["uploads"] = uploads.fingerprint()
    new = NewJob(
        spec=spec,
        callback_url=seal_callback(services, callback_url),
        idempotency_key=idempotency_key,
        request_hash=request_fingerprint(body),
        owner=owner,
        max_attempts=services.settings.max_attempts,
    )
    async with quota.admitted(services, spec, owner=owner, key_id=key_id) as admission:
        await inputs.persist(services, decoded, owner)
        job, created = await run_in_threadpool(services.queue.enqueue, new)
        admission.charged = created  # an idempotent replay costs nothing
    log_context.bind(job_id=job.id, tenant=owner)
    if created:
        services.wakeups.notify_workers()
        services.metrics.jobs_submitted.labels(spec.priority.value).inc()
        await audit_trail.record_job(services, job, key_id)
    return job, created


async def check_callback(services: Services, callback_url: str | None) -> None:
    if callback_url is not None:
        from sdserve.webhooks.guard import validate_callback_url

        # Resolving the host is blocking I/O: keep it off the event loop.
        await run_in_threadpool(validate_callback_url, callback_url, services.webhook_policy)


def seal_callback(services: Services, callback_url: str | None) -> str | None:
    """The URL as the job store keeps it: sealed, since a receiver's URL often carries
    its token; the webhook dispatcher opens it to send."""
    if callback_url is None:
        return None
    return services.server_key.sealer.seal(callback_url, CALLBACK_PURPOSE)


def check_idempotency_key(key: str | None) -> None:
    if key is not None and not 1 <= len(key) <= 255:
        raise InvalidRequest.single("Idempotency-Key", "must be 1 to 255 characters", 255)


async def get_job(services: Services, job_id: str, viewer: Principal) -> Job:
    """The job, if ``viewer`` may see it; another tenant's job is "no job", as one that
    does not exist (a 404, never a 403 that confirms the id)."""
    job = await run_in_threadpool(services.queue.get, job_id)
    if job is None or not viewer.can_see(job.owner):
        raise NotFound(f"no job with id {job_id[:64]!r}")
    return job


async def wait_for_terminal(
    services: Services, job_id: str, timeout: float, viewer: Principal
) -> Job:
    """Wait until the job ends; wake-ups make this prompt, polling makes it safe."""
    deadline = time.monotonic() + timeout
    poll = services.settings.poll_interval_ms / 1000
    while True:
        job = await get_job(services, job_id, viewer)
        if job.status.settled:  # held for review: a person decides, not a wait
            return job
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise GenerationTimeout(
                f"job {job_id} did not finish within {timeout:g} s; it is still "
                f"{job.status.value} — poll GET /v1/jobs/{job_id}",
                job_id=job_id,
                status=job.status.value,
                poll_url=f"/v1/jobs/{job_id}",
            )
        await services.wakeups.wait_job(job_id, min(remaining, poll))
