"""The upscaler's training data: each procedural scene rendered twice from the same
random draws, at 64 and at 256 pixels (same geometry), and aligned crops of them
(16x16 low-res <-> 64x64 high-res). Torch tensors, no model."""

from __future__ import annotations

import random

import numpy as np
import torch

from sdserve.training.scenes import IMAGE_SIZE, Scene, read_image, render, sample_scene

SCALE = 4
HIGH = IMAGE_SIZE * SCALE
CROP = 64  # high-res crop side (16 low-res pixels, 16x16 latents)


def render_pair(scene: Scene, rng: random.Random) -> tuple[np.ndarray, np.ndarray]:
    """The same scene (same place and extent) rendered at 64 and at 256 pixels."""
    state = rng.getstate()
    low = np.asarray(render(scene, rng, IMAGE_SIZE))
    rng.setstate(state)
    high = np.asarray(render(scene, rng, HIGH))
    return low, high


def make_pairs(num_scenes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``num_scenes`` whole (64x64, 256x256) uint8 renders of the same scenes."""
    rng = random.Random(seed)
    pairs = [render_pair(sample_scene(rng), rng) for _ in range(num_scenes)]
    return _stack([p[0] for p in pairs]), _stack([p[1] for p in pairs])


def _stack(arrays: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def crop_windows(lows: torch.Tensor, per_image: int, seed: int) -> list[tuple[int, int, int]]:
    """(image, x, y) of ``per_image`` 16x16 low-res windows per image, 3 in 4 of them
    near the object (crops of plain background teach little)."""
    rng = random.Random(seed)
    lc = CROP // SCALE
    windows = []
    for i, low in enumerate(lows):
        box = read_image(low.permute(1, 2, 0).numpy()).bbox
        for _ in range(per_image):
            if box is not None and rng.random() < 0.75:
                cx = rng.randint(box[0], box[2]) if rng.random() < 0.5 else rng.choice(box[::2])
                cy = rng.randint(box[1], box[3]) if rng.random() < 0.5 else rng.choice(box[1::2])
                x = min(max(cx - lc // 2 + rng.randint(-3, 3), 0), IMAGE_SIZE - lc)
                y = min(max(cy - lc // 2 + rng.randint(-3, 3), 0), IMAGE_SIZE - lc)
            else:
                x, y = rng.randint(0, IMAGE_SIZE - lc), rng.randint(0, IMAGE_SIZE - lc)
            windows.append((i, x, y))
    return windows


def cut(images: torch.Tensor, windows: list[tuple[int, int, int]]) -> torch.Tensor:
    """The windows (in low-res pixels) of images at any multiple of the low-res size."""
    s = images.shape[-1] // IMAGE_SIZE
    c = CROP // SCALE * s
    return torch.stack([images[i, :, y * s : y * s + c, x * s : x * s + c] for i, x, y in windows])
