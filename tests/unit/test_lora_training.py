"""The demo LoRA trainer (sdserve.training.lora) on a tiny run: balanced data, object
masks, the diffusers/PEFT file layout with the text encoder's MLP, reproducibility."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from sdserve.training.lora import (
    NEW_COLOR,
    WEIGHT_NAME,
    LoraTrainConfig,
    make_dataset,
    sample_new_scene,
    train,
)
from sdserve.training.scenes import COLORS, SHAPES, read_image

TINY = LoraTrainConfig(num_scenes=24, steps=2, batch=4, rank=2, warmup=1, ema_decay=0.9)


def test_new_scenes_cycle_through_every_shape_and_background() -> None:
    import random

    rng = random.Random(0)
    pairs = Counter((s.shape, s.background) for s in (sample_new_scene(rng, k) for k in range(36)))
    assert set(pairs) == {(shape, bg) for shape in SHAPES for bg in COLORS}
    assert set(pairs.values()) == {2}


def test_dataset_masks_cover_exactly_the_object() -> None:
    from sdserve.training.common import load_base

    images, ids, masks = make_dataset(TINY, load_base().tokenizer)
    assert images.shape == (24, 3, 64, 64) and masks.shape == (24, 1, 64, 64)
    assert ids.shape[0] == 24
    for image, mask in zip(images, masks, strict=True):
        pixels = image.permute(1, 2, 0).numpy()
        reading = read_image(pixels, extra_colors=True)
        colour = np.array(COLORS[reading.background], dtype=np.uint8)
        assert np.array_equal(mask[0].numpy() > 0, (pixels != colour).any(-1))
        assert 0 < mask.sum() < 64 * 64 / 2
    # about half the scenes are orange (new_fraction 0.5)
    oranges = sum(
        read_image(im.permute(1, 2, 0).numpy(), extra_colors=True).color == NEW_COLOR
        for im in images
    )
    assert 6 <= oranges <= 18


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("lora-train")
    cfg = LoraTrainConfig(**{**TINY.__dict__, "object_weight": 2.0, "noise_offset": 0.1})
    return train(root / "a", cfg), train(root / "b", cfg)


def test_tiny_run_writes_the_diffusers_layout_with_text_mlp(two_runs: tuple[Path, Path]) -> None:
    from safetensors import safe_open

    path, _ = two_runs
    assert path.name == WEIGHT_NAME
    with safe_open(str(path), "pt") as f:
        keys = list(f.keys())
    assert all(k.startswith(("unet.", "text_encoder.")) for k in keys)
    assert all(k.endswith((".lora_A.weight", ".lora_B.weight")) for k in keys)
    assert any(".mlp.fc1." in k for k in keys) and any(".mlp.fc2." in k for k in keys)
    assert any(k.startswith("unet.") and ".attn2.to_k." in k for k in keys)
    meta = json.loads((path.parent / "orange.training.json").read_text())
    assert meta["steps_done"] == 2 and meta["config"]["object_weight"] == 2.0


def test_same_seed_same_bytes(two_runs: tuple[Path, Path]) -> None:
    a, b = two_runs
    assert a.read_bytes() == b.read_bytes()


def test_the_written_adapter_loads_and_changes_the_image(two_runs: tuple[Path, Path]) -> None:
    import torch

    from sdserve.training.common import load_base

    torch.set_num_threads(1)
    pipe = load_base()
    pipe.set_progress_bar_config(disable=True)

    def draw() -> np.ndarray:
        image = pipe(
            "a orange circle on a blue background",
            num_inference_steps=2,
            generator=torch.Generator().manual_seed(0),
        ).images[0]
        return np.asarray(image)

    before = draw()
    pipe.load_lora_weights(two_runs[0].parent, weight_name=WEIGHT_NAME)
    assert not np.array_equal(draw(), before)
