"""Score the demo model: does it draw the colour, background and shape it was asked for?

For every (colour, shape) pair and several seeds (each seed with a different
background colour) it generates one 64x64 image through StableDiffusionPipeline at
the default 20 steps and guidance 7.5, reads it back with the torch-free scorer in
``sdserve.training.scenes`` and prints the adherence percentages. It also writes a
labelled grid of the samples.

    python bench/eval_demo.py [MODEL_DIR] [--seeds 4] [--grid docs/demo_samples.png]
        [--scheduler default|euler_a] [--steps 20] [--guidance 7.5] [--check-scorer]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from PIL import Image, ImageDraw

from sdserve.training.scenes import (
    COLORS,
    SHAPES,
    Adherence,
    Scene,
    read_image,
    render,
    sample_scene,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "src" / "sdserve" / "assets" / "demo-model"


def eval_scenes(seeds: int) -> list[tuple[Scene, int]]:
    """Every (colour, shape) pair x ``seeds``; backgrounds rotate through the others."""
    out = []
    for ci, color in enumerate(COLORS):
        others = [c for c in COLORS if c != color]
        for si, shape in enumerate(SHAPES):
            for k in range(seeds):
                bg = others[(si + k * 2 + ci) % len(others)]
                out.append((Scene(color, shape, bg), 1000 + k))
    return out


def check_scorer(n: int = 2000) -> dict[str, float]:
    """The scorer on procedurally rendered ground truth (should be ~100%)."""
    rng, tally = random.Random(123), Adherence()
    for _ in range(n):
        scene = sample_scene(rng)
        tally.add(scene, read_image(render(scene, rng)))
    return tally.percentages()


def load_pipeline(model_dir: Path, scheduler: str) -> object:
    import torch
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(
        model_dir, use_safetensors=True, local_files_only=True, torch_dtype=torch.float32
    )
    if scheduler == "euler_a":
        pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(
    pipe: object, jobs: list[tuple[Scene, int]], steps: int, guidance: float, batch: int = 18
) -> list[Image.Image]:
    import torch

    images: list[Image.Image] = []
    for i in range(0, len(jobs), batch):
        chunk = jobs[i : i + batch]
        result = pipe(  # type: ignore[operator]
            [s.caption() for s, _ in chunk],
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=[torch.Generator().manual_seed(seed) for _, seed in chunk],
        )
        images.extend(result.images)
    return images


def write_grid(
    jobs: list[tuple[Scene, int]], images: list[Image.Image], path: Path, cols: int = 12
) -> None:
    cell, label = 64, 22
    rows = (len(images) + cols - 1) // cols
    grid = Image.new("RGB", (cols * cell, rows * (cell + label)), (128, 128, 128))
    draw = ImageDraw.Draw(grid)
    for i, ((scene, _), img) in enumerate(zip(jobs, images, strict=True)):
        x, y = (i % cols) * cell, (i // cols) * (cell + label)
        grid.paste(img.resize((cell, cell)), (x, y))
        r = read_image(img)
        ok = (r.color, r.background, r.shape) == (scene.color, scene.background, scene.shape)
        draw.text(
            (x + 2, y + cell),
            f"{scene.color[:3]} {scene.shape[:3]}",
            fill=(0, 0, 0) if ok else (170, 0, 0),
        )
        draw.text(
            (x + 2, y + cell + 10),
            f"on {scene.background[:3]}",
            fill=(0, 0, 0) if ok else (170, 0, 0),
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description="Score the demo model's prompt adherence.")
    ap.add_argument("model_dir", type=Path, nargs="?", default=DEFAULT_MODEL)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--scheduler", choices=["default", "euler_a"], default="default")
    ap.add_argument("--grid", type=Path, default=None)
    ap.add_argument("--check-scorer", action="store_true")
    ap.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = ap.parse_args()

    if args.check_scorer:
        print("scorer on rendered scenes:", check_scorer())
    import torch

    torch.set_num_threads(2)
    pipe = load_pipeline(args.model_dir, args.scheduler)
    jobs = eval_scenes(args.seeds)
    start = time.monotonic()
    images = generate(pipe, jobs, args.steps, args.guidance)
    tally = Adherence()
    for (scene, _), img in zip(jobs, images, strict=True):
        tally.add(scene, read_image(img))
    pct = tally.percentages()
    print(
        f"{args.model_dir} scheduler={args.scheduler} steps={args.steps} "
        f"guidance={args.guidance} samples={tally.total} "
        f"({time.monotonic() - start:.0f}s)"
    )
    print(
        f"colour {pct['color']:.1f}%  background {pct['background']:.1f}%  "
        f"shape {pct['shape']:.1f}%"
    )
    if args.json:
        print(json.dumps({"samples": tally.total, **pct}))
    if args.grid:
        write_grid(jobs, images, args.grid)
        print(f"grid: {args.grid}")


if __name__ == "__main__":
    main()
