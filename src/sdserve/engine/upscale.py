"""Upscaling with the SD x4 upscaler and the x2 latent upscaler, tiled when large.

Memory: an input whose longer side exceeds ``Settings.upscale_tile_size`` is cut
into overlapping tiles of at most that side (editing.TilePlan), each tile is upscaled
by its own pipeline call (all images of the batch together, one tile at a time), and
the results are blended with linear ramps over the overlaps. Peak memory is that of
one tile-sized call whatever the input size; the blended canvas is the only full-size
buffer.

Determinism: tile ``j`` of an image with seed ``s`` draws its noise from a generator
seeded with ``tile_seed(s, j)`` (tile 0 uses ``s`` itself, so an untiled upscale is
exactly the pipeline's output for that seed). Every tile's noise therefore depends on
nothing but the image's seed and the tile's place, never on the batch.

Sizes: the pipelines need sides that are multiples of ``input_multiple`` (the x4
UNet's downsampling; for the latent upscaler the VAE's times half the UNet's) and at
least two of them. Inputs are padded up to that by repeating edge pixels and the
padding is cropped off the output, so any input size works and the output is
exactly input x factor.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from sdserve.domain.errors import InvalidRequest
from sdserve.engine.base import BatchRequest
from sdserve.engine.device import execution_device, generators
from sdserve.engine.editing import Blender, TilePlan, conform, pad_to
from sdserve.engine.tasks import Progress

_GOLDEN = 0x9E3779B97F4A7C15  # odd 64-bit constant: tile seeds spread over 2**64


def is_latent_upscaler(pipe: Any) -> bool:
    return type(pipe).__name__ == "StableDiffusionLatentUpscalePipeline"


def tile_seed(seed: int, index: int) -> int:
    return seed if index == 0 else (seed + index * _GOLDEN) % 2**64


def input_multiple(pipe: Any) -> int:
    """Input sides the pipeline accepts are multiples of this."""
    unet_down = int(2 ** (len(pipe.unet.config.block_out_channels) - 1))
    if is_latent_upscaler(pipe):
        # Input / vae factor = latent side, doubled, then downsampled by the UNet.
        return int(pipe.vae_scale_factor) * max(1, unet_down // 2)
    return unet_down  # the x4 UNet runs at the input's resolution


def input_size(req: BatchRequest, factor: int) -> tuple[int, int]:
    """The low-res input size of an upscale to ``req.width`` x ``req.height``."""
    for name, side in (("width", req.width), ("height", req.height)):
        if side % factor:
            raise InvalidRequest.single(
                name, f"an x{factor} upscale needs an output {name} divisible by {factor}"
            )
    return req.width // factor, req.height // factor


def plan(req: BatchRequest, pipe: Any, factor: int, tile_size: int) -> TilePlan:
    """Tiles over the padded input. Sides are padded to the multiple and to at least
    two of it: the UNet's innermost level must be 2 pixels wide (the latent upscaler's
    K blocks reflect-pad by one)."""
    w, h = input_size(req, factor)
    m = input_multiple(pipe)
    side = max(2 * m, tile_size)
    return TilePlan.make(max(-(-w // m) * m, 2 * m), max(-(-h // m) * m, 2 * m), side, m)


def run_upscale(
    pipe: Any,
    req: BatchRequest,
    embeds: dict[str, torch.Tensor],
    seeds: list[int],
    inputs: list[Image.Image],
    progress: Progress,
    factor: int,
    tile_size: int,
) -> list[Image.Image]:
    """Upscale ``inputs`` (one per seed, rows matching ``embeds``) to the request size."""
    size = input_size(req, factor)
    tiles = plan(req, pipe, factor, tile_size)
    padded = [pad_to(conform(im, size), tiles.width, tiles.height) for im in inputs]
    device = execution_device(pipe)
    blenders = [Blender(tiles, factor) for _ in inputs]
    progress.parts = len(tiles)  # progress counts tiles x steps
    extra: dict[str, Any] = {}
    if not is_latent_upscaler(pipe):
        limit = int(pipe.config.max_noise_level)
        if not 0 <= req.noise_level <= limit:
            raise InvalidRequest.single(
                "noise_level", f"must be between 0 and {limit} for this model", limit
            )
        extra["noise_level"] = req.noise_level
    for tile in tiles:
        progress.start_part(tile.index)
        box = (tile.x, tile.y, tile.x + tile.width, tile.y + tile.height)
        result = pipe(
            **embeds,
            image=[im.crop(box) for im in padded],
            num_inference_steps=req.num_inference_steps,
            guidance_scale=req.guidance_scale,
            generator=generators(device, [tile_seed(s, tile.index) for s in seeds]),
            output_type="np",
            callback=progress.legacy,
            callback_steps=1,
            **extra,
        )
        out = np.asarray(result.images)
        for k, blender in enumerate(blenders):
            blender.add(tile, out[k])
    return [b.image().crop((0, 0, req.width, req.height)) for b in blenders]
