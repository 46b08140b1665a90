"""DiffusersEngine: the real GenerationEngine on diffusers pipelines.

Batch invariance (image k of a job depends only on its prompts, seeds[k] and the
shared parameters) rests on three choices made here:

- one torch.Generator per *image*, seeded with that image's seed, so the initial
  latents and any ancestral-sampler noise of a row never depend on other rows;
- prompts are encoded one distinct prompt at a time (batch of 1) and the embeddings
  repeated per image, so the text encoder never sees a batch whose size could change
  its numerics, and a prompt repeated over N images is encoded once;
- the scheduler is rebuilt from the model's original config for every batch, so no
  state or override carries over from the previous request.

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
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any

import torch

from sdserve.config import Settings
from sdserve.domain.errors import GenerationFailed, OutOfMemory, SdserveError
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
)
from sdserve.engine.loader import load_pipeline
from sdserve.engine.schedulers import make_scheduler

log = logging.getLogger(__name__)

_CPU_OOM_MARKERS = ("can't allocate memory", "not enough memory", "out of memory")


class _AllCanceled(Exception):
    """Raised from the step callback to leave the denoising loop at once."""


@dataclass
class LoadedModel:
    info: ModelInfo
    pipe: Any
    scheduler_config: dict[str, Any]  # the model's own, before any per-request switch


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


def _encode(pipe: Any, item: BatchItem, device: torch.device, cfg: bool) -> dict[str, Any]:
    """Embeddings of one item's prompts as pipeline kwargs, each with batch size 1."""
    if hasattr(pipe, "tokenizer_2"):  # SDXL: two encoders and pooled embeddings
        pe, npe, pooled, npooled = pipe.encode_prompt(
            prompt=item.prompt,
            device=device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=cfg,
            negative_prompt=item.negative_prompt or None,
        )
        out = {"prompt_embeds": pe, "pooled_prompt_embeds": pooled}
        if cfg:
            out |= {"negative_prompt_embeds": npe, "negative_pooled_prompt_embeds": npooled}
        return out
    pe, npe = pipe.encode_prompt(
        item.prompt, device, 1, cfg, negative_prompt=item.negative_prompt or None
    )
    return {"prompt_embeds": pe, "negative_prompt_embeds": npe} if cfg else {"prompt_embeds": pe}


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        isinstance(exc, MemoryError) or any(m in text for m in _CPU_OOM_MARKERS)
    )


class DiffusersEngine:
    """GenerationEngine over diffusers; keeps up to ``max_loaded`` pipelines (LRU)."""

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        max_loaded: int = 1,
        batch_invariant: bool | None = None,
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
        self._cache: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.RLock()
        self._ready = False

    # --- lifecycle / models ---

    def load(self) -> None:
        self.get_model(self.catalog.default.name)
        self._ready = True

    def ready(self) -> bool:
        return self._ready

    def loaded_models(self) -> list[str]:
        # No lock: it is held for a whole model load. Copying the dict's keys in C
        # holds the GIL, so a concurrent load or eviction cannot tear the copy.
        return list(self._cache)

    def models(self) -> list[ModelInfo]:
        return [replace(m, loaded=m.name in self._cache) for m in self.catalog.all()]

    def get_model(self, name: str) -> LoadedModel:
        """The loaded pipeline for ``name``, loading it (and evicting LRU) on demand."""
        with self._lock:
            hit = self._cache.get(name)
            if hit is not None:
                self._cache.move_to_end(name)
                return hit
            info = self.catalog.get(name)
            # Evict first: two large pipelines may not fit side by side.
            while len(self._cache) >= self.max_loaded:
                old, _ = self._cache.popitem(last=False)
                log.info("unloading model %s", old)
                free_memory()
            started = time.perf_counter()
            pipe = load_pipeline(info, self.settings)
            if self.batch_invariant:
                # Before optimisations: torch.compile and CPU offload must wrap the
                # row-wise forward, not be bypassed by it.
                make_batch_invariant(pipe)
            pipe = apply_optimisations(pipe, self.settings, _target_device(self.settings))
            pipe.set_progress_bar_config(disable=True)
            loaded = LoadedModel(info, pipe, dict(pipe.scheduler.config))
            if self.settings.torch_compile:
                self._warm_up(loaded)
            self._cache[name] = loaded
            log.info("loaded model %s in %.1fs", name, time.perf_counter() - started)
            return loaded

    def _warm_up(self, model: LoadedModel) -> None:
        """One real generation at the native size, so compilation happens before ready."""
        info = model.info
        req = BatchRequest(
            model=info.name,
            task="txt2img",
            width=info.default_width,
            height=info.default_height,
            num_inference_steps=2,
            guidance_scale=7.5,
            scheduler="euler",
            items=[BatchItem("warmup", "warm up", "", [0])],
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
        pipe = model.pipe
        job_ids = {it.job_id for it in req.items}
        canceled: set[str] = set()

        def step_end(p: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            dropped = on_step(i + 1, int(p.num_timesteps)) & job_ids
            canceled.update(dropped)
            if canceled == job_ids:
                p._interrupt = True
                raise _AllCanceled
            return {}

        try:
            with torch.inference_mode():
                pipe.scheduler = make_scheduler(req.scheduler, model.scheduler_config)
                images = self._call(pipe, req, step_end)
        except _AllCanceled:
            _free_hooks(pipe)
            return BatchOutput(items={}, canceled=set(job_ids))
        except SdserveError:
            raise
        except Exception as exc:
            _free_hooks(pipe)
            raise _map_error(exc) from exc

        out: dict[str, ItemOutput] = {}
        row = 0
        for item in req.items:
            n = len(item.seeds)
            if item.job_id not in canceled:
                out[item.job_id] = ItemOutput(
                    item.job_id, list(images[row : row + n]), truncation_warnings(pipe, item)
                )
            row += n
        return BatchOutput(items=out, canceled=canceled)

    def _call(self, pipe: Any, req: BatchRequest, step_end: Any) -> list[Any]:
        device = execution_device(pipe)
        cfg = req.guidance_scale > 1 and pipe.unet.config.get("time_cond_proj_dim") is None
        # Each distinct prompt pair is encoded once, alone (batch of 1): see module doc.
        by_prompt = {
            (it.prompt, it.negative_prompt): _encode(pipe, it, device, cfg)
            for it in _distinct(req.items)
        }
        embeds: dict[str, list[torch.Tensor]] = {}
        seeds: list[int] = []
        for it in req.items:
            enc = by_prompt[(it.prompt, it.negative_prompt)]
            for seed in it.seeds:
                seeds.append(seed)
                for key, tensor in enc.items():
                    embeds.setdefault(key, []).append(tensor)
        result = pipe(
            **{k: torch.cat(v) for k, v in embeds.items()},
            width=req.width,
            height=req.height,
            num_inference_steps=req.num_inference_steps,
            guidance_scale=req.guidance_scale,
            generator=generators(device, seeds),
            output_type="pil",
            callback_on_step_end=step_end,
        )
        return list(result.images)


def _distinct(items: list[BatchItem]) -> list[BatchItem]:
    """One item per distinct (prompt, negative prompt), in first-seen order."""
    seen: dict[tuple[str, str], BatchItem] = {}
    for it in items:
        seen.setdefault((it.prompt, it.negative_prompt), it)
    return list(seen.values())


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
