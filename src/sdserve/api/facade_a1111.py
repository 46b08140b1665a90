"""The AUTOMATIC1111-compatible API (/sdapi/v1/*), for clients such as webuiapi.

A thin translator (DESIGN.md, Facades): A1111 bodies become native requests through
the one job core (auth — the key as Bearer or as the HTTP Basic password —, tenants,
validation, limits, queue); finished jobs become A1111's response (``images``,
``parameters``, ``info`` as a JSON string). Errors: A1111's FastAPI shape,
``{"error", "detail", "errors"}``; a bad value is a 422 naming A1111's field.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from PIL import ImageOps
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from sdserve.api.a1111_fields import (
    A1111_NAME,
    ERROR_NAMES,
    SAMPLERS,
    SETTING_FIELDS,
    A1111Request,
    A1111Upscale,
    Translated,
    checkpoint_name,
    parse_body,
    translate,
    upscale_notes,
)
from sdserve.api.a1111_state import state_of
from sdserve.api.auth import Principal, Reader, Writer
from sdserve.api.facade_common import ErrorFacts, facade_route, renamed, retry_headers
from sdserve.api.services import Services, services_of
from sdserve.api.submit import Uploads, model_for_task
from sdserve.api.sync_run import Finished, run_sync
from sdserve.domain.errors import InvalidRequest, JobCanceled
from sdserve.domain.jobs import Job
from sdserve.domain.previews import preview_id, previews_allowed
from sdserve.domain.requests import GenerateRequest, Task
from sdserve.imaging import ImageLimits, decode_base64, decode_mask, encode_png


def render_a1111_error(request: Request, facts: ErrorFacts) -> Response:
    body: dict[str, Any] = {"error": facts.type, "detail": facts.message, "errors": facts.message}
    if facts.problems:
        # FastAPI's validation shape, which A1111 clients already parse.
        body["detail"] = [
            {"loc": ["body", *p.field.split(".")], "msg": p.message, "type": facts.type}
            | ({"limit": p.limit} if p.limit is not None else {})
            for p in facts.problems
        ]
    return JSONResponse(body, status_code=facts.status, headers=retry_headers(facts))


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    """Documents a body the route parses itself (A1111 bodies are JSON only)."""
    schema = {"schema": model.model_json_schema()}
    return {"requestBody": {"required": True, "content": {"application/json": schema}}}


router = APIRouter(
    prefix="/sdapi/v1", route_class=facade_route(render_a1111_error), tags=["automatic1111"]
)


def _info(job: Job, tr: Translated, body: A1111Request) -> dict[str, Any]:
    spec, result = job.spec, job.result
    assert result is not None
    seeds = [im.seed for im in result.images]
    return {
        "prompt": spec.prompt,
        "all_prompts": [spec.prompt] * len(seeds),
        "negative_prompt": spec.negative_prompt,
        "all_negative_prompts": [spec.negative_prompt] * len(seeds),
        "seed": spec.seed,
        "all_seeds": seeds,
        "subseed": spec.seed,
        "all_subseeds": seeds,
        "subseed_strength": 0,
        "width": spec.width,
        "height": spec.height,
        "sampler_name": A1111_NAME.get(spec.scheduler, spec.scheduler),
        "cfg_scale": spec.guidance_scale,
        "steps": spec.num_inference_steps,
        "batch_size": body.batch_size,
        "n_iter": body.n_iter,
        "restore_faces": False,
        "sd_model_name": spec.model,
        "sd_model_hash": None,
        "denoising_strength": spec.strength,
        "index_of_first_image": 0,
        "infotexts": [_infotext(spec.prompt, spec.negative_prompt, job, s) for s in seeds],
        "styles": [],
        "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.gmtime(job.created_at)),
        "clip_skip": 1,
        "is_using_inpainting_conditioning": spec.task is Task.inpaint,
        "version": "sdserve",
        "notes": tr.notes,
        "sdserve": {
            "job_id": job.id,
            "scheduler": spec.scheduler,
            "image_ids": [im.id for im in result.images],
            "warnings": result.warnings,
        },
    }


def _infotext(prompt: str, negative: str, job: Job, seed: int) -> str:
    s = job.spec
    sampler = A1111_NAME.get(s.scheduler, s.scheduler)
    return (
        f"{prompt}\nNegative prompt: {negative}\nSteps: {s.num_inference_steps}, "
        f"Sampler: {sampler}, CFG scale: {s.guidance_scale:g}, Seed: {seed}, "
        f"Size: {s.width}x{s.height}, Model: {s.model}"
    )


async def _generate(request: Request, principal: Principal, img2img: bool) -> dict[str, Any]:
    services = services_of(request)
    state = state_of(request)
    body: A1111Request = parse_body(A1111Request, await request.body())
    try:
        tr = translate(body, state.options(principal.owner), img2img)
        req, uploads = await _mask_uploads(services, tr)
        try:
            done = await run_sync(
                services,
                req,
                principal,
                uploads=uploads,
                idempotency_key=request.headers.get("idempotency-key"),
                on_submit=lambda job: state.started(principal.owner, job.id),
            )
        except JobCanceled:
            return _interrupted(body, tr)
    except InvalidRequest as exc:
        raise renamed(exc, ERROR_NAMES) from exc
    return _response(done, tr, body)


def _response(done: Finished, tr: Translated, body: A1111Request) -> dict[str, Any]:
    parameters = body.model_dump()
    parameters["init_images"] = None  # not echoed: the client has them
    parameters["mask"] = None
    send = (body.model_extra or {}).get("send_images", True) is not False
    return {
        "images": [base64.b64encode(data).decode() for data in done.images] if send else [],
        "parameters": parameters,
        "info": json.dumps(_info(done.job, tr, body)),
    }


def _interrupted(body: A1111Request, tr: Translated) -> dict[str, Any]:
    """Interrupted (POST /interrupt): A1111 answers 200 with what it had; the job was
    canceled before it stored images, so there are none."""
    info = {"interrupted": True, "notes": [*tr.notes, "interrupted before any image finished"]}
    return {"images": [], "parameters": body.model_dump(), "info": json.dumps(info)}


async def _mask_uploads(services: Services, tr: Translated) -> tuple[GenerateRequest, Uploads]:
    """inpainting_mask_invert=1: the mask is inverted (black = repaint) before the job
    core sees it, so the stored mask is the one that is applied."""
    if not tr.invert_mask or tr.request.mask is None:
        return tr.request, Uploads()
    settings = services.settings
    raw = decode_base64(tr.request.mask, field="mask", max_bytes=settings.max_input_bytes)
    limits = ImageLimits(settings.max_input_bytes, settings.max_input_pixels)

    def inverted() -> bytes:
        mask = decode_mask(raw, field="mask", limits=limits)
        flipped = ImageOps.invert(mask)
        if flipped.getbbox() is None:
            raise InvalidRequest.single(
                "mask", "inverted, it is entirely black: nothing to repaint"
            )
        return encode_png(flipped)

    data = await run_in_threadpool(inverted)
    return tr.request.model_copy(update={"mask": None}), Uploads({"mask": data})


@router.post("/txt2img", openapi_extra=_json_body(A1111Request))
async def txt2img(request: Request, principal: Writer) -> dict[str, Any]:
    return await _generate(request, principal, img2img=False)


@router.post("/img2img", openapi_extra=_json_body(A1111Request))
async def img2img(request: Request, principal: Writer) -> dict[str, Any]:
    """img2img; with ``mask`` (white = repaint, or black with inpainting_mask_invert=1)
    an inpaint."""
    return await _generate(request, principal, img2img=True)


@router.post("/extra-single-image", openapi_extra=_json_body(A1111Upscale))
async def extra_single_image(request: Request, principal: Writer) -> dict[str, Any]:
    """Upscale with an installed upscaler: ``upscaler_1`` names one, else the one whose
    factor is ``upscaling_resize``, else the deployment's default."""
    services = services_of(request)
    body: A1111Upscale = parse_body(A1111Upscale, await request.body())
    upscalers = [m for m in services.catalog.all() if "upscale" in m.tasks]
    chosen = next((m for m in upscalers if m.name == body.upscaler_1), None) or next(
        (m for m in upscalers if m.upscale_factor == body.upscaling_resize), None
    )
    try:
        info = model_for_task(chosen.name if chosen else None, Task.upscale, services)
        req = GenerateRequest(task=Task.upscale, image=body.image, model=info.name)
        key = request.headers.get("idempotency-key")
        done = await run_sync(services, req, principal, idempotency_key=key)
    except InvalidRequest as exc:
        raise renamed(exc, {"image": "image", "model": "upscaler_1"}) from exc
    notes = upscale_notes(body, info.upscale_factor)
    html = f"<p>Upscaled x{info.upscale_factor} with {info.name}</p>" + "".join(
        f"<p>{n}</p>" for n in notes
    )
    return {"html_info": html, "image": base64.b64encode(done.images[0]).decode()}


@router.get("/progress")
async def progress(request: Request, principal: Reader) -> dict[str, Any]:
    """The caller's latest A1111 job. ``current_image``: its live preview (base64 PNG)
    while it runs, when previews are on (``SDSERVE_PREVIEW_EVERY_S``) and no image
    checker is configured; otherwise null."""
    services = services_of(request)
    job = None
    for job_id in state_of(request).recent(principal.owner):
        candidate = await run_in_threadpool(services.queue.get, job_id)
        if candidate is not None and not candidate.status.terminal:
            job = candidate
            break
    if job is None:
        return _progress_body(0.0, 0.0, "", 0, 0, None)
    total = max(job.progress_total, 1)
    fraction = job.progress_step / total if job.progress_total else 0.0
    eta = 0.0
    if job.started_at and fraction > 0:
        elapsed = time.time() - job.started_at
        eta = elapsed / fraction * (1 - fraction)
    text = None
    if job.status.value == "queued":
        position = await run_in_threadpool(services.queue.queue_position, job.id)
        text = f"queued, {position} jobs ahead"
    body = _progress_body(fraction, eta, job.id, job.progress_step, job.progress_total, text)
    if job.status.value == "running":
        body["current_image"] = await run_in_threadpool(
            current_image, services, job, principal.owner
        )
    return body


def current_image(services: Services, job: Job, tenant: str | None) -> str | None:
    """The job's stored preview, base64, from the caller's space (domain/previews.py)."""
    settings = services.settings
    if not previews_allowed(settings.preview_every_s, settings.image_checker):
        return None
    ident = preview_id(job.id, services.server_key.image_key)
    data = services.blobs.get(ident, tenant=tenant)
    return base64.b64encode(data).decode() if data is not None else None


def _progress_body(
    fraction: float, eta: float, job_id: str, step: int, steps: int, text: str | None
) -> dict[str, Any]:
    return {
        "progress": fraction,
        "eta_relative": eta,
        "state": {
            "skipped": False,
            "interrupted": False,
            "job": job_id,
            "job_count": 1 if job_id else 0,
            "job_timestamp": "0",
            "job_no": 0,
            "sampling_step": step,
            "sampling_steps": steps,
        },
        "current_image": None,
        "textinfo": text,
    }


@router.post("/interrupt")
async def interrupt(request: Request, principal: Writer) -> dict[str, Any]:
    """Cancel the caller's running or queued A1111 jobs (a running one stops at its
    next denoising step)."""
    services = services_of(request)
    stopped = []
    for job_id in state_of(request).recent(principal.owner):
        job = await run_in_threadpool(services.queue.get, job_id)
        if job is not None and not job.status.terminal:
            await run_in_threadpool(services.queue.cancel, job_id)
            services.wakeups.notify_job(job_id)
            stopped.append(job_id)
    return {"interrupted": stopped}


@router.get("/sd-models")
async def sd_models(request: Request, principal: Reader) -> list[dict[str, Any]]:
    services = services_of(request)
    return [
        {
            "title": m.name,
            "model_name": m.name,
            "hash": None,
            "sha256": None,
            "filename": m.source,
            "config": None,
        }
        for m in services.catalog.all()
        if "txt2img" in m.tasks or "inpaint" in m.tasks
    ]


@router.get("/samplers")
async def samplers(principal: Reader) -> list[dict[str, Any]]:
    return [{"name": a, "aliases": [s], "options": {}} for a, s in SAMPLERS.items()]


@router.get("/upscalers")
async def upscalers(request: Request, principal: Reader) -> list[dict[str, Any]]:
    services = services_of(request)
    return [
        {
            "name": m.name,
            "model_name": m.family,
            "model_path": m.source,
            "model_url": None,
            "scale": m.upscale_factor,
        }
        for m in services.catalog.all()
        if "upscale" in m.tasks
    ]


@router.get("/scripts")
async def scripts(principal: Reader) -> dict[str, list[str]]:
    """No scripts or extensions (webuiapi asks at start-up)."""
    return {"txt2img": [], "img2img": []}


@router.get("/options")
async def get_options(request: Request, principal: Reader) -> dict[str, Any]:
    services = services_of(request)
    options = state_of(request).options(principal.owner)
    return {
        "sd_model_checkpoint": options.get("sd_model_checkpoint", services.catalog.default.name),
        "samples_format": options.get("samples_format", "png"),
        "CLIP_stop_at_last_layers": 1,
    }


@router.post("/options")
async def set_options(request: Request, principal: Writer) -> dict[str, Any]:
    """Set ``sd_model_checkpoint`` / ``samples_format`` for this tenant's later
    requests on this API process; other options are accepted and ignored."""
    services = services_of(request)
    try:
        updates = json.loads(await request.body() or b"{}")
    except ValueError as exc:
        raise InvalidRequest.single("body", "request body is not valid JSON") from exc
    if not isinstance(updates, dict):
        raise InvalidRequest.single("body", "must be a JSON object of option names to values")
    kept = {k: v for k, v in updates.items() if k in SETTING_FIELDS}
    if "sd_model_checkpoint" in kept:
        name = checkpoint_name(str(kept["sd_model_checkpoint"]))
        try:
            services.catalog.get(name)
        except InvalidRequest as exc:
            raise renamed(exc, {"model": "sd_model_checkpoint"}) from exc
        kept["sd_model_checkpoint"] = name
    if "samples_format" in kept and str(kept["samples_format"]).lower() not in (
        "png",
        "jpg",
        "jpeg",
        "webp",
    ):
        raise InvalidRequest.single("samples_format", "must be png, jpg, jpeg or webp")
    state_of(request).set_options(principal.owner, kept)
    return {"ignored": sorted(set(updates) - SETTING_FIELDS)}
