"""The engine interface the worker drives. Torch-free: data types and a Protocol."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from PIL import Image

from sdserve.domain.limits import SCHEDULER_NAMES


@dataclass(frozen=True)
class BatchItem:
    """One job's share of a batch: its prompts, one seed per image and, for editing
    tasks, its own input image (RGB) and mask ("L", white = repaint, same size)."""

    job_id: str
    prompt: str
    negative_prompt: str
    seeds: list[int]
    image: Image.Image | None = None
    mask: Image.Image | None = None


@dataclass(frozen=True)
class BatchRequest:
    """Jobs sharing a batch key: everything but prompts and seeds is common."""

    model: str
    task: str
    width: int
    height: int
    num_inference_steps: int
    guidance_scale: float
    scheduler: str
    items: list[BatchItem]
    # Editing parameters, shared by the batch (they are part of the batch key).
    strength: float = 1.0  # img2img / inpaint, diffusers' semantics
    mask_blur: int = 0  # inpaint: Gaussian blur radius applied to the mask
    keep_unmasked: bool = True  # inpaint: pixels where the mask is 0 stay the input's
    noise_level: int = 20  # upscale (x4): noise added to the low-res input
    # SDXL size conditioning, (height, width) / (top, left); None: the pipeline's default.
    original_size: tuple[int, int] | None = None
    target_size: tuple[int, int] | None = None
    crops_coords_top_left: tuple[int, int] | None = None
    loras: tuple[tuple[str, float], ...] = ()  # (adapter name, scale), in request order

    @property
    def num_images(self) -> int:
        return sum(len(it.seeds) for it in self.items)


@dataclass
class ItemOutput:
    job_id: str
    images: list[Image.Image]
    warnings: list[str] = field(default_factory=list)


@dataclass
class BatchOutput:
    items: dict[str, ItemOutput]  # by job id; canceled jobs are absent
    canceled: set[str] = field(default_factory=set)


# Called after every denoising step with (step, total); returns the job ids to drop
# from the batch (canceled). If every job is dropped the engine stops early.
StepCallback = Callable[[int, int], set[str]]


# What a model family can do. A text-to-image checkpoint also edits (img2img and
# inpaint through diffusers' from_pipe); inpainting checkpoints (9-channel UNet) only
# inpaint; upscalers only upscale.
FAMILY_TASKS: dict[str, tuple[str, ...]] = {
    "sd1": ("txt2img", "img2img", "inpaint"),
    "sd2": ("txt2img", "img2img", "inpaint"),
    "sdxl": ("txt2img", "img2img", "inpaint"),
    "unknown": ("txt2img", "img2img", "inpaint"),
    "inpaint": ("inpaint",),
    "upscaler": ("upscale",),  # StableDiffusionUpscalePipeline, x4
    "latent-upscaler": ("upscale",),  # StableDiffusionLatentUpscalePipeline, x2
}
UPSCALE_FACTOR = {"upscaler": 4, "latent-upscaler": 2}
# The latent upscaler's loop reads the scheduler's sigmas and steps it without a
# generator, so only the deterministic sigma-based Euler it ships with fits; every
# other family takes any scheduler of limits.SCHEDULER_NAMES.
FAMILY_SCHEDULERS: dict[str, tuple[str, ...]] = {"latent-upscaler": ("euler",)}


@dataclass(frozen=True)
class ModelInfo:
    name: str
    source: str  # path or hub id
    family: str  # a key of FAMILY_TASKS
    default_width: int
    default_height: int
    loaded: bool = False
    # The scheduler the checkpoint ships with: what a request without one gets.
    default_scheduler: str = "euler_a"
    # Registry fields (models/): a hash of the weight files, other names, the dtype
    # to load in (None: the deployment's) and a single-file checkpoint's config folder.
    revision: str = ""
    aliases: tuple[str, ...] = ()
    dtype: str | None = None
    config: str | None = None

    @property
    def tasks(self) -> tuple[str, ...]:
        return FAMILY_TASKS.get(self.family, ())

    @property
    def upscale_factor(self) -> int:
        """Output side / input side for upscalers (1 for every other family)."""
        return UPSCALE_FACTOR.get(self.family, 1)

    @property
    def schedulers(self) -> tuple[str, ...]:
        """Scheduler names this model accepts (a request for another is refused)."""
        return FAMILY_SCHEDULERS.get(self.family, SCHEDULER_NAMES)


class GenerationEngine(Protocol):
    def load(self) -> None:
        """Load (and warm) the default model; after it returns ``ready()`` is True."""
        ...

    def ready(self) -> bool: ...

    def loaded_models(self) -> list[str]:
        """Names of the models in memory now (cheap, any thread): the worker prefers
        jobs for them (queue model affinity) and publishes them in its state."""
        ...

    def generate(self, request: BatchRequest, on_step: StepCallback) -> BatchOutput:
        """Run one batch. Image ``k`` of item ``i`` must depend only on the item's
        prompts, input image and mask, its seed ``seeds[k]`` and the shared
        parameters, never on the rest of the batch. Raises InvalidRequest (a task,
        scheduler or parameter the model cannot take), OutOfMemory (worker splits and
        retries) or GenerationFailed."""
        ...
