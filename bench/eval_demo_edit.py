"""img2img and inpainting with the demo model, scored like bench/eval_demo.py.

The service's engine has no img2img/inpaint task yet, so this drives diffusers'
StableDiffusionImg2ImgPipeline / StableDiffusionInpaintPipeline built from the same
loaded components (the demo UNet has 4 input channels: the inpaint pipeline keeps the
unmasked area by re-noising the original latents at every step).

- img2img: a rendered scene, the prompt with only the colour word changed; success =
  the object now reads as the new colour and its centre moved by at most 8 px.
- inpaint: a scene with its object on the left, the right half masked, prompt
  "a yellow square on a <bg> background"; success = a yellow object inside the mask
  (and, separately, read as a square), the original object still there outside.
Usage: python -m bench.eval_demo_edit [MODEL_DIR] [--n 36] [--strength 0.7]
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.common import prepare_engine_env
from sdserve.training.scenes import COLORS, SHAPES, Scene, read_image, render
from sdserve.wiring import PACKAGED_DEMO

prepare_engine_env()


def pipelines(model_dir: Path) -> tuple[Any, Any]:
    import torch
    from diffusers import (
        StableDiffusionImg2ImgPipeline,
        StableDiffusionInpaintPipeline,
        StableDiffusionPipeline,
    )

    base = StableDiffusionPipeline.from_pretrained(
        model_dir, use_safetensors=True, local_files_only=True, torch_dtype=torch.float32
    )
    parts = {k: v for k, v in base.components.items() if k != "image_encoder"}
    parts["requires_safety_checker"] = False
    img2img = StableDiffusionImg2ImgPipeline(**parts)
    inpaint = StableDiffusionInpaintPipeline(**parts)
    for p in (img2img, inpaint):
        p.set_progress_bar_config(disable=True)
    return img2img, inpaint


def centre(box: tuple[int, int, int, int] | None) -> np.ndarray | None:
    return None if box is None else np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])


def eval_img2img(pipe: Any, n: int, strength: float) -> dict[str, float]:
    import torch

    rng = random.Random(0)
    colours = list(COLORS)
    ok_colour = ok_place = 0
    for i in range(n):
        colour, bg = rng.sample(colours, 2)
        new = rng.choice([c for c in colours if c not in (colour, bg)])
        scene = Scene(colour, SHAPES[i % 3], bg)
        source = render(scene, rng)
        before = read_image(source)
        prompt = Scene(new, scene.shape, bg).caption()
        out = pipe(
            prompt,
            image=source,
            strength=strength,
            num_inference_steps=20,
            generator=torch.Generator().manual_seed(i),
        ).images[0]
        after = read_image(out)
        ok_colour += after.color == new
        a, b = centre(before.bbox), centre(after.bbox)
        ok_place += a is not None and b is not None and float(np.abs(a - b).max()) <= 8
    return {"recoloured": 100 * ok_colour / n, "kept place": 100 * ok_place / n}


def eval_inpaint(pipe: Any, n: int) -> dict[str, float]:
    import torch

    rng = random.Random(1)
    colours = [c for c in COLORS if c != "yellow"]
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (32, 0, 64, 64))  # the right half
    ok_object = ok_square = ok_kept = 0
    for i in range(n):
        colour, bg = rng.sample(colours, 2)
        scene = Scene(colour, SHAPES[i % 3], bg, position="left", size="small")
        source = render(scene, rng)
        out = pipe(
            f"a yellow square on a {bg} background",
            image=source,
            mask_image=mask,
            num_inference_steps=20,
            generator=torch.Generator().manual_seed(i),
        ).images[0]
        right = np.asarray(out)[:, 32:]
        left = np.asarray(out)[:, :32]
        reading = read_image(np.pad(right, ((0, 0), (16, 16), (0, 0)), mode="edge"))
        ok_object += reading.color == "yellow"
        ok_square += reading.color == "yellow" and reading.shape == "square"
        ok_kept += read_image(np.pad(left, ((0, 0), (16, 16), (0, 0)), mode="edge")).color == colour
    return {
        "yellow object in mask": 100 * ok_object / n,
        "...read as a square": 100 * ok_square / n,
        "original object kept": 100 * ok_kept / n,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir", type=Path, nargs="?", default=PACKAGED_DEMO)
    ap.add_argument("--n", type=int, default=36)
    ap.add_argument("--strength", type=float, default=0.7)
    args = ap.parse_args()
    img2img, inpaint = pipelines(args.model_dir)
    print(f"img2img (colour word changed, strength {args.strength}, n={args.n}):")
    for k, v in eval_img2img(img2img, args.n, args.strength).items():
        print(f"  {k:24s} {v:5.1f}%")
    print(f"inpaint (right half masked, 'a yellow square', n={args.n}):")
    for k, v in eval_inpaint(inpaint, args.n).items():
        print(f"  {k:24s} {v:5.1f}%")


if __name__ == "__main__":
    main()
