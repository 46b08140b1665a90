"""AUTOMATIC1111 API bodies -> the native GenerateRequest.

Field names are A1111's (steps, cfg_scale, sampler_name, batch_size, n_iter, seed -1 =
random, denoising_strength, init_images, mask, override_settings). Fields sdserve
does not implement are accepted and ignored, each named in ``notes`` (shown in the
response's ``info``) when its value would have changed the result; bad values are
422s naming A1111's field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sdserve.api.body import invalid
from sdserve.domain import limits
from sdserve.domain.errors import InvalidRequest
from sdserve.domain.requests import GenerateRequest, OutputFormat, Task

# A1111 sampler names -> sdserve scheduler names (sdserve's own names work too).
SAMPLERS: dict[str, str] = {
    "Euler a": "euler_a",
    "Euler": "euler",
    "DDIM": "ddim",
    "DPM++ 2M": "dpmpp_2m",
    "DPM++ 2M Karras": "dpmpp_2m_karras",
    "UniPC": "unipc",
    "LCM": "lcm",
    "PLMS": "pndm",
    "Heun": "heun",
    "LMS": "lms",
}
_BY_LOWER = {k.lower(): v for k, v in SAMPLERS.items()} | {v: v for v in SAMPLERS.values()}
A1111_NAME = {v: k for k, v in SAMPLERS.items()}

# Native field -> the A1111 field a problem is reported under.
ERROR_NAMES = {
    "num_inference_steps": "steps",
    "guidance_scale": "cfg_scale",
    "num_images": "batch_size",
    "scheduler": "sampler_name",
    "strength": "denoising_strength",
    "image": "init_images",
    "model": "override_settings.sd_model_checkpoint",
    "output_format": "override_settings.samples_format",
}

# Fields A1111 has and sdserve ignores, with the values that change nothing (A1111's
# and webuiapi's defaults). Any other value is ignored with a note.
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "enable_hr": (False,),
    "subseed_strength": (0,),
    "restore_faces": (False, None),
    "tiling": (False, None),
    "eta": (1, None),
    "s_churn": (0, None),
    "s_tmin": (0, None),
    "s_tmax": (0, None),
    "s_noise": (1, None),
    "styles": ([], None),
    "script_name": (None, ""),
    "script_args": ([], None),
    "alwayson_scripts": ({}, None),
    "image_cfg_scale": (1.5, None),
    "initial_noise_multiplier": (1, None),
    "inpainting_fill": (0, 1, None),
    "resize_mode": (0, None),
    "refiner_checkpoint": (None, ""),
    "refiner_switch_at": (None, 0),
    "gfpgan_visibility": (0, None),
    "codeformer_visibility": (0, None),
    "codeformer_weight": (0, None),
    "extras_upscaler_2_visibility": (0, None),
    "upscaler_2": ("None", None, ""),
}
# Known fields that never change an image here (saving, hires-fix settings that only
# apply with enable_hr, seed resizing, bookkeeping): ignored silently.
_HARMLESS = frozenset(
    {
        "sampler_index", "send_images", "save_images", "do_not_save_samples",
        "do_not_save_grid", "override_settings_restore_afterwards", "subseed",
        "seed_resize_from_h", "seed_resize_from_w", "firstphase_width", "firstphase_height",
        "hr_scale", "hr_upscaler", "hr_second_pass_steps", "hr_resize_x", "hr_resize_y",
        "hr_checkpoint_name", "hr_sampler_name", "hr_scheduler", "hr_prompt",
        "hr_negative_prompt", "include_init_images", "inpaint_full_res_padding",
        "disable_extra_networks", "comments", "infotext", "force_task_id", "user",
        "denoising_strength", "inpaint_full_res", "mask_round", "upscaling_resize_w",
        "upscaling_resize_h", "upscaling_crop", "show_extras_results", "upscale_first",
    }
)  # fmt: skip
# Settings (override_settings / POST options) that map to request fields.
SETTING_FIELDS = {"sd_model_checkpoint", "samples_format"}


class A1111Request(BaseModel):
    """txt2img and img2img bodies (img2img adds init_images, mask, ...)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    prompt: str = Field(default="", max_length=limits.MAX_PROMPT_CHARS)
    negative_prompt: str = Field(default="", max_length=limits.MAX_PROMPT_CHARS)
    steps: int = Field(default=limits.DEFAULT_STEPS, ge=limits.MIN_STEPS, le=limits.MAX_STEPS)
    cfg_scale: float = Field(default=7.0, ge=limits.MIN_GUIDANCE, le=limits.MAX_GUIDANCE)
    sampler_name: str | None = None
    sampler_index: str | None = None
    scheduler: str | None = None
    batch_size: int = Field(default=1, ge=1, le=limits.MAX_IMAGES)
    n_iter: int = Field(default=1, ge=1, le=limits.MAX_IMAGES)
    seed: int = Field(default=-1, ge=-1, le=limits.MAX_SEED)
    width: int = Field(default=512, ge=limits.MIN_SIDE, le=limits.MAX_SIDE)
    height: int = Field(default=512, ge=limits.MIN_SIDE, le=limits.MAX_SIDE)
    override_settings: dict[str, Any] | None = None
    denoising_strength: float | None = Field(default=None, ge=0.0, le=1.0)
    # --- img2img ---
    init_images: list[str] | None = Field(default=None, max_length=8)
    mask: str | None = None
    mask_blur: int | None = Field(default=None, ge=0, le=limits.MAX_MASK_BLUR)
    inpainting_mask_invert: int = Field(default=0, ge=0, le=1)
    inpaint_full_res: bool | None = None


class A1111Upscale(BaseModel):
    """/sdapi/v1/extra-single-image."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    image: str = Field(min_length=1)
    upscaling_resize: float = Field(default=2, gt=0, le=8)
    upscaler_1: str | None = None
    resize_mode: int = Field(default=0, ge=0, le=1)


@dataclass
class Translated:
    request: GenerateRequest
    notes: list[str] = field(default_factory=list)
    invert_mask: bool = False


def parse_body(model: type[BaseModel], raw: bytes) -> Any:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise invalid(exc) from exc


def ignored_notes(body: BaseModel, has_mask: bool) -> list[str]:
    notes: list[str] = []
    for name, value in (body.model_extra or {}).items():
        if name in _HARMLESS:
            continue
        if name in _NEUTRAL:
            if value not in _NEUTRAL[name]:
                notes.append(f"{name}={value!r} ignored: not supported by sdserve")
        elif value not in (None, False, 0, "", [], {}):
            notes.append(f"{name} ignored: unknown field")
    if has_mask and getattr(body, "inpaint_full_res", None):
        notes.append("inpaint_full_res ignored: sdserve inpaints at the whole picture's size")
    return notes


def scheduler_for(sampler: str | None, scheduler: str | None, notes: list[str]) -> str | None:
    if sampler is None:
        return None
    name = _BY_LOWER.get(sampler.strip().lower())
    if name is None:
        raise InvalidRequest.single(
            "sampler_name", f"unknown sampler {sampler!r}; valid: {', '.join(SAMPLERS)}"
        )
    if scheduler and scheduler.lower() not in ("automatic", "uniform"):
        if scheduler.lower() == "karras" and name == "dpmpp_2m":
            return "dpmpp_2m_karras"
        notes.append(f"scheduler={scheduler!r} ignored: {sampler} runs its own schedule")
    return name


def checkpoint_name(title: str) -> str:
    """An A1111 checkpoint title ("name.safetensors [hash]") -> the model name."""
    bare = title.split(" [", 1)[0].strip()
    path = PurePath(bare)
    return path.stem if path.suffix in (".safetensors", ".ckpt") else bare


def settings_for(body: A1111Request, options: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """The effective settings: the caller's options, then this request's overrides."""
    merged = {k: v for k, v in options.items() if k in SETTING_FIELDS}
    for name, value in (body.override_settings or {}).items():
        if name in SETTING_FIELDS:
            merged[name] = value
        else:
            notes.append(f"override_settings.{name} ignored: not supported by sdserve")
    return merged


def translate(body: A1111Request, options: dict[str, Any], img2img: bool) -> Translated:
    notes = ignored_notes(body, has_mask=body.mask is not None)
    if body.batch_size * body.n_iter > limits.MAX_IMAGES:
        culprit = "n_iter" if body.n_iter > 1 else "batch_size"
        raise InvalidRequest.single(
            culprit, f"batch_size x n_iter must be at most {limits.MAX_IMAGES}", limits.MAX_IMAGES
        )
    settings = settings_for(body, options, notes)
    native: dict[str, Any] = {
        "prompt": body.prompt,
        "negative_prompt": body.negative_prompt,
        "num_inference_steps": body.steps,
        "guidance_scale": body.cfg_scale,
        "num_images": body.batch_size * body.n_iter,
        "seed": None if body.seed == -1 else body.seed,
        "width": body.width,
        "height": body.height,
        "scheduler": scheduler_for(body.sampler_name or body.sampler_index, body.scheduler, notes),
    }
    if settings.get("sd_model_checkpoint"):
        native["model"] = checkpoint_name(str(settings["sd_model_checkpoint"]))
    if "samples_format" in settings:
        fmt = str(settings["samples_format"]).lower()
        native["output_format"] = "jpeg" if fmt == "jpg" else fmt
        if native["output_format"] not in OutputFormat.__members__:
            raise InvalidRequest.single(
                "override_settings.samples_format", "must be png, jpg, jpeg or webp"
            )
    if img2img:
        if not body.init_images:
            raise InvalidRequest.single("init_images", "img2img needs one init image", 1)
        if len(body.init_images) > 1:
            notes.append("init_images: only the first image is used")
        native["image"] = body.init_images[0]
        native["strength"] = body.denoising_strength if body.denoising_strength else 0.75
        if body.mask is not None:
            native["task"] = Task.inpaint
            native["mask"] = body.mask
            if body.mask_blur is not None:
                native["mask_blur"] = body.mask_blur
        else:
            native["task"] = Task.img2img
    elif body.init_images or body.mask:
        raise InvalidRequest.single("init_images", "only /sdapi/v1/img2img takes images")
    try:
        req = GenerateRequest.model_validate({k: v for k, v in native.items() if v is not None})
    except ValidationError as exc:
        raise invalid(exc) from exc
    return Translated(
        req, notes, invert_mask=body.mask is not None and bool(body.inpainting_mask_invert)
    )


def upscale_notes(body: A1111Upscale, factor: int) -> list[str]:
    notes = ignored_notes(body, has_mask=False)
    if body.resize_mode == 1:
        notes.append("resize_mode=1 ignored: the size is the input's times the upscaler's factor")
    elif body.upscaling_resize != factor:
        notes.append(
            f"upscaling_resize={body.upscaling_resize:g} ignored: this upscaler is x{factor}"
        )
    return notes
