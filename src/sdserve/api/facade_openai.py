"""The OpenAI-compatible Images API: /v1/images/generations, /edits, /variations.

A thin translator (DESIGN.md, Facades): the request becomes a native GenerateRequest
and goes through the one job core (auth, tenants, validation, limits, queue), and the
finished job becomes OpenAI's response. Errors use OpenAI's envelope
``{"error": {"message", "type", "param", "code"}}`` with sdserve's error type as
``code``; invalid input is a 400 as on OpenAI (the SDK raises BadRequestError).
"""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, Response

from sdserve.api.auth import Reader, Writer
from sdserve.api.facade_common import ErrorFacts, facade_route, renamed, retry_headers
from sdserve.api.openai_inputs import (
    Endpoint,
    OpenAIImageRequest,
    error_names,
    parse_openai,
    to_native,
)
from sdserve.api.openapi_doc import request_body_doc
from sdserve.api.services import Services, services_of
from sdserve.api.sync_run import Finished, run_sync
from sdserve.domain.errors import InvalidRequest, NotFound
from sdserve.engine.base import ModelInfo
from sdserve.imaging import ImageLimits
from sdserve.storage.urls import image_url

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
}


def render_openai_error(request: Request, facts: ErrorFacts) -> Response:
    # OpenAI answers bad parameters with 400 (the SDK's BadRequestError), not 422.
    status = 400 if facts.type == "validation_error" else facts.status
    err_type = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "api_error")
    error: dict[str, Any] = {
        "message": facts.message,
        "type": err_type,
        "param": facts.param,
        "code": facts.type,
    }
    if facts.problems:
        error["fields"] = [p.as_dict() for p in facts.problems]
    return JSONResponse({"error": error}, status_code=status, headers=retry_headers(facts))


router = APIRouter(route_class=facade_route(render_openai_error), tags=["openai"])


async def _images(
    endpoint: Endpoint, request: Request, principal: Writer, idempotency_key: str | None
) -> dict[str, Any]:
    services = services_of(request)
    body, files = await parse_openai(request)
    settings = services.settings
    image_limits = ImageLimits(settings.max_input_bytes, settings.max_input_pixels)
    names = error_names(body)
    try:
        req, uploads = to_native(endpoint, body, files, image_limits)
        done = await run_sync(
            services, req, principal, uploads=uploads, idempotency_key=idempotency_key
        )
    except InvalidRequest as exc:
        raise renamed(exc, names) from exc
    return _response(services, request, body, done)


def _response(
    services: Services, request: Request, body: OpenAIImageRequest, done: Finished
) -> dict[str, Any]:
    job = done.job
    assert job.result is not None
    spec = job.spec
    fmt = body.response_format or (
        "b64_json" if (body.model or "").startswith("gpt-image-") else "url"
    )
    base = str(request.base_url).rstrip("/")
    data = []
    for image, raw in zip(job.result.images, done.images, strict=True):
        item: dict[str, Any] = {"revised_prompt": spec.prompt, "seed": image.seed}
        if fmt == "b64_json":
            item["b64_json"] = base64.b64encode(raw).decode()
        else:
            url = image_url(services.settings, services.blobs, image.id, job.owner)
            item["url"] = url if "://" in url else base + url
        data.append(item)
    return {
        "created": int(job.finished_at or time.time()),
        "data": data,
        "output_format": spec.output_format.value,
        "size": f"{spec.width}x{spec.height}",
        "quality": body.quality or "auto",
        # sdserve's knobs come back as they were resolved (defaults included).
        "seed": spec.seed,
        "negative_prompt": spec.negative_prompt,
        "steps": spec.num_inference_steps,
        "guidance": spec.guidance_scale,
        "scheduler": spec.scheduler,
        "model": spec.model,
        "sdserve": {
            "job_id": job.id,
            "parameters": spec.public(),
            "seeds": [im.seed for im in job.result.images],
            "image_ids": [im.id for im in job.result.images],
            "generation_time": job.result.generation_time,
            "warnings": job.result.warnings,
        },
    }


IdempotencyKey = Annotated[str | None, Header()]


@router.post("/v1/images/generations", openapi_extra=request_body_doc(OpenAIImageRequest))
async def generations(
    request: Request, principal: Writer, idempotency_key: IdempotencyKey = None
) -> dict[str, Any]:
    """OpenAI `images.generate`: JSON body; sdserve knobs as extra fields."""
    return await _images("generations", request, principal, idempotency_key)


@router.post("/v1/images/edits", openapi_extra=request_body_doc(OpenAIImageRequest))
async def edits(
    request: Request, principal: Writer, idempotency_key: IdempotencyKey = None
) -> dict[str, Any]:
    """OpenAI `images.edit`: multipart `image` (or one `image[]`) and an optional
    `mask` whose transparent pixels are repainted (inpaint); no mask: img2img, unless
    the image itself has transparent pixels (then those are repainted)."""
    return await _images("edits", request, principal, idempotency_key)


@router.post("/v1/images/variations", openapi_extra=request_body_doc(OpenAIImageRequest))
async def variations(
    request: Request, principal: Writer, idempotency_key: IdempotencyKey = None
) -> dict[str, Any]:
    """OpenAI `images.create_variation`: an img2img of the image (strength 0.6 unless
    given; optional `prompt` extra field)."""
    return await _images("variations", request, principal, idempotency_key)


def openai_model_fields(info: ModelInfo) -> dict[str, Any]:
    """The fields OpenAI's SDK reads from a model (beside the native ones)."""
    source = Path(info.source)
    try:
        created = int(source.stat().st_mtime) if source.exists() else 0
    except OSError:
        created = 0
    return {"id": info.name, "object": "model", "created": created, "owned_by": "sdserve"}


@router.get("/v1/models/{model_id}")
async def retrieve_model(model_id: str, request: Request, principal: Reader) -> dict[str, Any]:
    """OpenAI `models.retrieve` (the list is the native GET /v1/models)."""
    services = services_of(request)
    info = next((m for m in services.catalog.all() if m.name == model_id), None)
    if info is None:
        raise NotFound(f"no model named {model_id[:64]!r}")
    return {
        **openai_model_fields(info),
        "name": info.name,
        "family": info.family,
        "tasks": list(info.tasks),
    }
