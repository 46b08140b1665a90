"""Train the demo LoRA: teach the demo model a colour it never saw ("orange").

The base model was trained on six colours (``scenes.COLORS``); "orange" is not even a
word of its tokenizer (it falls apart into byte-level pieces). Why orange and not
purple: a LoRA cannot touch the VAE, and the demo VAE (trained on the six colours)
decodes purple, magenta and grey as green; orange is the one new colour it
reproduces, so it is the one an adapter on the UNet and text encoder can teach.

This trains low-rank adapters (PEFT LoRA) on the UNet's attention, feed-forward and
resnet convolutions and on the text encoder's attention and MLP, with the base weights
and the VAE frozen, on a mix of orange-object scenes (every shape x background pair
equally often) and ordinary scenes (so the other colours are kept). The saved weights
are an EMA of the LoRA weights.

Noise offset: orange sits between red and yellow, and the orange prompts that failed
failed on the same seeds for every adapter tried (object drawn yellow, sometimes red):
the model reads colour from the low-frequency part of the starting noise (the noise
schedule never reaches zero signal), which tips orange into a neighbour. A per-channel
constant in the training noise (``noise_offset`` 0.2; 0.1 and 0.3 did worse) teaches the
adapter that this part is noise: orange prompts drawn orange went from ~80% to ~94%
(54 samples; same recipe otherwise).

Saved with ``StableDiffusionPipeline.save_lora_weights`` in diffusers' PEFT key layout
(``unet.….lora_A.weight``, ``text_encoder.….lora_B.weight``), one safetensors file,
loadable by ``pipe.load_lora_weights(folder, weight_name=...)``.

    python -m sdserve.training.lora OUT_DIR [--steps 1000] [--seed 0] [--minutes N]
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sdserve.training.arch import diffusers_module
from sdserve.training.common import (
    DEMO_MODEL,
    batches,
    cli_config,
    ema_decay_at,
    ema_update,
    load_base,
    lr_at,
    to_float,
)
from sdserve.training.scenes import COLORS, IMAGE_SIZE, SHAPES, Scene, render, sample_scene

NEW_COLOR = "orange"
WEIGHT_NAME = "orange.safetensors"
UNET_TARGETS = [
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "proj_in",
    "proj_out",
    "ff.net.0.proj",
    "ff.net.2",
    "conv1",
    "conv2",
]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]


@dataclass(frozen=True)
class LoraTrainConfig:
    seed: int = 0
    threads: int = 1
    num_scenes: int = 2000
    new_fraction: float = 0.5  # scenes with an orange object; the rest are ordinary
    rank: int = 16
    steps: int = 1000
    batch: int = 16
    lr: float = 1.5e-3
    warmup: int = 50
    caption_dropout: float = 0.1
    # Loss weight of the object's latent pixels is 1 + object_weight (background: 1):
    # the colour that is scored lives in the object, a small part of the image.
    object_weight: float = 0.0
    ema_decay: float = 0.99  # 0: save the last weights; else an EMA of the LoRA weights
    # Per-sample, per-channel constant added to the training noise ("noise offset"): the
    # low-frequency part of the starting noise stops passing for signal, so a seed's
    # noise cannot tip orange into its neighbours yellow or red.
    noise_offset: float = 0.2
    log_every: int = 50
    max_minutes: float | None = None


def sample_new_scene(rng: random.Random, k: int | None = None) -> Scene:
    """A scene whose object is the new colour on a base-colour background: the ``k``-th
    (shape, background) pair in turn, so every pair is equally common; random if None."""
    base = sample_scene(rng)
    pairs = [(shape, bg) for shape in SHAPES for bg in COLORS]
    shape, bg = pairs[k % len(pairs)] if k is not None else rng.choice(pairs)
    return Scene(NEW_COLOR, shape, bg, base.position, base.size)


def make_dataset(
    cfg: LoraTrainConfig, tokenizer: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images (N, 3, H, W) uint8, caption token ids, and object masks (N, 1, H, W)."""
    rng = random.Random(cfg.seed)
    images = np.empty((cfg.num_scenes, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    masks = np.empty((cfg.num_scenes, 1, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    captions = []
    new_count = 0
    for i in range(cfg.num_scenes):
        if rng.random() < cfg.new_fraction:
            scene = sample_new_scene(rng, new_count)
            new_count += 1
        else:
            scene = sample_scene(rng)
        images[i] = np.asarray(render(scene, rng))
        masks[i, 0] = (images[i] != COLORS[scene.background]).any(-1)
        captions.append(scene.caption())
    ids = tokenizer(
        captions,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), ids, torch.from_numpy(masks)


def train(out_dir: Path, cfg: LoraTrainConfig, base_dir: Path = DEMO_MODEL) -> Path:
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    t0 = time.monotonic()
    pipe = load_base(base_dir)
    unet, text_encoder, vae = pipe.unet, pipe.text_encoder, pipe.vae
    for m in (unet, text_encoder, vae):
        m.requires_grad_(False)
    images, ids, masks = make_dataset(cfg, pipe.tokenizer)
    empty_ids = pipe.tokenizer(
        "", padding="max_length", max_length=pipe.tokenizer.model_max_length, return_tensors="pt"
    ).input_ids[0]
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    with torch.no_grad():
        dists = [
            vae.encode(to_float(images[i : i + 256])).latent_dist
            for i in range(0, len(images), 256)
        ]
    means = torch.cat([d.mean for d in dists]) * vae.config.scaling_factor
    stds = torch.cat([d.std for d in dists]) * vae.config.scaling_factor
    # Per latent pixel: 1 + object_weight x the share of it the object covers.
    weights = 1.0 + cfg.object_weight * F.adaptive_avg_pool2d(masks, means.shape[-2:])
    print(f"data {tuple(means.shape)} {time.monotonic() - t0:.0f}s", flush=True)

    torch.manual_seed(cfg.seed + 3)  # LoRA init
    unet.add_adapter(
        LoraConfig(
            r=cfg.rank,
            lora_alpha=cfg.rank,
            init_lora_weights="gaussian",
            target_modules=UNET_TARGETS,
        )
    )
    # peft directly (transformers' add_adapter wants a newer peft than diffusers does)
    inject_adapter_in_model(
        LoraConfig(
            r=cfg.rank,
            lora_alpha=cfg.rank,
            init_lora_weights="gaussian",
            target_modules=TEXT_TARGETS,
        ),
        text_encoder,
    )
    params = [p for m in (unet, text_encoder) for p in m.parameters() if p.requires_grad]
    print(f"lora params {sum(p.numel() for p in params)}", flush=True)
    unet.train()
    text_encoder.train()
    sched = diffusers_module().DDPMScheduler.from_config(pipe.scheduler.config)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    ema = [p.detach().clone() for p in params] if cfg.ema_decay > 0 else []
    order = batches(len(means), cfg.batch, torch.Generator().manual_seed(cfg.seed + 2))
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
        z0 = means[idx] + stds[idx] * torch.randn(means[idx].shape, generator=gen)
        tok = ids[idx].clone()
        tok[torch.rand(b, generator=gen) < cfg.caption_dropout] = empty_ids
        noise = torch.randn(z0.shape, generator=gen)
        if cfg.noise_offset:
            noise += cfg.noise_offset * torch.randn((b, z0.shape[1], 1, 1), generator=gen)
        t = torch.randint(0, sched.config.num_train_timesteps, (b,), generator=gen)
        cond = text_encoder(tok)[0]
        pred = unet(sched.add_noise(z0, noise, t), t, encoder_hidden_states=cond).sample
        loss = (weights[idx] * (pred - noise) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if ema:
            ema_update(ema, params, ema_decay_at(step, cfg.ema_decay))
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
    if ema:
        with torch.no_grad():
            for e, p in zip(ema, params, strict=True):
                p.copy_(e)

    # PEFT layout as is (``…lora_A.weight`` / ``…lora_B.weight``); save_lora_weights
    # adds the ``unet.`` / ``text_encoder.`` prefixes.
    unet_layers = get_peft_model_state_dict(unet)
    text_layers = get_peft_model_state_dict(text_encoder)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    diffusers_module().StableDiffusionPipeline.save_lora_weights(
        out_dir,
        unet_lora_layers={k: v.to(torch.float16) for k, v in unet_layers.items()},
        text_encoder_lora_layers={k: v.to(torch.float16) for k, v in text_layers.items()},
        weight_name=WEIGHT_NAME,
        safe_serialization=True,
    )
    minutes = (time.monotonic() - t0) / 60
    meta = {
        "config": asdict(cfg),
        "steps_done": step,
        "minutes": round(minutes, 1),
        "base": "demo-model",
        "teaches": NEW_COLOR,
        "unet_targets": UNET_TARGETS,
        "text_encoder_targets": TEXT_TARGETS,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    (out_dir / "orange.training.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"saved {out_dir / WEIGHT_NAME} after {minutes:.1f} min", flush=True)
    return out_dir / WEIGHT_NAME


def main(argv: list[str] | None = None) -> None:
    out_dir, cfg = cli_config(__doc__, LoraTrainConfig, ("steps", "num_scenes"), argv)
    train(out_dir, cfg)


if __name__ == "__main__":
    main()
