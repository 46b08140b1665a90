"""Image rules shared by the real and the fake engine: input sizes, the inpainting
mask, and the tile plan of large upscales. Torch-free (PIL + numpy).

Mask convention: an "L" image the size of the input, white (255) = repaint, black
(0) = keep. ``mask_blur`` is a Gaussian blur radius in pixels (PIL's GaussianBlur, the
same filter as diffusers' ``mask_processor.blur``); the blurred mask is what the
pipeline sees and what the result is composited with.

Keeping pixels outside the mask: with ``keep_unmasked`` the output is
``composite(generated, input, blurred mask)``: where the blurred mask is 0 the pixel is
the input's, bit for bit; where it is 255 it is the generated pixel; in between the
two are mixed in proportion (a soft seam). Without it the pipeline's raw output is
returned (the VAE round trip changes every pixel a little).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter


def conform(image: Image.Image, size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    """``image`` in ``mode`` at ``size``; the worker normally hands inputs at the
    request size already, this only guards the pipelines' shape assumptions."""
    if image.mode != mode:
        image = image.convert(mode)
    if image.size != size:
        image = image.resize(size, Image.Resampling.LANCZOS)
    return image


def blur_mask(mask: Image.Image, radius: int) -> Image.Image:
    if radius <= 0:
        return mask
    return mask.filter(ImageFilter.GaussianBlur(radius))


def keep_unmasked(generated: Image.Image, original: Image.Image, mask: Image.Image) -> Image.Image:
    """``generated`` where ``mask`` is 255, ``original`` where it is 0, mixed between."""
    return Image.composite(generated, original, mask)


# --- tiling (upscale) ---


def tile_starts(length: int, tile: int, overlap: int, multiple: int) -> list[int]:
    """Start offsets covering ``[0, length)`` with tiles of ``tile`` pixels that
    overlap by at least ``overlap``; every start is a multiple of ``multiple``.

    ``length``, ``tile`` and ``overlap`` are multiples of ``multiple`` and
    ``overlap < tile``. One tile when it fits.
    """
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    span = length - tile
    # Floors of an even spacing: consecutive starts differ by at most tile - overlap.
    starts = [(i * span // (count - 1)) // multiple * multiple for i in range(count)]
    starts[-1] = span
    return starts


@dataclass(frozen=True)
class Tile:
    index: int
    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True)
class TilePlan:
    """How an input of ``width`` x ``height`` (already padded to ``multiple``) is cut."""

    width: int
    height: int
    xs: tuple[int, ...]
    ys: tuple[int, ...]
    tile_w: int
    tile_h: int

    @classmethod
    def make(cls, width: int, height: int, tile_size: int, multiple: int) -> TilePlan:
        tile = max(multiple, tile_size // multiple * multiple)
        # A quarter of the tile overlaps its neighbour: enough context for the seam
        # to blend, few enough extra tiles.
        overlap = max(multiple, tile // 4 // multiple * multiple)
        if overlap >= tile:
            overlap = tile - multiple if tile > multiple else 0
        tw, th = min(tile, width), min(tile, height)
        xs = tile_starts(width, tw, overlap, multiple)
        ys = tile_starts(height, th, overlap, multiple)
        return cls(width, height, tuple(xs), tuple(ys), tw, th)

    def __len__(self) -> int:
        return len(self.xs) * len(self.ys)

    def __iter__(self) -> Iterator[Tile]:
        i = 0
        for y in self.ys:
            for x in self.xs:
                yield Tile(i, x, y, self.tile_w, self.tile_h)
                i += 1


def _ramp(starts: tuple[int, ...], k: int, size: int, scale: int) -> np.ndarray:
    """1-D blend weights of tile ``k`` along one axis, at output scale: linear ramps
    over the overlap with each neighbour, complementary to the neighbour's ramp."""
    w = np.ones(size * scale, dtype=np.float32)
    if k > 0:
        ov = (starts[k - 1] + size - starts[k]) * scale
        if ov > 0:
            w[:ov] = (np.arange(ov) + 0.5) / ov
    if k + 1 < len(starts):
        ov = (starts[k] + size - starts[k + 1]) * scale
        if ov > 0:
            w[size * scale - ov :] = np.minimum(
                w[size * scale - ov :], 1.0 - (np.arange(ov) + 0.5) / ov
            )
    return w


class Blender:
    """Accumulates tile outputs (float RGB in [0, 1]) into one image, feathering the
    overlaps. A single tile is quantised exactly as diffusers' ``numpy_to_pil`` does,
    so an untiled upscale is the pipeline's own output."""

    def __init__(self, plan: TilePlan, scale: int) -> None:
        self.plan, self.scale = plan, scale
        shape = (plan.height * scale, plan.width * scale)
        self.acc = np.zeros((*shape, 3), dtype=np.float32)
        self.weight = np.zeros((*shape, 1), dtype=np.float32)
        self.single: np.ndarray | None = None

    def add(self, tile: Tile, pixels: np.ndarray) -> None:
        p, s = self.plan, self.scale
        if len(p) == 1:
            self.single = pixels
            return
        wx = _ramp(p.xs, p.xs.index(tile.x), tile.width, s)
        wy = _ramp(p.ys, p.ys.index(tile.y), tile.height, s)
        w = (wy[:, None] * wx[None, :])[..., None].astype(np.float32)
        ys = slice(tile.y * s, (tile.y + tile.height) * s)
        xs = slice(tile.x * s, (tile.x + tile.width) * s)
        self.acc[ys, xs] += pixels * w
        self.weight[ys, xs] += w

    def image(self) -> Image.Image:
        out = self.single if self.single is not None else self.acc / self.weight
        return Image.fromarray((out * 255).round().clip(0, 255).astype(np.uint8))


def pad_to(image: Image.Image, width: int, height: int) -> Image.Image:
    """Extend ``image`` right and down to ``width`` x ``height`` by repeating its edge
    pixels (cropped off again after upscaling)."""
    w, h = image.size
    if (w, h) == (width, height):
        return image
    arr = np.pad(np.asarray(image), ((0, height - h), (0, width - w), (0, 0)), mode="edge")
    return Image.fromarray(arr)
