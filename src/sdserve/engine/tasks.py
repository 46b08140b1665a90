"""Task pipelines over one loaded model, and progress in denoising steps.

One loaded checkpoint serves every task of its family (base.FAMILY_TASKS). A
text-to-image pipeline gets its img2img and inpainting pipelines from diffusers'
``from_pipe``: a new pipeline object around the *same* component modules (UNet, VAE,
text encoders), so a second task costs no second copy of the weights, and the
row-wise UNet, attention/VAE slicing and compiled UNet set up at load time carry over.
Inpainting checkpoints (9-channel UNet) and upscalers are loaded as their own pipeline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sdserve.config import Settings
from sdserve.engine.base import ModelInfo, StepCallback
from sdserve.engine.device import share_placement
from sdserve.engine.lora import LoraSet

# The task a family's loaded pipeline runs as it is; other tasks are derived from it.
_NATIVE_TASK = {"inpaint": "inpaint", "upscaler": "upscale", "latent-upscaler": "upscale"}


@dataclass
class LoadedModel:
    info: ModelInfo
    pipe: Any  # the pipeline load_pipeline built
    scheduler_config: dict[str, Any]  # the model's own, before any per-request switch
    derived: dict[str, Any] = field(default_factory=dict)  # task -> from_pipe pipeline
    adapters: LoraSet = field(default_factory=LoraSet)  # LoRA adapters attached to it

    @property
    def native_task(self) -> str:
        return _NATIVE_TASK.get(self.info.family, "txt2img")


class AllCanceled(Exception):
    """Raised from a step callback to leave the denoising loop at once."""


def task_pipeline(model: LoadedModel, task: str, settings: Settings) -> Any:
    """The pipeline running ``task`` on ``model`` (derived once, then reused)."""
    if task == model.native_task:
        return model.pipe
    pipe = model.derived.get(task)
    if pipe is None:
        pipe = _derive(model.pipe, task)
        share_placement(pipe, settings)
        pipe.set_progress_bar_config(disable=True)
        model.derived[task] = pipe
    return pipe


def _derive(pipe: Any, task: str) -> Any:
    import diffusers

    auto = {
        "img2img": diffusers.AutoPipelineForImage2Image,
        "inpaint": diffusers.AutoPipelineForInpainting,
    }[task]
    # The Auto* from_pipe maps the pipeline class by family (SD -> SD img2img/inpaint,
    # SDXL -> SDXL ones) and passes the component objects as they are: unlike the
    # concrete classes' from_pipe it neither re-casts them to float32 (which would
    # convert the shared fp16 weights in place) nor drops a torch.compile'd UNet
    # whose wrapper class differs from the signature's.
    return auto.from_pipe(pipe)


# --- progress ---


def is_step_end(i: int, n: int, steps: int, order: int) -> bool:
    """Whether loop iteration ``i`` of ``n`` finishes one of ``steps`` denoising steps:
    diffusers' own progress-bar rule. Second-order schedulers (heun) run two
    iterations per step (the last step one); PNDM runs one warm-up iteration more
    than it has steps."""
    warmup = n - steps * order
    return i == n - 1 or ((i + 1) > warmup and (i + 1) % order == 0)


class Progress:
    """Reports finished denoising steps to ``on_step`` and collects cancellations.

    ``steps`` is what one pipeline call runs (``num_inference_steps``, or what
    ``strength`` leaves of it); ``parts`` calls of that length (upscale tiles) make
    one run, and step and total count over all of them.
    """

    def __init__(
        self, on_step: StepCallback, job_ids: set[str], steps: int, parts: int = 1
    ) -> None:
        self.on_step = on_step
        self.job_ids = job_ids
        self.steps = steps
        self.parts = parts
        self.part = 0
        self.done = 0  # steps finished in the current part
        self.canceled: set[str] = set()
        # Live previews (engine/latent_preview.py), called with the step's tensors.
        self.preview: Callable[[dict[str, Any], set[str]], None] | None = None

    def start_part(self, index: int) -> None:
        self.part, self.done = index, 0

    def _step(self) -> None:
        self.done = min(self.done + 1, self.steps)
        dropped = self.on_step(self.part * self.steps + self.done, self.steps * self.parts)
        self.canceled |= dropped & self.job_ids
        if self.canceled == self.job_ids:
            raise AllCanceled

    def on_step_end(self, pipe: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        """For ``callback_on_step_end`` (txt2img, img2img, inpaint), which diffusers
        calls after every loop iteration, ``pipe.num_timesteps`` of them."""
        order = int(getattr(pipe.scheduler, "order", 1))
        if is_step_end(i, int(pipe.num_timesteps), self.steps, order):
            if self.preview is not None:
                self.preview(kwargs, self.canceled)
            try:
                self._step()
            except AllCanceled:
                pipe._interrupt = True
                raise
        return {}

    def legacy(self, step_idx: int, t: Any, latents: Any) -> None:
        """For the upscalers' older ``callback(step, t, latents)``, which diffusers
        already calls once per finished step."""
        self._step()
