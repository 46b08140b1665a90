"""Train the demo model: a tiny Stable Diffusion that draws what its caption says.

Scenes come from the caption grammar in :mod:`sdserve.training.scenes` (flat
coloured shapes at 64x64). The result is an ordinary SD1-layout diffusers folder
(CLIP tokenizer + text encoder, UNet2DConditionModel, AutoencoderKL, scheduler)
saved as safetensors, loadable by ``StableDiffusionPipeline.from_pretrained``.

Reproducible: every random draw comes from ``seed`` and the step counts are fixed,
so a rerun on the same machine and thread count gives byte-identical weights (checked
on short runs). The defaults are the recipe of the shipped model; see
docs/demo-model.md for the timings and the adherence it reaches.

    python -m sdserve.training.txt2img OUT_DIR [--seed S] [--threads 1] [--minutes N]
        [--vae-steps 1200] [--unet-steps 4000] [--schedule scaled_linear]
        [--prediction epsilon]
"""

from __future__ import annotations

import argparse
import copy
import math
import random
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sdserve.engine.demo import MAX_LENGTH
from sdserve.training.arch import (
    BETA_SCHEDULES,
    build_models,
    build_tokenizer,
    diffusers_module,
    save_pipeline,
    train_betas,
)
from sdserve.training.common import batches, ema_decay_at, ema_update, lr_at, to_float
from sdserve.training.scenes import IMAGE_SIZE, render, sample_scene


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    threads: int = 1  # see docs/demo-model.md: 2 threads on a shared box crawl
    num_scenes: int = 12_000
    vae_steps: int = 1200
    vae_batch: int = 16
    vae_lr: float = 1e-3
    unet_steps: int = 4000
    unet_batch: int = 32
    unet_lr: float = 8e-4
    warmup: int = 100
    caption_dropout: float = 0.1
    ema_decay: float = 0.999
    log_every: int = 50
    # SD 1.x's own recipe. Measured (72 samples, 20 steps, guidance 7.5): scaled_linear +
    # epsilon 96/93/75% colour/background/shape; linear + v_prediction 100/100/33%
    # (right colours, blobby shapes); linear + epsilon 32/40/43%.
    beta_schedule: str = "scaled_linear"
    prediction: str = "epsilon"
    # Optional wall-clock cap for the whole run (minutes). None: the fixed step counts
    # above decide, so reruns match. A cap only ever cuts UNet steps short, and then
    # the result depends on machine speed; the saved training.json records the steps.
    max_minutes: float | None = None


# ----------------------------------------------------------------------------- data


def make_dataset(n: int, seed: int, tokenizer: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` rendered scenes as uint8 (N, 3, H, W) and their padded token ids (N, 77)."""
    rng = random.Random(seed)
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    captions = []
    for i in range(n):
        scene = sample_scene(rng)
        images[i] = np.asarray(render(scene, rng))
        captions.append(scene.caption())
    ids = tokenizer(
        captions, padding="max_length", max_length=MAX_LENGTH, truncation=True, return_tensors="pt"
    ).input_ids
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), ids


# ----------------------------------------------------------------------------- stages


def train_vae(vae: Any, images: torch.Tensor, cfg: TrainConfig) -> None:
    gen = torch.Generator().manual_seed(cfg.seed + 10)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    vae.train()
    start = time.monotonic()
    order = batches(len(images), cfg.vae_batch, gen)
    for step in range(cfg.vae_steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg.vae_steps, cfg.vae_lr, 50)
        x = to_float(images[next(order)])
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen)
        recon = vae.decode(z).sample
        rec = F.mse_loss(recon, x) + F.l1_loss(recon, x)  # L1 keeps the edges sharp
        kl = posterior.kl().mean()
        loss = rec + 1e-6 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % cfg.log_every == 0 or step == cfg.vae_steps - 1:
            print(
                f"vae step {step:5d} rec {rec.item():.5f} kl {kl.item():.1f} "
                f"{time.monotonic() - start:.0f}s",
                flush=True,
            )
    vae.eval()
    vae.requires_grad_(False)


@torch.no_grad()
def encode_all(vae: Any, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    means, stds = [], []
    for i in range(0, len(images), 256):
        dist = vae.encode(to_float(images[i : i + 256])).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    return torch.cat(means), torch.cat(stds)


def train_unet(
    unet: Any,
    text_encoder: Any,
    latents: tuple[torch.Tensor, torch.Tensor],
    ids: torch.Tensor,
    empty_ids: torch.Tensor,
    cfg: TrainConfig,
    deadline: float = math.inf,
) -> tuple[Any, Any, int]:
    """Returns EMA copies of the UNet and text encoder, and the steps taken."""
    noise_sched = diffusers_module().DDPMScheduler(**train_betas(cfg.beta_schedule, cfg.prediction))
    means, stds = latents
    gen = torch.Generator().manual_seed(cfg.seed + 20)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.unet_lr, weight_decay=1e-2)
    ema_unet, ema_text = copy.deepcopy(unet).eval(), copy.deepcopy(text_encoder).eval()
    unet.train()
    text_encoder.train()
    order = batches(len(means), cfg.unet_batch, gen)
    start, running = time.monotonic(), 0.0
    step = 0
    for step in range(cfg.unet_steps):
        if time.monotonic() > deadline:
            print(f"time cap reached after {step} unet steps", flush=True)
            break
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg.unet_steps, cfg.unet_lr, cfg.warmup)
        idx = next(order)
        b = len(idx)
        z0 = means[idx] + stds[idx] * torch.randn(means[idx].shape, generator=gen)
        tok = ids[idx].clone()
        drop = torch.rand(b, generator=gen) < cfg.caption_dropout
        tok[drop] = empty_ids
        noise = torch.randn(z0.shape, generator=gen)
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (b,), generator=gen)
        noisy = noise_sched.add_noise(z0, noise, t)
        cond = text_encoder(tok).last_hidden_state
        pred = unet(noisy, t, encoder_hidden_states=cond).sample
        if cfg.prediction == "v_prediction":
            target = noise_sched.get_velocity(z0, noise, t)
        else:
            target = noise
        loss = F.mse_loss(pred, target)
        opt.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = ema_decay_at(step, cfg.ema_decay)
        ema_update(ema_unet, unet, decay)
        ema_update(ema_text, text_encoder, decay)
        running += loss.item()
        if (step + 1) % cfg.log_every == 0 or step == cfg.unet_steps - 1:
            n = (step % cfg.log_every) + 1
            print(
                f"unet step {step + 1:5d} loss {running / n:.4f} "
                f"lr {opt.param_groups[0]['lr']:.2e} {time.monotonic() - start:.0f}s",
                flush=True,
            )
            running = 0.0
    else:
        step = cfg.unet_steps
    return ema_unet, ema_text, step


def train_demo_model(out_dir: Path, seed: int = 0, **overrides: Any) -> Path:
    """Train the demo model and save it to ``out_dir``; returns ``out_dir``.

    ``overrides`` replace :class:`TrainConfig` fields (step counts, batch sizes...).
    """
    cfg = TrainConfig(seed=seed, **overrides)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = build_tokenizer(Path(scratch) / "tokenizer")
        models = build_models(
            len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id, cfg.seed
        )
    n_params = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
    print(f"config {asdict(cfg)}\nparams {n_params}", flush=True)
    images, ids = make_dataset(cfg.num_scenes, cfg.seed, tokenizer)
    empty_ids = tokenizer(
        "", padding="max_length", max_length=MAX_LENGTH, return_tensors="pt"
    ).input_ids[0]
    print(f"dataset {tuple(images.shape)} {time.monotonic() - t0:.0f}s", flush=True)

    vae = models["vae"]
    train_vae(vae, images, cfg)
    means, stds = encode_all(vae, images)
    sample = means + stds * torch.randn(
        means.shape, generator=torch.Generator().manual_seed(cfg.seed + 30)
    )
    scaling = float(1.0 / sample.std())
    vae.register_to_config(scaling_factor=scaling)
    print(
        f"latents {tuple(means.shape)} std {sample.std().item():.3f} "
        f"scaling_factor {scaling:.4f} {time.monotonic() - t0:.0f}s",
        flush=True,
    )

    deadline = t0 + 60 * cfg.max_minutes if cfg.max_minutes else math.inf
    unet, text_encoder, steps = train_unet(
        models["unet"],
        models["text_encoder"],
        (means * scaling, stds * scaling),
        ids,
        empty_ids,
        cfg,
        deadline,
    )
    minutes = (time.monotonic() - t0) / 60
    meta = {
        "config": asdict(cfg),
        "unet_steps_done": steps,
        "params": n_params,
        "minutes": round(minutes, 1),
        "train_betas": train_betas(cfg.beta_schedule, cfg.prediction),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    save_pipeline(
        Path(out_dir),
        {"vae": vae, "text_encoder": text_encoder, "unet": unet, "tokenizer": tokenizer},
        meta,
    )
    print(f"saved {out_dir} after {minutes:.1f} min", flush=True)
    return Path(out_dir)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vae-steps", type=int, default=TrainConfig.vae_steps)
    parser.add_argument("--unet-steps", type=int, default=TrainConfig.unet_steps)
    parser.add_argument("--num-scenes", type=int, default=TrainConfig.num_scenes)
    parser.add_argument("--threads", type=int, default=TrainConfig.threads)
    parser.add_argument(
        "--schedule", choices=list(BETA_SCHEDULES), default=TrainConfig.beta_schedule
    )
    parser.add_argument(
        "--prediction", choices=["v_prediction", "epsilon"], default=TrainConfig.prediction
    )
    parser.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="wall-clock cap; cuts UNet training short (not reproducible)",
    )
    args = parser.parse_args(argv)
    train_demo_model(
        args.out_dir,
        seed=args.seed,
        vae_steps=args.vae_steps,
        unet_steps=args.unet_steps,
        num_scenes=args.num_scenes,
        threads=args.threads,
        max_minutes=args.minutes,
        beta_schedule=args.schedule,
        prediction=args.prediction,
    )


if __name__ == "__main__":
    main()
