"""DiffusersEngine: the real GenerationEngine on diffusers pipelines.

Batch invariance (image k of a job depends only on its prompts, seeds[k], its input
images and the shared parameters) rests on three choices made here:

- one torch.Generator per *image*, seeded with that image's seed, so the initial
  latents, the VAE-encode sample of its input image and any ancestral-sampler noise
  of a row never depend on other rows (diffusers encodes input images one row at a
  time when given a list of generators);
- prompts are encoded one distinct prompt at a time (batch of 1) and the embeddings
  repeated per image, so the text encoder never sees a batch whose size could change
  its numerics, and a prompt repeated over N images is encoded once;
- the scheduler is rebuilt from the model's original config for every batch, so no
  state or override carries over from the previous request.

Tasks: txt2img, img2img and inpaint run on the model's pipeline or one derived from it
with ``from_pipe`` (engine/tasks.py); upscale runs tiled (engine/upscale.py). Inpaint
masks and the rule for pixels outside them are in engine/editing.py.

Progress: ``on_step(step, total)`` counts denoising *steps* as diffusers' progress bar
does (a second-order scheduler's two UNet calls are one step); for img2img/inpaint
``total`` is the steps that ``strength`` leaves (domain.requests.steps_run), for a
tiled upscale it is tiles x steps.

Cancellation: ``on_step`` runs after every denoising step. When it names jobs of the
batch they are recorded as canceled and their outputs discarded; their rows keep being
computed (removing rows mid-loop would change tensor shapes under the scheduler), so
dropping some jobs saves no compute. When every job is canceled the denoising loop is
aborted at once (also skipping the VAE decode) and no images are returned.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from sdserve.config import Settings
from sdserve.domain.errors import GenerationFailed, InvalidRequest, OutOfMemory, SdserveError
from sdserve.domain.requests import steps_run
from sdserve.engine.base import (
    BatchItem,
    BatchOutput,
    BatchRequest,
    ItemOutput,
    ModelInfo,
    StepCallback,
)
from sdserve.engine.catalog import Catalog
from sdserve.engine.device import (
    apply_optimisations,
    execution_device,
    free_memory,
    generators,
    make_batch_invariant,
    pick_device,
    pick_dtype,
)
from sdserve.engine.editing import blur_mask, conform, keep_unmasked
from sdserve.engine.latent_preview import LatentPreviewer
from sdserve.engine.loader import load_pipeline
from sdserve.engine.lora_files import lora_path
from sdserve.engine.memory import (
    device_budget,
    estimate_bytes,
    host_tier_budget,
    pipeline_bytes,
)
from sdserve.engine.microbatch import guidance_pairs
from sdserve.engine.model_cache import ModelCache, Resident
from sdserve.engine.previews import first_rows, preview_sink
from sdserve.engine.residency import PipelinePlacement
from sdserve.engine.schedulers import make_scheduler
from sdserve.engine.tasks import AllCanceled, LoadedModel, Progress, task_pipeline
from sdserve.engine.upscale import is_latent_upscaler, run_upscale
from sdserve.observability.cache_metrics import CacheMetrics

log = logging.getLogger(__name__)

_CPU_OOM_MARKERS = ("can't allocate memory", "not enough memory", "out of memory")
_EDITING = ("img2img", "inpaint", "upscale")

__all__ = ["DiffusersEngine", "LoadedModel"]


def truncation_warnings(pipe: Any, item: BatchItem) -> list[str]:
    """A warning for each prompt longer than the text encoder's token window."""
    out: list[str] = []
    tokenizers = [t for t in (pipe.tokenizer, getattr(pipe, "tokenizer_2", None)) if t]
    for label, text in (("prompt", item.prompt), ("negative prompt", item.negative_prompt)):
        if not text:
            continue
        for tok in tokenizers[:1]:  # SDXL's two CLIP tokenizers share a 77-token window
            limit = int(tok.model_max_length)
            n = len(tok(text, truncation=False, add_special_tokens=True).input_ids)
            if n > limit:
                out.append(f"{label} truncated to {limit} tokens (was {n})")
    return out


def _encode(
    pipe: Any, prompt: str, negative: str, device: torch.device, cfg: bool
) -> dict[str, Any]:
    """Embeddings of one prompt pair as pipeline kwargs, each with batch size 1."""
    if hasattr(pipe, "tokenizer_2"):  # SDXL: two encoders and pooled embeddings
        pe, npe, pooled, npooled = pipe.encode_prompt(
            prompt=prompt,
            device=device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=cfg,
            negative_prompt=negative or None,
        )
        out = {"prompt_embeds": pe, "pooled_prompt_embeds": pooled}
        if cfg:
            out |= {"negative_prompt_embeds": npe, "negative_pooled_prompt_embeds": npooled}
        return out
    if is_latent_upscaler(pipe):  # one encoder, hidden states plus pooled output
        pe, npe, pooled, npooled = pipe.encode_prompt(prompt, device, cfg, negative or None)
        out = {"prompt_embeds": pe, "pooled_prompt_embeds": pooled}
        if cfg:
            out |= {"negative_prompt_embeds": npe, "negative_pooled_prompt_embeds": npooled}
        return out
    pe, npe = pipe.encode_prompt(prompt, device, 1, cfg, negative_prompt=negative or None)
    return {"prompt_embeds": pe, "negative_prompt_embeds": npe} if cfg else {"prompt_embeds": pe}


def _uses_cfg(pipe: Any, task: str, guidance_scale: float) -> bool:
    """Whether the pipeline will run classifier-free guidance (and so needs negative
    embeddings): SD pipelines skip it for guidance-distilled (LCM) UNets."""
    if task == "upscale":
        return guidance_scale > 1
    return guidance_scale > 1 and pipe.unet.config.get("time_cond_proj_dim") is None


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        isinstance(exc, MemoryError) or any(m in text for m in _CPU_OOM_MARKERS)
    )


def check_request(info: ModelInfo, req: BatchRequest, scheduler_config: dict[str, Any]) -> None:
    """Refuse what this model cannot do, naming the field (the API checks the same
    through ``ModelInfo.tasks`` / ``schedulers`` before a job is queued)."""
    if req.task not in info.tasks:
        raise InvalidRequest.single(
            "task",
            f"model {info.name!r} ({info.family}) cannot {req.task}; it can: "
            + ", ".join(info.tasks),
        )
    if req.scheduler not in info.schedulers:
        raise InvalidRequest.single(
            "scheduler",
            f"model {info.name!r} takes only: {', '.join(info.schedulers)}",
        )
    # LCM spreads its steps over the distillation schedule and refuses more of them.
    lcm_max = int(scheduler_config.get("original_inference_steps") or 50)
    if req.scheduler == "lcm" and req.num_inference_steps > lcm_max:
        raise InvalidRequest.single(
            "num_inference_steps", f"the lcm scheduler runs at most {lcm_max} steps", lcm_max
        )
    if req.task in _EDITING and any(it.image is None for it in req.items):
        raise InvalidRequest.single("image", f"{req.task} needs an input image")
    if req.task == "inpaint" and any(it.mask is None for it in req.items):
        raise InvalidRequest.single("mask", "inpaint needs a mask (white = repaint)")
    if req.task in ("img2img", "inpaint"):
        if not 0.0 < req.strength <= 1.0:
            raise InvalidRequest.single("strength", "must be in (0, 1]", 1.0)
        if steps_run(req.num_inference_steps, req.strength) < 1:
            raise InvalidRequest.single(
                "strength",
                f"strength {req.strength} of {req.num_inference_steps} steps runs no "
                f"denoising step; needs at least {1 / req.num_inference_steps:.3g}",
            )


class DiffusersEngine:
    """GenerationEngine over diffusers; keeps up to ``max_loaded`` pipelines (LRU)."""

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        max_loaded: int = 1,
        batch_invariant: bool | None = None,
        metrics: CacheMetrics | None = None,
    ) -> None:
        """``batch_invariant``: run UNet/VAE one row at a time so batched images are
        bit-identical to single ones (device.make_batch_invariant). Default: on
        everywhere but CUDA, where batching throughput wins and the difference is a
        few pixel levels (see tests/gpu)."""
        if max_loaded < 1:
            raise ValueError("max_loaded must be at least 1")
        if batch_invariant is None and settings.batch_invariant != "auto":
            batch_invariant = settings.batch_invariant == "on"
        self.batch_invariant = (
            batch_invariant
            if batch_invariant is not None
            else _target_device(settings).type != "cuda"
        )
        self.settings = settings
        self.catalog = catalog
        self.max_loaded = max_loaded
        self.metrics = metrics or CacheMetrics()
        device = _target_device(settings)
        self._dtype = pick_dtype(device, settings.dtype)
        self._models: ModelCache[LoadedModel] = ModelCache(
            PipelinePlacement(device),
            device_budget(settings, device),
            host_tier_budget(settings, device),
            max_loaded,
            self.metrics,
        )
        self._lock = threading.RLock()
        self._ready = False

    # --- lifecycle / models ---

    def load(self) -> None:
        self.get_model(self.catalog.default.name)
        self._ready = True

    def ready(self) -> bool:
        return self._ready

    def loaded_models(self) -> list[str]:
        # No lock (it is held for a whole model load): the cache copies its keys in C.
        return self._models.device_names()

    def residents(self) -> list[Resident]:
        """Each model in memory, its tier (device / host RAM) and its weight bytes."""
        return self._models.residents()

    def model_memory(self) -> dict[str, int]:
        """Bytes of weights each loaded model holds (for the worker's state)."""
        return {r.name: r.nbytes for r in self.residents() if r.tier == "device"}

    def models(self) -> list[ModelInfo]:
        loaded = set(self.loaded_models())
        return [replace(m, loaded=m.name in loaded) for m in self.catalog.all()]

    def get_model(self, name: str) -> LoadedModel:
        """The loaded pipeline for ``name``: on the device already, back from the RAM
        tier, or loaded from disk (LRU models make room first: engine/model_cache.py)."""
        with self._lock:
            info = self.catalog.get(name)
            return self._models.get(
                name,
                lambda: self._load(info),
                lambda: estimate_bytes(info.source, self._dtype),
                lambda m: pipeline_bytes(m.pipe),
            )

    def _load(self, info: ModelInfo) -> LoadedModel:
        started = time.perf_counter()
        pipe = load_pipeline(info, self.settings)
        if self.batch_invariant:
            # Before optimisations: torch.compile and CPU offload must wrap the
            # row-wise forward, not be bypassed by it.
            make_batch_invariant(pipe)
        pipe = apply_optimisations(pipe, self.settings, _target_device(self.settings))
        pipe.set_progress_bar_config(disable=True)
        loaded = LoadedModel(info, pipe, dict(pipe.scheduler.config))
        loaded.adapters.max_loaded = self.settings.max_loaded_loras
        if self.settings.torch_compile:
            self._warm_up(loaded)
        log.info("loaded model %s in %.1fs", info.name, time.perf_counter() - started)
        return loaded

    def _lora_path(self, name: str) -> Path | None:
        return lora_path(self.settings, name)

    def _warm_up(self, model: LoadedModel) -> None:
        """One real generation of the model's own task at its native size (for an
        upscaler: the native output from an input of at most one tile), so compilation
        happens before ready."""
        info = model.info
        task = model.native_task
        width, height, factor = info.default_width, info.default_height, info.upscale_factor
        if task == "upscale":
            side = min(width // factor, self.settings.upscale_tile_size)
            width = height = side * factor
        size = (width // factor, height // factor)
        image = Image.new("RGB", size, (128, 128, 128)) if task != "txt2img" else None
        mask = Image.new("L", size, 255) if task == "inpaint" else None
        req = BatchRequest(
            model=info.name,
            task=task,
            width=width,
            height=height,
            num_inference_steps=2,
            guidance_scale=7.5,
            scheduler="euler" if "euler" in info.schedulers else info.default_scheduler,
            items=[BatchItem("warmup", "warm up", "", [0], image, mask)],
        )
        self._run(model, req, lambda step, total: set())

    # --- generation ---

    def generate(self, request: BatchRequest, on_step: StepCallback) -> BatchOutput:
        with self._lock:
            try:
                model = self.get_model(request.model)
            except SdserveError:
                raise
            except Exception as exc:
                raise _map_error(exc) from exc
            return self._run(model, request, on_step)

    def _run(self, model: LoadedModel, req: BatchRequest, on_step: StepCallback) -> BatchOutput:
        check_request(model.info, req, model.scheduler_config)
        job_ids = {it.job_id for it in req.items}
        editing = req.task in ("img2img", "inpaint")
        steps = steps_run(req.num_inference_steps, req.strength if editing else None)
        progress = Progress(on_step, job_ids, steps)
        sink = preview_sink(on_step)
        if sink is not None and self.settings.image_checker == "off" and req.task != "upscale":
            progress.preview = LatentPreviewer(sink, first_rows(req), req.width, req.height)
        pipe: Any = None
        try:
            model.adapters.apply(model.pipe, req.loras, self._lora_path, self.metrics)
            pipe = task_pipeline(model, req.task, self.settings)
            pairs = _uses_cfg(pipe, req.task, req.guidance_scale)
            with torch.inference_mode(), guidance_pairs(pipe, pairs):
                pipe.scheduler = make_scheduler(req.scheduler, model.scheduler_config)
                images = self._call(model, pipe, req, progress)
        except AllCanceled:
            _free_hooks(pipe)
            return BatchOutput(items={}, canceled=set(job_ids))
        except SdserveError:
            _free_hooks(pipe)
            raise
        except Exception as exc:
            _free_hooks(pipe)
            raise _map_error(exc) from exc

        out: dict[str, ItemOutput] = {}
        row = 0
        for item in req.items:
            n = len(item.seeds)
            if item.job_id not in progress.canceled:
                out[item.job_id] = ItemOutput(
                    item.job_id, list(images[row : row + n]), truncation_warnings(pipe, item)
                )
            row += n
        return BatchOutput(items=out, canceled=progress.canceled)

    def _call(
        self, model: LoadedModel, pipe: Any, req: BatchRequest, progress: Progress
    ) -> list[Image.Image]:
        device = execution_device(pipe)
        cfg = _uses_cfg(pipe, req.task, req.guidance_scale)
        # The latent upscaler's own rule: guidance 0 means an empty prompt.
        blank = req.task == "upscale" and is_latent_upscaler(pipe) and req.guidance_scale == 0
        # Each distinct prompt pair is encoded once, alone (batch of 1): see module doc.
        by_prompt = {
            key: _encode(pipe, "" if blank else key[0], key[1], device, cfg)
            for key in dict.fromkeys((it.prompt, it.negative_prompt) for it in req.items)
        }
        embeds: dict[str, list[torch.Tensor]] = {}
        seeds: list[int] = []
        rows: list[BatchItem] = []  # the item of each image row
        for it in req.items:
            enc = by_prompt[(it.prompt, it.negative_prompt)]
            for seed in it.seeds:
                seeds.append(seed)
                rows.append(it)
                for key, tensor in enc.items():
                    embeds.setdefault(key, []).append(tensor)
        batch = {k: torch.cat(v) for k, v in embeds.items()}
        if req.task == "upscale":
            inputs = [it.image for it in rows if it.image is not None]
            return run_upscale(
                pipe,
                req,
                batch,
                seeds,
                inputs,
                progress,
                model.info.upscale_factor,
                self.settings.upscale_tile_size,
            )
        kwargs: dict[str, Any] = {}
        size = (req.width, req.height)
        originals: list[Image.Image] = []
        masks: list[Image.Image] = []
        if req.task == "txt2img":
            kwargs |= {"width": req.width, "height": req.height}
        else:
            originals = [conform(it.image, size) for it in rows if it.image is not None]
            kwargs |= {"image": originals, "strength": req.strength}
        kwargs |= sdxl_conditioning(model.info, req)
        if req.task == "inpaint":
            masks = [
                blur_mask(conform(it.mask, size, "L"), req.mask_blur)
                for it in rows
                if it.mask is not None
            ]
            kwargs |= {"mask_image": masks, "width": req.width, "height": req.height}
        result = pipe(
            **batch,
            **kwargs,
            num_inference_steps=req.num_inference_steps,
            guidance_scale=req.guidance_scale,
            generator=generators(device, seeds),
            output_type="pil",
            callback_on_step_end=progress.on_step_end,
        )
        images = list(result.images)
        if req.task == "inpaint" and req.keep_unmasked:
            images = [keep_unmasked(*t) for t in zip(images, originals, masks, strict=True)]
        return images


def sdxl_conditioning(info: ModelInfo, req: BatchRequest) -> dict[str, Any]:
    """SDXL's size micro-conditioning, only the values the request set."""
    if info.family != "sdxl":
        return {}
    names = ("original_size", "target_size", "crops_coords_top_left")
    return {n: tuple(getattr(req, n)) for n in names if getattr(req, n) is not None}


def _target_device(settings: Settings) -> torch.device:
    return pick_device(settings.device)


def _free_hooks(pipe: Any) -> None:
    hook = getattr(pipe, "maybe_free_model_hooks", None)
    if callable(hook):
        hook()


def _map_error(exc: BaseException) -> SdserveError:
    if _is_oom(exc):
        free_memory()
        return OutOfMemory(f"out of memory: {exc}")
    return GenerationFailed(f"{type(exc).__name__}: {exc}")
