"""OpenAI Images API requests -> the native GenerateRequest (and its uploads).

The fields are OpenAI's (prompt, model, n, size, response_format, output_format,
quality, style, user, ...); sdserve's own knobs (seed, negative_prompt, steps,
guidance, scheduler, strength) ride along as extra body fields, which the official
SDK sends with ``extra_body``. Problems are reported under the names the client used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile
from starlette.requests import Request

from sdserve.api.body import UnsupportedMediaType, invalid
from sdserve.api.submit import Uploads
from sdserve.domain import limits
from sdserve.domain.errors import InvalidRequest
from sdserve.domain.requests import GenerateRequest, Task
from sdserve.imaging import ImageLimits, encode_png
from sdserve.imaging.decode import decode_transparency

# OpenAI's own model names: a client written for OpenAI sends one of these unchanged,
# and gets the deployment's default model for the task.
OPENAI_MODEL_PREFIXES = ("dall-e-", "gpt-image-")
# A variation is an img2img of the input; OpenAI takes no prompt for it.
VARIATION_PROMPT = "a variation of this image"
VARIATION_STRENGTH = 0.6
_MAX_FORM_FIELDS = 64
_MAX_FORM_FILES = 4

Endpoint = Literal["generations", "edits", "variations"]


class OpenAIImageRequest(BaseModel):
    """Every field OpenAI documents for the three image endpoints, plus sdserve's."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    prompt: str | None = Field(default=None, max_length=limits.MAX_PROMPT_CHARS)
    model: str | None = Field(default=None, max_length=200)
    n: int = Field(default=1, ge=limits.MIN_IMAGES, le=limits.MAX_IMAGES)
    size: str | None = Field(default=None, max_length=20)
    response_format: Literal["url", "b64_json"] | None = None
    output_format: Literal["png", "jpeg", "webp"] | None = None
    quality: Literal["auto", "standard", "hd", "low", "medium", "high"] | None = None
    style: Literal["vivid", "natural"] | None = None
    user: str | None = Field(default=None, max_length=256)
    background: Literal["auto", "transparent", "opaque"] | None = None
    moderation: Literal["auto", "low"] | None = None
    output_compression: int | None = Field(default=None, ge=0, le=100)
    input_fidelity: Literal["high", "low"] | None = None
    partial_images: int | None = Field(default=None, ge=0, le=3)
    stream: bool | None = None
    # --- sdserve's knobs (extra body fields) ---
    seed: int | None = Field(default=None, ge=0, le=limits.MAX_SEED)
    negative_prompt: str | None = Field(default=None, max_length=limits.MAX_PROMPT_CHARS)
    steps: int | None = Field(default=None, ge=limits.MIN_STEPS, le=limits.MAX_STEPS)
    num_inference_steps: int | None = Field(default=None, ge=limits.MIN_STEPS, le=limits.MAX_STEPS)
    guidance: float | None = Field(default=None, ge=limits.MIN_GUIDANCE, le=limits.MAX_GUIDANCE)
    guidance_scale: float | None = Field(
        default=None, ge=limits.MIN_GUIDANCE, le=limits.MAX_GUIDANCE
    )
    scheduler: str | None = Field(default=None, max_length=40)
    strength: float | None = Field(default=None, gt=0.0, le=1.0)


@dataclass
class OpenAIUploads:
    """File parts by field name (``image[]`` may repeat)."""

    files: dict[str, list[bytes]] = field(default_factory=dict)

    def one(self, *names: str) -> tuple[str, bytes] | None:
        found = [(n, data) for n in names for data in self.files.get(n, [])]
        if len(found) > 1:
            raise InvalidRequest.single(
                found[1][0], "sdserve edits one image per request; send a single image", 1
            )
        return found[0] if found else None


async def parse_openai(request: Request) -> tuple[OpenAIImageRequest, OpenAIUploads]:
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype == "multipart/form-data":
        return await _multipart(request)
    if ctype not in ("application/json", ""):
        raise UnsupportedMediaType(
            f"content-type {ctype!r} is not accepted; send application/json or multipart/form-data"
        )
    try:
        body = OpenAIImageRequest.model_validate_json(await request.body(), strict=True)
    except ValidationError as exc:
        raise invalid(exc) from exc
    return body, OpenAIUploads()


async def _multipart(request: Request) -> tuple[OpenAIImageRequest, OpenAIUploads]:
    max_file = request.app.state.services.settings.max_input_bytes
    try:
        form = await request.form(
            max_files=_MAX_FORM_FILES, max_fields=_MAX_FORM_FIELDS, max_part_size=max_file
        )
    except Exception as exc:  # starlette raises its own errors for broken multipart
        raise InvalidRequest.single("body", f"malformed multipart body: {exc}") from exc
    fields: dict[str, Any] = {}
    uploads = OpenAIUploads()
    try:
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key not in ("image", "image[]", "mask"):
                    raise InvalidRequest.single(key, "unexpected file part (image and mask only)")
                uploads.files.setdefault(key, []).append(await value.read())
            else:
                fields[key] = _form_value(value)
    finally:
        await form.close()
    try:
        return OpenAIImageRequest.model_validate(fields), uploads
    except ValidationError as exc:
        raise invalid(exc) from exc


def _form_value(text: str) -> Any:
    stripped = text.strip()
    if stripped[:1] in ("[", "{"):
        try:
            return json.loads(stripped)
        except ValueError:
            return text
    return text


def parse_size(size: str | None) -> tuple[int | None, int | None]:
    """``"1024x1024"`` -> (1024, 1024); ``"auto"`` or nothing -> the model's size."""
    if size is None or size == "auto":
        return None, None
    w, sep, h = size.lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit():
        raise InvalidRequest.single(
            "size", f"must be WIDTHxHEIGHT (e.g. 512x512) or auto: {size!r}"
        )
    return int(w), int(h)


def native_model(name: str | None) -> str | None:
    if name is not None and name.startswith(OPENAI_MODEL_PREFIXES):
        return None  # OpenAI's model names: the deployment's default
    return name


def error_names(body: OpenAIImageRequest) -> dict[str, str]:
    """Native field -> the name this client used, for error messages."""
    set_ = body.model_fields_set
    return {
        "num_images": "n",
        "width": "size",
        "height": "size",
        "num_inference_steps": "num_inference_steps" if "num_inference_steps" in set_ else "steps",
        "guidance_scale": "guidance_scale" if "guidance_scale" in set_ else "guidance",
        "image_id": "image",
    }


def to_native(
    endpoint: Endpoint, body: OpenAIImageRequest, files: OpenAIUploads, image_limits: ImageLimits
) -> tuple[GenerateRequest, Uploads]:
    """The native request this OpenAI request asks for (validation errors are the
    native ones; the caller renames their fields with ``error_names``)."""
    if body.stream:
        raise InvalidRequest.single("stream", "streaming is not supported; leave stream unset")
    if body.background == "transparent":
        raise InvalidRequest.single("background", "transparent backgrounds are not supported")
    width, height = parse_size(body.size)
    native: dict[str, Any] = {
        "prompt": body.prompt or "",
        "model": native_model(body.model),
        "num_images": body.n,
        "width": width,
        "height": height,
        "seed": body.seed,
        "negative_prompt": body.negative_prompt or "",
        "num_inference_steps": body.steps or body.num_inference_steps,
        "guidance_scale": body.guidance if body.guidance is not None else body.guidance_scale,
        "scheduler": body.scheduler,
        "strength": body.strength,
        "output_format": body.output_format,
    }
    uploads = Uploads()
    if endpoint == "generations":
        native["task"] = Task.txt2img
    else:
        image = files.one("image", "image[]")
        if image is None:
            raise InvalidRequest.single("image", "an image file part is required")
        uploads.files["image"] = image[1]
        mask = _edit_mask(files, image[1], image_limits) if endpoint == "edits" else None
        if mask is not None:
            uploads.files["mask"] = mask
            native["task"] = Task.inpaint
        else:
            native["task"] = Task.img2img
        if endpoint == "variations":
            native["prompt"] = body.prompt or VARIATION_PROMPT
            if body.strength is None:
                native["strength"] = VARIATION_STRENGTH
    try:
        req = GenerateRequest.model_validate({k: v for k, v in native.items() if v is not None})
    except ValidationError as exc:
        raise invalid(exc) from exc
    return req, uploads


def _edit_mask(files: OpenAIUploads, image: bytes, image_limits: ImageLimits) -> bytes | None:
    """OpenAI's rule: the mask's fully transparent pixels are repainted; without a mask,
    the image's own fully transparent pixels are. Returned as a native mask (white =
    repaint); a mask without alpha is taken as a native mask already."""
    given = files.one("mask")
    if given is not None:
        area = decode_transparency(given[1], field="mask", limits=image_limits)
        if area is None:
            return given[1]
        if not _any_white(area):
            raise InvalidRequest.single(
                "mask", "has no fully transparent pixel, so nothing would be edited"
            )
        return encode_png(area)
    area = decode_transparency(image, field="image", limits=image_limits)
    if area is not None and _any_white(area):
        return encode_png(area)
    return None


def _any_white(mask: Image.Image) -> bool:
    return mask.getbbox() is not None  # None: every pixel is 0
