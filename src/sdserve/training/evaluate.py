"""Evaluators for the demo editing models; their figures go in docs/demo-model.md.

- ``inpaint``: through the service's engine (``DiffusersEngine``, the real catalog and
  loader, ``keep_unmasked`` on as by default). A scene with a small object on the left,
  the right half masked, prompt "a yellow square on a <bg> background": success = the
  masked half reads (``scenes.read_image``) as a yellow square. Also checked: every
  pixel outside the mask is the input's, and the original object still reads as its
  colour. ``--general``: random mask boxes and random colours/shapes.
- ``upscale``: through the engine, 64x64 scenes -> 256x256, against the same scenes
  rendered natively at 256x256, beside PIL's bicubic resize of the same input: PSNR
  (RGB, 0-255), edge F1 (the boundaries between palette colours, a predicted edge
  pixel counts when a true one is within 1 px and vice versa) and palette accuracy
  (the share of pixels whose nearest palette colour is the native render's).
- ``lora``: plain diffusers (``pipe.load_lora_weights``): every shape x background
  with the adapter's colour, with and without the adapter; plus the six base colours
  with the adapter (does it keep what the base model knew?).

    python -m sdserve.training.evaluate inpaint [MODEL_DIR] [--n 24] [--general]
    python -m sdserve.training.evaluate upscale [MODEL_DIR] [--n 12]
    python -m sdserve.training.evaluate lora [LORA_DIR] [--base DIR]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sdserve.training.common import ASSETS, DEMO_MODEL, load_base
from sdserve.training.scenes import (
    COLORS,
    EXTRA_COLORS,
    IMAGE_SIZE,
    SHAPES,
    Scene,
    color_labels,
    read_image,
    render,
    sample_scene,
)

DEMO_INPAINT = ASSETS / "demo-inpaint"
DEMO_UPSCALER = ASSETS / "demo-upscaler"
DEMO_LORA = ASSETS / "demo-lora"
LORA_WEIGHT = "orange.safetensors"


def engine(models: dict[str, Path], loras_dir: Path | None = None) -> Any:
    """The service's engine on CPU over ``models`` (name -> folder), adapters from
    ``loras_dir``."""
    from sdserve.config import Settings
    from sdserve.engine.catalog import Catalog, describe
    from sdserve.engine.pipelines import DiffusersEngine

    infos = [describe(name, str(path)) for name, path in models.items()]
    settings = Settings(device="cpu", loras_dir=loras_dir)
    eng = DiffusersEngine(settings, Catalog(infos[0], infos[1:]), max_loaded=3)
    eng.load()
    return eng


def _never(step: int, total: int) -> set[str]:
    return set()


def run_engine(
    eng: Any,
    model: str,
    task: str,
    items: list[tuple[str, Image.Image, Image.Image | None, int]],
    size: int,
    steps: int,
    guidance: float = 7.5,
    batch: int = 8,
    **kw: Any,
) -> list[Image.Image]:
    """(prompt, image, mask, seed) items through ``eng.generate``, ``batch`` at a time."""
    from sdserve.engine.base import BatchItem, BatchRequest

    scheduler = eng.get_model(model).info.default_scheduler
    out: list[Image.Image] = []
    for start in range(0, len(items), batch):
        chunk = [
            BatchItem(f"j{start + i}", prompt, "", [seed], image, mask)
            for i, (prompt, image, mask, seed) in enumerate(items[start : start + batch])
        ]
        req = BatchRequest(model, task, size, size, steps, guidance, scheduler, chunk, **kw)
        result = eng.generate(req, _never)
        out += [result.items[item.job_id].images[0] for item in chunk]
    return out


# ----------------------------------------------------------------------------- inpaint


def inpaint_cases(n: int, general: bool) -> list[dict[str, Any]]:
    """Input scene, mask, prompt and what the masked region must read as."""
    from sdserve.training.inpaint import draw_object, random_mask_box

    cases = []
    non_yellow = [c for c in COLORS if c != "yellow"]
    for k in range(n):
        rng = random.Random(7000 + k)
        bg = non_yellow[k % len(non_yellow)]
        orig = rng.choice([c for c in COLORS if c not in (bg, "yellow")])
        scene = Scene(orig, rng.choice(SHAPES), bg, "left", "small")
        image = render(scene, rng)
        if general:
            box = random_mask_box(rng)
            color = rng.choice([c for c in COLORS if c != bg])
            shape = rng.choice(SHAPES)
            image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), COLORS[bg])
            # a distractor object outside the box, when one fits
            for _ in range(20):
                probe = image.copy()
                draw_object(probe, orig, rng.choice(SHAPES), random_mask_box(rng), rng)
                mask_arr = np.zeros((IMAGE_SIZE, IMAGE_SIZE), bool)
                mask_arr[box[1] : box[3], box[0] : box[2]] = True
                if (np.asarray(probe) != np.asarray(image)).any(-1)[mask_arr].sum() == 0:
                    image = probe
                    break
        else:
            box = (IMAGE_SIZE // 2, 0, IMAGE_SIZE, IMAGE_SIZE)
            color, shape = "yellow", "square"
        mask = Image.new("L", image.size, 0)
        mask.paste(255, box)
        cases.append(
            {
                "image": image,
                "mask": mask,
                "box": box,
                "prompt": Scene(color, shape, bg).caption(),
                "color": color,
                "shape": shape,
                "orig": orig,
                "seed": 1000 + k,
            }
        )
    return cases


def eval_inpaint(
    model_dir: Path = DEMO_INPAINT, n: int = 24, steps: int = 20, general: bool = False
) -> dict[str, Any]:
    eng = engine({"demo-inpaint": model_dir})
    cases = inpaint_cases(n, general)
    outs = run_engine(
        eng,
        "demo-inpaint",
        "inpaint",
        [(c["prompt"], c["image"], c["mask"], c["seed"]) for c in cases],
        IMAGE_SIZE,
        steps,
    )
    color_ok = shape_ok = both = kept = orig_ok = 0
    for case, out in zip(cases, outs, strict=True):
        reading = read_image(out.crop(case["box"]))
        color_ok += reading.color == case["color"]
        shape_ok += reading.shape == case["shape"]
        both += reading.color == case["color"] and reading.shape == case["shape"]
        outside = np.asarray(case["mask"]) == 0
        kept += bool((np.asarray(out)[outside] == np.asarray(case["image"])[outside]).all())
        if not general:
            orig_ok += (
                read_image(out.crop((0, 0, IMAGE_SIZE // 2, IMAGE_SIZE))).color == case["orig"]
            )
    pct = 100.0 / len(cases)
    result = {
        "task": "inpaint" + (" (general)" if general else ""),
        "samples": len(cases),
        "steps": steps,
        "masked region reads as the asked colour %": round(color_ok * pct, 1),
        "... as the asked shape %": round(shape_ok * pct, 1),
        "... as both (success) %": round(both * pct, 1),
        "outside the mask unchanged (bit-exact) %": round(kept * pct, 1),
    }
    if not general:
        result["original object still reads as its colour %"] = round(orig_ok * pct, 1)
    return result


# ----------------------------------------------------------------------------- upscale


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _edges(labels: np.ndarray) -> np.ndarray:
    edge = np.zeros(labels.shape, dtype=bool)
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    return edge


def _dilate(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    grown = out.copy()
    grown[:, 1:] |= out[:, :-1]
    grown[:, :-1] |= out[:, 1:]
    return grown


def edge_f1(pred: np.ndarray, truth: np.ndarray) -> float:
    """F1 of palette-colour boundaries, 1 px tolerance either way."""
    p, t = _edges(color_labels(pred)), _edges(color_labels(truth))
    if not p.any() or not t.any():
        return float(p.any() == t.any())
    precision = float((p & _dilate(t)).sum() / p.sum())
    recall = float((t & _dilate(p)).sum() / t.sum())
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def palette_accuracy(pred: np.ndarray, truth: np.ndarray) -> float:
    return float((color_labels(pred) == color_labels(truth)).mean())


def upscale_scenes(n: int) -> list[tuple[Image.Image, np.ndarray]]:
    from sdserve.training.upscaler_data import render_pair

    out = []
    for k in range(n):
        rng = random.Random(9000 + k)
        low, high = render_pair(sample_scene(rng), rng)
        out.append((Image.fromarray(low), high))
    return out


def eval_upscale(
    model_dir: Path = DEMO_UPSCALER, n: int = 12, steps: int = 20, noise_level: int = 20
) -> dict[str, Any]:
    eng = engine({"demo-upscaler": model_dir})
    scenes = upscale_scenes(n)
    outs = run_engine(
        eng,
        "demo-upscaler",
        "upscale",
        [("", low, None, 1000 + k) for k, (low, _) in enumerate(scenes)],
        IMAGE_SIZE * 4,
        steps,
        noise_level=noise_level,
        batch=4,
    )
    rows: dict[str, list[float]] = {k: [] for k in ("model", "bicubic")}
    metrics: dict[str, dict[str, list[float]]] = {
        m: {"psnr": [], "edge_f1": [], "palette": []} for m in rows
    }
    for (low, high), out in zip(scenes, outs, strict=True):
        preds = {
            "model": np.asarray(out.convert("RGB")),
            "bicubic": np.asarray(low.resize(out.size, Image.Resampling.BICUBIC)),
        }
        for name, pred in preds.items():
            metrics[name]["psnr"].append(psnr(pred, high))
            metrics[name]["edge_f1"].append(edge_f1(pred, high))
            metrics[name]["palette"].append(palette_accuracy(pred, high))
    return {
        "task": "upscale x4 (64 -> 256)",
        "samples": n,
        "steps": steps,
        "noise_level": noise_level,
        **{
            f"{name} {metric}": round(float(np.mean(values)), 3)
            for name, by_metric in metrics.items()
            for metric, values in by_metric.items()
        },
    }


# ----------------------------------------------------------------------------- lora


def eval_lora(
    lora_dir: Path = DEMO_LORA,
    base_dir: Path = DEMO_MODEL,
    weight_name: str = LORA_WEIGHT,
    seeds: int = 1,
    steps: int = 20,
) -> dict[str, Any]:
    import torch

    (new_color,) = EXTRA_COLORS
    pipe = load_base(base_dir)
    pipe.set_progress_bar_config(disable=True)
    new = [Scene(new_color, shape, bg) for shape in SHAPES for bg in COLORS for _ in range(seeds)]
    names = list(COLORS)
    old = [Scene(c, SHAPES[i % 3], names[(i + 1) % len(names)]) for i, c in enumerate(names)]

    def draw(scenes: list[Scene]) -> list[Image.Image]:
        images: list[Image.Image] = []
        for start in range(0, len(scenes), 9):
            chunk = scenes[start : start + 9]
            images += pipe(
                [s.caption() for s in chunk],
                num_inference_steps=steps,
                guidance_scale=7.5,
                generator=[
                    torch.Generator().manual_seed(2000 + start + i) for i in range(len(chunk))
                ],
            ).images
        return images

    def rate(scenes: list[Scene], images: list[Image.Image]) -> float:
        hits = sum(
            read_image(im, extra_colors=True).color == s.color
            for s, im in zip(scenes, images, strict=True)
        )
        return round(100.0 * hits / len(scenes), 1)

    without_new, without_old = rate(new, draw(new)), rate(old, draw(old))
    pipe.load_lora_weights(lora_dir, weight_name=weight_name)
    with_new, with_old = rate(new, draw(new)), rate(old, draw(old))
    return {
        "task": f"lora ({new_color})",
        "samples": len(new),
        "steps": steps,
        f"'{new_color}' prompts drawn {new_color}, with the adapter %": with_new,
        "... without it %": without_new,
        "base colours kept, with the adapter %": with_old,
        "base colours kept, without it %": without_old,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("task", choices=["inpaint", "upscale", "lora"])
    parser.add_argument("path", type=Path, nargs="?")
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--general", action="store_true")
    parser.add_argument("--noise-level", type=int, default=20)
    parser.add_argument("--base", type=Path, default=DEMO_MODEL)
    parser.add_argument("--seeds", type=int, default=1, help="lora: seeds per prompt")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    if args.task == "inpaint":
        result = eval_inpaint(args.path or DEMO_INPAINT, args.n or 24, args.steps, args.general)
    elif args.task == "upscale":
        result = eval_upscale(
            args.path or DEMO_UPSCALER, args.n or 12, args.steps, args.noise_level
        )
    else:
        result = eval_lora(args.path or DEMO_LORA, args.base, seeds=args.seeds, steps=args.steps)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
