"""Request models for image generation. Pure pydantic: no web framework here."""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sdserve.domain import limits
from sdserve.domain.errors import FieldProblem


class Priority(StrEnum):
    high = "high"
    normal = "normal"
    low = "low"

    @property
    def rank(self) -> int:
        """Smaller runs first."""
        return _PRIORITY_RANK[self]

    @classmethod
    def from_rank(cls, rank: int) -> Priority:
        return _RANK_PRIORITY[rank]


_PRIORITY_RANK = {Priority.high: 0, Priority.normal: 1, Priority.low: 2}
_RANK_PRIORITY = {v: k for k, v in _PRIORITY_RANK.items()}


class OutputFormat(StrEnum):
    png = "png"
    jpeg = "jpeg"
    webp = "webp"

    @property
    def media_type(self) -> str:
        return f"image/{self.value}"


class Task(StrEnum):
    txt2img = "txt2img"
    img2img = "img2img"
    inpaint = "inpaint"
    upscale = "upscale"

    @property
    def needs_image(self) -> bool:
        return self is not Task.txt2img


def steps_run(num_inference_steps: int, strength: float | None) -> int:
    """Denoising steps an img2img/inpaint job really runs (diffusers' rule: the first
    ``(1 - strength)`` of the schedule is skipped)."""
    if strength is None:
        return num_inference_steps
    return min(int(num_inference_steps * strength), num_inference_steps)


def _side_ok(value: int | None, name: str) -> int | None:
    if value is not None and value % limits.SIDE_MULTIPLE != 0:
        raise ValueError(f"{name} must be a multiple of {limits.SIDE_MULTIPLE}")
    return value


_CondSide = Annotated[int, Field(ge=1, le=limits.MAX_SDXL_COND)]
_CropSide = Annotated[int, Field(ge=0, le=limits.MAX_SDXL_COND)]
SizePair = tuple[_CondSide, _CondSide]
CropPair = tuple[_CropSide, _CropSide]
SDXL_CONDITIONING = ("original_size", "target_size", "crops_coords_top_left")


class LoraRef(BaseModel):
    """One LoRA adapter of a request: a file stem in the adapters folder, and a scale."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str = Field(pattern=limits.LORA_NAME_PATTERN)
    scale: float = Field(default=1.0, ge=limits.MIN_LORA_SCALE, le=limits.MAX_LORA_SCALE)


def _distinct_loras(v: list[LoraRef]) -> list[LoraRef]:
    names = [ref.name for ref in v]
    if len(set(names)) != len(names):
        raise ValueError("each adapter may appear once")
    return v


class GenerateRequest(BaseModel):
    """What a client asks for. Optional fields are resolved into a JobSpec at the edge."""

    # NaN/inf are refused as "not a finite number" before any range check.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False, allow_inf_nan=False)

    # Required (non-empty) for every task but upscale, where it is optional.
    prompt: str = Field(default="", max_length=limits.MAX_PROMPT_CHARS)
    negative_prompt: str = Field(default="", max_length=limits.MAX_PROMPT_CHARS)
    width: int | None = Field(default=None, ge=limits.MIN_SIDE, le=limits.MAX_SIDE)
    height: int | None = Field(default=None, ge=limits.MIN_SIDE, le=limits.MAX_SIDE)
    num_inference_steps: int = Field(
        default=limits.DEFAULT_STEPS, ge=limits.MIN_STEPS, le=limits.MAX_STEPS
    )
    guidance_scale: float = Field(
        default=limits.DEFAULT_GUIDANCE, ge=limits.MIN_GUIDANCE, le=limits.MAX_GUIDANCE
    )
    seed: int | None = Field(default=None, ge=0, le=limits.MAX_SEED)
    num_images: int = Field(default=1, ge=limits.MIN_IMAGES, le=limits.MAX_IMAGES)
    scheduler: str | None = Field(default=None, max_length=64)  # default: the model's own
    model: str | None = Field(default=None, max_length=256)
    priority: Priority = Priority.normal
    output_format: OutputFormat = OutputFormat.png
    # --- editing (img2img, inpaint, upscale) ---
    task: Task = Task.txt2img
    # The input image: base64 (or a data: URL) here, or a file part in multipart, or
    # ``image_id`` naming an image the service already has (an earlier output).
    image: str | None = Field(default=None, repr=False)
    image_id: str | None = Field(default=None, max_length=64)
    mask: str | None = Field(default=None, repr=False)  # inpaint: white = repaint
    mask_id: str | None = Field(default=None, max_length=64)
    strength: float | None = Field(default=None, gt=0.0, le=1.0)
    mask_blur: int | None = Field(default=None, ge=0, le=limits.MAX_MASK_BLUR)
    keep_unmasked: bool | None = None
    noise_level: int | None = Field(default=None, ge=0, le=limits.MAX_NOISE_LEVEL)
    # --- model choice (models/: A/B rollouts and routing rules) ---
    # Keeps an A/B rollout's choice sticky per end user (OpenAI's field of that name).
    user: str | None = Field(default=None, min_length=1, max_length=256)
    routing: bool = True  # false: never sent to another model by a routing rule
    # --- SDXL size conditioning (SDXL models only), diffusers' order: sizes are
    # (height, width), the crop offset (top, left) ---
    original_size: SizePair | None = None
    target_size: SizePair | None = None
    crops_coords_top_left: CropPair | None = None
    loras: list[LoraRef] = Field(default_factory=list, max_length=limits.MAX_LORAS)

    @field_validator("loras")
    @classmethod
    def _loras_distinct(cls, v: list[LoraRef]) -> list[LoraRef]:
        return _distinct_loras(v)

    @field_validator("width")
    @classmethod
    def _width_multiple(cls, v: int | None) -> int | None:
        return _side_ok(v, "width")

    @field_validator("height")
    @classmethod
    def _height_multiple(cls, v: int | None) -> int | None:
        return _side_ok(v, "height")

    @field_validator("scheduler")
    @classmethod
    def _known_scheduler(cls, v: str | None) -> str | None:
        if v is not None and v not in limits.SCHEDULER_NAMES:
            raise ValueError(
                f"unknown scheduler {v[:64]!r}; valid: {', '.join(limits.SCHEDULER_NAMES)}"
            )
        return v


class TraceContext(BaseModel):
    """Where a job came from, for logs and traces: the API request's id and the W3C
    traceparent it carried; the worker's log lines and the webhook delivery reuse them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: str | None = Field(default=None, max_length=128)
    traceparent: str | None = Field(default=None, max_length=55)


class JobSpec(BaseModel):
    """A fully resolved request: every effective value, defaults included.

    This is what is stored on a job, shown back as ``parameters`` and handed to the
    engine; image ``i`` of a job uses ``seeds[i]``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: Task = Task.txt2img
    prompt: str
    negative_prompt: str
    width: int
    height: int
    num_inference_steps: int
    guidance_scale: float
    seed: int
    num_images: int
    scheduler: str
    model: str
    priority: Priority
    output_format: OutputFormat
    # Editing inputs are blob ids (never inline bytes: rows are read on every poll).
    # Parameters that do not apply to the task stay None.
    image: str | None = None  # img2img, inpaint, upscale
    mask: str | None = None  # inpaint: white = repaint
    strength: float | None = None  # img2img, inpaint
    mask_blur: int | None = None  # inpaint
    keep_unmasked: bool | None = None  # inpaint: pixels outside the mask kept exactly
    noise_level: int | None = None  # upscale (x4 upscaler)
    # How the model was chosen: the alias or rollout the request named, the routing
    # rule that sent it elsewhere, and the revision (weights hash) of the model used.
    model_alias: str | None = None
    route: str | None = None
    model_revision: str | None = None
    # SDXL size conditioning (None: the pipeline's default, the output size / 0,0).
    original_size: tuple[int, int] | None = None
    target_size: tuple[int, int] | None = None
    crops_coords_top_left: tuple[int, int] | None = None
    trace: TraceContext | None = None  # never part of the batch key
    loras: tuple[LoraRef, ...] = ()  # adapters applied, in the request's order

    @property
    def seeds(self) -> list[int]:
        return image_seeds(self.seed, self.num_images)

    @property
    def batch_key(self) -> str:
        """Jobs with the same key may share one pipeline call (never prompt or seed)."""
        return "|".join(
            str(x)
            for x in (
                self.model,
                self.task.value,
                self.width,
                self.height,
                self.num_inference_steps,
                repr(float(self.guidance_scale)),
                self.scheduler,
                repr(self.strength),
                self.mask_blur,
                self.keep_unmasked,
                self.noise_level,
                *self._sdxl_key(),
                *(f"{ref.name}@{ref.scale!r}" for ref in self.loras),
            )
        )

    def _sdxl_key(self) -> tuple[str, ...]:
        """Present only when set, so older jobs' keys (and batching) stay the same."""
        conds = (self.original_size, self.target_size, self.crops_coords_top_left)
        return () if conds == (None, None, None) else tuple(repr(c) for c in conds)

    @property
    def steps_run(self) -> int:
        return steps_run(self.num_inference_steps, self.strength)

    def public(self) -> dict[str, Any]:
        out = self.model_dump(mode="json")
        out["seeds"] = self.seeds
        out["steps_run"] = self.steps_run
        return out


_TASK_ONLY: dict[str, tuple[Task, ...]] = {
    "strength": (Task.img2img, Task.inpaint),
    "mask_blur": (Task.inpaint,),
    "keep_unmasked": (Task.inpaint,),
    "noise_level": (Task.upscale,),
}


def task_field_problems(req: GenerateRequest, image_given: bool = False) -> list[FieldProblem]:
    """Which inputs a task needs and which parameters only apply to other tasks.
    ``image_given``: the input image arrives by another way (a workflow's chain)."""
    out: list[FieldProblem] = []
    if not req.prompt and req.task is not Task.upscale:
        out.append(FieldProblem("prompt", "must not be empty (only an upscale may omit it)", 1))
    has_image = image_given or req.image is not None or req.image_id is not None
    has_mask = req.mask is not None or req.mask_id is not None
    if req.image is not None and req.image_id is not None:
        out.append(FieldProblem("image", "give either image or image_id, not both"))
    if req.mask is not None and req.mask_id is not None:
        out.append(FieldProblem("mask", "give either mask or mask_id, not both"))
    if req.task.needs_image and not has_image:
        msg = f"task {req.task.value} needs an input image (image or image_id)"
        out.append(FieldProblem("image", msg))
    if not req.task.needs_image and (req.image is not None or req.image_id is not None):
        out.append(FieldProblem("image", "only applies to img2img, inpaint and upscale"))
    if req.task is Task.inpaint and not has_mask:
        msg = "task inpaint needs a mask (mask or mask_id; white = repaint)"
        out.append(FieldProblem("mask", msg))
    if req.task is not Task.inpaint and has_mask:
        out.append(FieldProblem("mask", "only applies to inpaint"))
    for name, tasks in _TASK_ONLY.items():
        if getattr(req, name) is not None and req.task not in tasks:
            which = " and ".join(t.value for t in tasks)
            out.append(FieldProblem(name, f"only applies to {which}"))
    if req.task is Task.upscale:
        for name in ("width", "height"):
            if getattr(req, name) is not None:
                msg = "an upscale's size follows from its input and the upscaler's factor"
                out.append(FieldProblem(name, msg))
    return out


def image_seeds(seed: int, count: int) -> list[int]:
    """Image i of a request with seed s uses s+i (wrapping at 2**32)."""
    return [(seed + i) % (limits.MAX_SEED + 1) for i in range(count)]


def request_fingerprint(body: dict[str, Any]) -> str:
    """Stable hash of a submitted body, for idempotency-key comparison."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class JobRequest(GenerateRequest):
    """POST /v1/jobs: a generation request plus where to report the outcome."""

    callback_url: str | None = Field(default=None, max_length=2048)


class StepSource(StrEnum):
    previous = "previous"
    original = "original"


class WorkflowStepRequest(GenerateRequest):
    """One step of POST /v1/workflows: a generation request whose input image may come
    from the step before (``input: "previous"``, the default after the first step) or
    from the workflow's own image (``"original"``, the default for a first editing
    step); a step may also bring its own ``image``/``image_id``. The workflow's
    priority applies to every step."""

    input: StepSource | None = None


class WorkflowRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    steps: list[WorkflowStepRequest] = Field(min_length=1, max_length=limits.MAX_WORKFLOW_STEPS)
    image: str | None = Field(default=None, repr=False)
    image_id: str | None = Field(default=None, max_length=64)
    priority: Priority = Priority.normal
    callback_url: str | None = Field(default=None, max_length=2048)
