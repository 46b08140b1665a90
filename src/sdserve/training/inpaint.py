"""Train the demo inpainting model: the shipped demo model with a 9-channel UNet.

As in SD inpainting, the UNet sees 4 noisy latent channels + 1 mask channel + 4
channels of the masked image's latents; the new input channels start at zero (so
step 0 is exactly the txt2img model) and the whole UNet is fine-tuned on scenes where
a second object was drawn inside a masked rectangle. The caption names only the new
object ("a yellow square on a blue background"). The text encoder and VAE are the
demo model's, frozen. Saved as a ``StableDiffusionInpaintPipeline`` folder (fp16
safetensors).

Reproducible: every random draw comes from ``--seed`` and the step count is fixed
(``--minutes`` adds an optional wall-clock cap; ``training.json`` records the steps).

    python -m sdserve.training.inpaint OUT_DIR [--steps 3000] [--seed 0] [--minutes N]
"""

from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from sdserve.training.arch import diffusers_module
from sdserve.training.common import (
    DEMO_MODEL,
    batches,
    cli_config,
    ema_decay_at,
    ema_update,
    encode_texts,
    load_base,
    lr_at,
    to_float,
    write_folder,
)
from sdserve.training.scenes import COLORS, IMAGE_SIZE, SHAPES, Scene, render, sample_scene


@dataclass(frozen=True)
class InpaintConfig:
    seed: int = 0
    threads: int = 1
    num_samples: int = 2000
    steps: int = 3000
    batch: int = 16
    lr: float = 4e-4
    warmup: int = 50
    caption_dropout: float = 0.1
    ema_decay: float = 0.995
    log_every: int = 50
    max_minutes: float | None = None


# ----------------------------------------------------------------------------- data

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)


def random_mask_box(rng: random.Random, size: int = IMAGE_SIZE) -> Box:
    """A half of the image (as the evaluator and the workflow use) or a random box."""
    half = size // 2
    kind = rng.random()
    if kind < 0.5:
        return rng.choice(
            [(0, 0, half, size), (half, 0, size, size), (0, 0, size, half), (0, half, size, size)]
        )
    w, h = rng.randint(24, 44), rng.randint(24, 44)
    x0, y0 = rng.randint(0, size - w), rng.randint(0, size - h)
    return (x0, y0, x0 + w, y0 + h)


def draw_object(img: Image.Image, color: str, shape: str, box: Box, rng: random.Random) -> None:
    """Draw one flat shape inside ``box`` (with a margin), sized to fit it."""
    x0, y0, x1, y1 = box
    side = min(x1 - x0, y1 - y0)
    extent = min(rng.uniform(0.5, 0.8) * side, 42.0)
    h = extent / 2
    margin = 2
    cx = rng.uniform(x0 + h + margin, x1 - h - margin)
    cy = rng.uniform(y0 + h + margin, y1 - h - margin)
    draw = ImageDraw.Draw(img)
    fill = COLORS[color]
    bbox = (cx - h, cy - h, cx + h, cy + h)
    if shape == "circle":
        draw.ellipse(bbox, fill=fill)
    elif shape == "square":
        draw.rectangle(bbox, fill=fill)
    else:
        draw.polygon([(cx, cy - h), (cx + h, cy + h), (cx - h, cy + h)], fill=fill)


def _outside(box: Box, other: Box) -> bool:
    return box[2] <= other[0] or other[2] <= box[0] or box[3] <= other[1] or other[3] <= box[1]


def make_sample(rng: random.Random) -> tuple[np.ndarray, np.ndarray, str]:
    """(target image HxWx3 uint8, mask HxW {0,1}, caption of the painted object).

    The target is a rendered scene (its object kept outside the mask; 20% have no
    object) with a new object drawn inside the mask box.
    """
    from sdserve.training.scenes import read_image

    while True:
        base_scene = sample_scene(rng)
        box = random_mask_box(rng)
        if rng.random() < 0.2:
            img = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), COLORS[base_scene.background])
            break
        img = render(
            Scene(
                base_scene.color,
                base_scene.shape,
                base_scene.background,
                base_scene.position,
                "small" if rng.random() < 0.5 else None,
            ),
            rng,
        )
        bbox = read_image(img).bbox
        if bbox is not None and _outside(box, (bbox[0], bbox[1], bbox[2] + 1, bbox[3] + 1)):
            break
    bg = base_scene.background
    color = rng.choice([c for c in COLORS if c != bg])
    shape = rng.choice(SHAPES)
    draw_object(img, color, shape, box, rng)
    mask = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    mask[box[1] : box[3], box[0] : box[2]] = 1
    return np.asarray(img), mask, Scene(color, shape, bg).caption()


def make_dataset(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    rng = random.Random(seed)
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    masks = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    captions = []
    for i in range(n):
        images[i], masks[i], caption = make_sample(rng)
        captions.append(caption)
    return (
        torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        torch.from_numpy(masks)[:, None],
        captions,
    )


# ----------------------------------------------------------------------------- model


def nine_channel_unet(unet: Any) -> Any:
    """The txt2img UNet with ``conv_in`` widened to 9 inputs, extra weights zero."""
    config = dict(unet.config)
    config["in_channels"] = 9
    new = diffusers_module().UNet2DConditionModel.from_config(config)
    state = unet.state_dict()
    w = state["conv_in.weight"]
    wide = torch.zeros(w.shape[0], 9, *w.shape[2:], dtype=w.dtype)
    wide[:, :4] = w
    state["conv_in.weight"] = wide
    new.load_state_dict(state)
    return new


@torch.no_grad()
def encode_latents(vae: Any, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Sampled, scaled latents (what diffusers' inpaint pipeline encodes)."""
    out = []
    for i in range(0, len(images), 256):
        dist = vae.encode(images[i : i + 256]).latent_dist
        out.append(dist.mean + dist.std * torch.randn(dist.mean.shape, generator=gen))
    scaled: torch.Tensor = torch.cat(out) * float(vae.config.scaling_factor)
    return scaled


def train(out_dir: Path, cfg: InpaintConfig, base_dir: Path = DEMO_MODEL) -> Path:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    t0 = time.monotonic()
    base = load_base(base_dir)
    vae, text_encoder = base.vae.eval(), base.text_encoder.eval()
    vae.requires_grad_(False)
    text_encoder.requires_grad_(False)
    images, masks, captions = make_dataset(cfg.num_samples, cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    x = to_float(images)
    latents = encode_latents(vae, x, gen)
    # diffusers: masked_image = image * (mask < 0.5), i.e. 0 (mid grey) where repainted
    masked_latents = encode_latents(vae, x * (masks < 1), gen)
    small_masks = F.interpolate(masks.float(), size=latents.shape[-2:])
    conds = encode_texts(base, captions)
    empty = encode_texts(base, [""])[0]
    print(f"data {tuple(latents.shape)} {time.monotonic() - t0:.0f}s", flush=True)

    unet = nine_channel_unet(base.unet)
    unet.train()
    ema = copy.deepcopy(unet).eval()
    sched = diffusers_module().DDPMScheduler.from_config(base.scheduler.config)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=1e-2)
    order = batches(len(latents), cfg.batch, torch.Generator().manual_seed(cfg.seed + 2))
    deadline = t0 + 60 * cfg.max_minutes if cfg.max_minutes else math.inf
    running, step = 0.0, 0
    for step in range(cfg.steps):
        if time.monotonic() > deadline:
            print(f"time cap reached after {step} steps", flush=True)
            break
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg.steps, cfg.lr, cfg.warmup)
        idx = next(order)
        b = len(idx)
        z0 = latents[idx]
        cond = conds[idx].clone()
        cond[torch.rand(b, generator=gen) < cfg.caption_dropout] = empty
        noise = torch.randn(z0.shape, generator=gen)
        t = torch.randint(0, sched.config.num_train_timesteps, (b,), generator=gen)
        noisy = sched.add_noise(z0, noise, t)
        inp = torch.cat([noisy, small_masks[idx], masked_latents[idx]], dim=1)
        pred = unet(inp, t, encoder_hidden_states=cond).sample
        loss = F.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        ema_update(ema, unet, ema_decay_at(step, cfg.ema_decay))
        running += loss.item()
        if (step + 1) % cfg.log_every == 0:
            print(
                f"step {step + 1:5d} loss {running / cfg.log_every:.4f} "
                f"{time.monotonic() - t0:.0f}s",
                flush=True,
            )
            running = 0.0
    else:
        step = cfg.steps

    minutes = (time.monotonic() - t0) / 60
    meta = {
        "config": asdict(cfg),
        "steps_done": step,
        "minutes": round(minutes, 1),
        "base": "demo-model",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }

    def build(tmp: Path) -> None:
        d = diffusers_module()
        pipe = d.StableDiffusionInpaintPipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=base.tokenizer,
            unet=ema,
            scheduler=base.scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.to(torch.float16)
        pipe.save_pretrained(tmp, safe_serialization=True)

    write_folder(out_dir, build, meta)
    print(f"saved {out_dir} after {minutes:.1f} min", flush=True)
    return Path(out_dir)


def main(argv: list[str] | None = None) -> None:
    out_dir, cfg = cli_config(__doc__, InpaintConfig, ("steps", "num_samples"), argv)
    train(out_dir, cfg)


if __name__ == "__main__":
    main()
