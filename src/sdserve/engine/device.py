"""Device and dtype choice, and the memory/speed options from Settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from sdserve.config import Settings
from sdserve.engine.microbatch import wrap_unet

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Placement:
    device: torch.device
    dtype: torch.dtype


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def pick_device(setting: str = "auto") -> torch.device:
    """auto: cuda > mps > cpu. An explicit choice that is unavailable is an error,
    not a silent fallback: a worker configured for CUDA must not crawl along on CPU."""
    if setting == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("SDSERVE_DEVICE=cuda but no CUDA device is available")
    if setting == "mps" and not _mps_available():
        raise RuntimeError("SDSERVE_DEVICE=mps but MPS is not available")
    return torch.device(setting)


def pick_dtype(device: torch.device, setting: str = "auto") -> torch.dtype:
    """auto: fp16 on accelerators, fp32 on CPU. fp16 on CPU is slow and partly
    unsupported, so it falls back to fp32 with a warning (bf16 on CPU is allowed)."""
    if setting == "auto":
        return torch.float32 if device.type == "cpu" else torch.float16
    dtype = _DTYPES[setting]
    if device.type == "cpu" and dtype is torch.float16:
        log.warning("float16 is not supported well on CPU; using float32")
        return torch.float32
    return dtype


def placement(settings: Settings) -> Placement:
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    device = pick_device(settings.device)
    return Placement(device, pick_dtype(device, settings.dtype))


def apply_optimisations(pipe: Any, settings: Settings, device: torch.device) -> Any:
    """Move the pipeline to ``device`` (or set up CPU offload) and switch on options.

    Attention stays on PyTorch SDPA (diffusers' default AttnProcessor2_0) unless
    slicing is asked for, which trades speed for memory.
    """
    if settings.cpu_offload and device.type == "cuda":
        # Offload moves each model to the GPU only while it runs; never .to() first.
        pipe.enable_model_cpu_offload(device=device)
    else:
        if settings.cpu_offload:
            log.warning("cpu_offload needs a CUDA device; ignored on %s", device.type)
        pipe.to(device)
    if settings.attention_slicing:
        pipe.enable_attention_slicing()
    vae = getattr(pipe, "vae", None)
    if vae is not None and settings.vae_slicing:
        vae.enable_slicing()
    if vae is not None and settings.vae_tiling:
        vae.enable_tiling()
    if settings.fuse_qkv and hasattr(pipe, "fuse_qkv_projections"):
        # One GEMM instead of three per attention block; numerics move by float
        # rounding only (tests/unit/test_engine_options.py bounds it).
        pipe.fuse_qkv_projections()
    if settings.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
        if vae is not None:
            vae.to(memory_format=torch.channels_last)
    if settings.torch_compile:
        # The UNet is where the time goes; the VAE decoder is opt-in (compile_vae).
        # The caller warms both up before ready.
        compiled = torch.compile(pipe.unet, mode=settings.torch_compile_mode)
        _contiguous_sample(compiled)
        pipe.unet = compiled
        if vae is not None and settings.compile_vae:
            vae.decoder = torch.compile(vae.decoder, mode=settings.torch_compile_mode)
    return pipe


def _contiguous_sample(compiled: Any) -> None:
    """Hand the compiled UNet contiguous latents. img2img/inpaint latents come out of
    the VAE encoder channels-last; a compiled module guards on its inputs' strides, so
    the first editing request would otherwise recompile (minutes with inductor) after
    the txt2img warm-up. ``forward`` is the OptimizedModule's own (an instance
    attribute): this runs outside the compiled region, so no guard sees the strides."""
    inner = compiled.forward

    def forward(sample: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        return inner(sample.contiguous(), *args, **kwargs)

    compiled.forward = forward


def share_placement(pipe: Any, settings: Settings) -> None:
    """Placement for a pipeline built with ``from_pipe`` around components that
    ``apply_optimisations`` already placed. Devices, slicing and a compiled UNet live on
    the shared modules and carry over; model CPU offload is per pipeline (its hooks
    chain the pipeline's own components), so the new pipeline installs its own. Each
    offloaded pipeline re-installs its hooks at the end of every call, so the two never
    leave a module stranded on the wrong device."""
    if settings.cpu_offload and pick_device(settings.device).type == "cuda":
        pipe.enable_model_cpu_offload(device=pick_device(settings.device))


def execution_device(pipe: Any) -> torch.device:
    """Where the pipeline computes (with offload the modules sit on CPU in between)."""
    dev = getattr(pipe, "_execution_device", None)
    return dev if isinstance(dev, torch.device) else torch.device("cpu")


def generators(device: torch.device, seeds: list[int]) -> list[torch.Generator]:
    """One generator per image, so each image's noise depends only on its own seed.
    On CUDA they live on the device (CUDA's RNG stream, not CPU's): the same seed gives
    different images on CPU and on GPU, but the same image on every GPU run."""
    gen_device = device if device.type == "cuda" else torch.device("cpu")
    return [torch.Generator(device=gen_device).manual_seed(s) for s in seeds]


def free_memory() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def make_batch_invariant(pipe: Any) -> None:
    """Run the UNet in fixed-shape micro-batches (one image's guidance pair, or one
    row; engine/microbatch.py) and decode the VAE one image at a time, so image k of a
    job is bit-identical however it was batched. Text encoding is already per prompt
    (see pipelines.py). On a GPU this gives up batching throughput, so there it is
    opt-in.
    """
    wrap_unet(pipe.unet)
    if getattr(pipe, "vae", None) is not None:
        pipe.vae.enable_slicing()  # decodes z.split(1): one image per call
