"""The demo model's world: a caption grammar, a scene renderer and a scorer.

Torch-free (numpy + PIL) so the trainer, the evaluator in ``bench/`` and the unit
tests share one definition of what "a small red circle on the left on a blue
background" looks like, and one way of reading a generated image back:

- every pixel is named by its nearest palette colour;
- the background is the most common colour on the image border;
- the object is the largest 4-connected region of the most common other colour;
- its shape is read from how much of its bounding box it fills
  (circle ~0.79, square ~1.0, triangle ~0.5; the nearest wins).
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 30),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
# Colours the base demo model never saw; only adapters (the demo LoRA) teach them.
# sample_scene never draws them; render and the scorer know them when asked.
# (The demo VAE decodes purple, magenta and grey as green: orange is the one it keeps.)
EXTRA_COLORS: dict[str, tuple[int, int, int]] = {"orange": (245, 140, 20)}
ALL_COLORS = {**COLORS, **EXTRA_COLORS}
SHAPES = ("circle", "square", "triangle")
POSITIONS = ("left", "right", "top", "bottom", "center")
SIZES = ("small", "large")
FILL_RATIO = {"circle": float(np.pi / 4), "square": 1.0, "triangle": 0.5}
# Object extent in pixels at 64x64, per size word; None (no word) is in between.
_EXTENT = {"small": (14, 18), None: (22, 30), "large": (36, 42)}
_POSITION_PHRASE = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}
IMAGE_SIZE = 64
MIN_OBJECT_PIXELS = 12


@dataclass(frozen=True)
class Scene:
    color: str
    shape: str
    background: str
    position: str | None = None  # None: anywhere (not said in the caption)
    size: str | None = None  # None: medium (not said in the caption)

    def caption(self) -> str:
        words = ["a"]
        if self.size:
            words.append(self.size)
        words += [self.color, self.shape]
        if self.position:
            words.append(_POSITION_PHRASE[self.position])
        words.append(f"on a {self.background} background")
        return " ".join(words)


def vocabulary() -> list[str]:
    """Every word the grammar can produce (the tokenizer keeps each one whole)."""
    words = {"a", "on", "the", "at", "in", "background"}
    words.update(COLORS, SHAPES, POSITIONS, SIZES)
    return sorted(words)


def sample_scene(rng: random.Random) -> Scene:
    color = rng.choice(list(COLORS))
    background = rng.choice([c for c in COLORS if c != color])
    shape = rng.choice(SHAPES)
    position = rng.choice(POSITIONS) if rng.random() < 0.5 else None
    size = rng.choice(SIZES) if rng.random() < 0.5 else None
    return Scene(color, shape, background, position, size)


def _placement(scene: Scene, rng: random.Random, size: int) -> tuple[float, float, float]:
    """Centre (x, y) and extent of the object, in pixels."""
    lo, hi = _EXTENT[scene.size]
    extent = rng.uniform(lo, hi) * size / IMAGE_SIZE
    half, margin = extent / 2, 2 * size / IMAGE_SIZE
    first, last = half + margin, size - half - margin
    mid = size / 2

    def jitter(v: float) -> float:
        return min(max(v + rng.uniform(-3, 3) * size / IMAGE_SIZE, first), last)

    pos = scene.position
    if pos is None:
        return rng.uniform(first, last), rng.uniform(first, last), extent
    x = {"left": first + size / 16, "right": last - size / 16}.get(pos, mid)
    y = {"top": first + size / 16, "bottom": last - size / 16}.get(pos, mid)
    return jitter(x), jitter(y), extent


def render(scene: Scene, rng: random.Random, size: int = IMAGE_SIZE) -> Image.Image:
    """Draw a scene (flat colours, no antialiasing); ``rng`` picks place and extent."""
    cx, cy, extent = _placement(scene, rng, size)
    img = Image.new("RGB", (size, size), ALL_COLORS[scene.background])
    draw = ImageDraw.Draw(img)
    fill = ALL_COLORS[scene.color]
    h = extent / 2
    box = (cx - h, cy - h, cx + h, cy + h)
    if scene.shape == "circle":
        draw.ellipse(box, fill=fill)
    elif scene.shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(cx, cy - h), (cx + h, cy + h), (cx - h, cy + h)], fill=fill)
    return img


# ----------------------------------------------------------------------------- scoring

_NAMES = list(COLORS)
_PALETTE = np.array([COLORS[n] for n in _NAMES], dtype=np.float32)
_ALL_NAMES = list(ALL_COLORS)
_ALL_PALETTE = np.array([ALL_COLORS[n] for n in _ALL_NAMES], dtype=np.float32)


def color_labels(image: Image.Image | np.ndarray, palette: np.ndarray = _PALETTE) -> np.ndarray:
    """Index into ``palette`` (default: ``COLORS``) of the nearest colour, per pixel."""
    arr = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    pixels = arr.astype(np.float32)[..., None, :]
    dist = ((pixels - palette) ** 2).sum(axis=-1)
    return np.asarray(dist.argmin(axis=-1))


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected region of a boolean mask."""
    h, w = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    best: list[tuple[int, int]] = []
    for y0, x0 in zip(*np.nonzero(mask), strict=True):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        region, queue = [], deque([(int(y0), int(x0))])
        while queue:
            y, x = queue.popleft()
            region.append((y, x))
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        if len(region) > len(best):
            best = region
    out = np.zeros_like(mask, dtype=bool)
    if best:
        ys, xs = zip(*best, strict=True)
        out[list(ys), list(xs)] = True
    return out


@dataclass(frozen=True)
class Reading:
    """What the scorer sees in an image."""

    background: str
    color: str | None  # None: no object found
    shape: str | None
    fill_ratio: float
    bbox: tuple[int, int, int, int] | None  # x0, y0, x1, y1 (inclusive)


def nearest_shape(fill_ratio: float) -> str:
    return min(FILL_RATIO, key=lambda s: abs(FILL_RATIO[s] - fill_ratio))


def read_image(image: Image.Image | np.ndarray, extra_colors: bool = False) -> Reading:
    """What ``image`` shows; ``extra_colors`` adds ``EXTRA_COLORS`` to the palette."""
    names = _ALL_NAMES if extra_colors else _NAMES
    labels = color_labels(image, _ALL_PALETTE if extra_colors else _PALETTE)
    border = np.concatenate(
        [labels[:2].ravel(), labels[-2:].ravel(), labels[:, :2].ravel(), labels[:, -2:].ravel()]
    )
    bg = int(np.bincount(border, minlength=len(names)).argmax())
    counts = np.bincount(labels.ravel(), minlength=len(names))
    counts[bg] = 0
    obj = int(counts.argmax())
    if counts[obj] < MIN_OBJECT_PIXELS:
        return Reading(names[bg], None, None, 0.0, None)
    region = _largest_component(labels == obj)
    ys, xs = np.nonzero(region)
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())
    fill = float(region.sum()) / float((x1 - x0 + 1) * (y1 - y0 + 1))
    return Reading(names[bg], names[obj], nearest_shape(fill), fill, (x0, y0, x1, y1))


@dataclass
class Adherence:
    """Running tally of how often images match what their scenes asked for."""

    total: int = 0
    color: int = 0
    background: int = 0
    shape: int = 0

    def add(self, scene: Scene, reading: Reading) -> None:
        self.total += 1
        self.color += reading.color == scene.color
        self.background += reading.background == scene.background
        self.shape += reading.shape == scene.shape

    def percentages(self) -> dict[str, float]:
        n = max(self.total, 1)
        return {
            "color": 100.0 * self.color / n,
            "background": 100.0 * self.background / n,
            "shape": 100.0 * self.shape / n,
        }
