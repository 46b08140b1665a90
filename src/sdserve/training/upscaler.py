"""Train the demo x4 upscaler (diffusers' ``StableDiffusionUpscalePipeline`` format).

64x64 demo scenes in, 256x256 out. As in stabilityai/stable-diffusion-x4-upscaler the
UNet denoises latents at the low-res size, conditioned on the (noised) low-res image
concatenated to its input (4 + 3 = 7 channels) and on the noise level as a class label;
the x4 VAE decodes the latents to 4x the size. v-prediction, DDIM sampling.

- VAE: the demo model's (64x64 -> 16x16x4, so 256x256 <-> 64x64x4), rescaled so the
  pipeline's fixed ``scaling_factor`` 0.08333 gives unit-variance latents, its decoder
  fine-tuned on crops of scenes rendered at 256x256.
- Data: each scene is rendered twice from the same random draws, at 64 and at 256
  (same geometry). Training uses aligned crops (16x16 low-res <-> 64x64 high-res):
  every layer is convolutional (no attention), so crops teach the whole image.
- Text encoder and tokenizer: the demo model's (the pipeline needs them; this UNet
  has no cross-attention, so the prompt does not matter).

    python -m sdserve.training.upscaler OUT_DIR [--steps 2500] [--seed 0] [--minutes N]
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

from sdserve.training.arch import diffusers_module
from sdserve.training.common import (
    DEMO_MODEL,
    batches,
    cli_config,
    ema_update,
    load_base,
    lr_at,
    to_float,
    write_folder,
)
from sdserve.training.scenes import IMAGE_SIZE, Scene, read_image, render, sample_scene

SCALE = 4
HIGH = IMAGE_SIZE * SCALE
UPSCALER_SCALING = 0.08333  # fixed by StableDiffusionUpscalePipeline
MAX_NOISE_LEVEL = 350
CROP = 64  # high-res crop side (16 low-res pixels, 16x16 latents)


@dataclass(frozen=True)
class UpscalerConfig:
    seed: int = 0
    threads: int = 1
    num_scenes: int = 1000
    crops_per_scene: int = 4
    vae_steps: int = 40
    vae_lr: float = 5e-4
    steps: int = 2500
    batch: int = 32
    lr: float = 1e-3
    warmup: int = 50
    train_noise_level: int = 100  # low-res noise levels drawn in [0, this]
    ema_decay: float = 0.995
    log_every: int = 50
    max_minutes: float | None = None


def render_pair(scene: Scene, rng: random.Random) -> tuple[np.ndarray, np.ndarray]:
    """The same scene (same place and extent) rendered at 64 and at 256 pixels."""
    state = rng.getstate()
    low = np.asarray(render(scene, rng, IMAGE_SIZE))
    rng.setstate(state)
    high = np.asarray(render(scene, rng, HIGH))
    return low, high


def make_crops(cfg: UpscalerConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Aligned (low 16x16, high 64x64) uint8 crops, 3 in 4 of them near the object
    (crops of plain background teach little)."""
    rng = random.Random(cfg.seed)
    lc = CROP // SCALE
    lows, highs = [], []
    for _ in range(cfg.num_scenes):
        low, high = render_pair(sample_scene(rng), rng)
        box = read_image(low).bbox
        for _ in range(cfg.crops_per_scene):
            if box is not None and rng.random() < 0.75:
                cx = rng.randint(box[0], box[2]) if rng.random() < 0.5 else rng.choice(box[::2])
                cy = rng.randint(box[1], box[3]) if rng.random() < 0.5 else rng.choice(box[1::2])
                x = min(max(cx - lc // 2 + rng.randint(-3, 3), 0), IMAGE_SIZE - lc)
                y = min(max(cy - lc // 2 + rng.randint(-3, 3), 0), IMAGE_SIZE - lc)
            else:
                x, y = rng.randint(0, IMAGE_SIZE - lc), rng.randint(0, IMAGE_SIZE - lc)
            lows.append(low[y : y + lc, x : x + lc])
            highs.append(high[y * SCALE : (y + lc) * SCALE, x * SCALE : (x + lc) * SCALE])

    def stack(arrays: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()

    return stack(lows), stack(highs)


def rescale_vae(vae: Any) -> Any:
    """A copy of ``vae`` whose latents are ``k`` times larger (k = old scaling /
    0.08333), so ``latents * 0.08333`` has the old scaled latents' unit variance;
    decoding is unchanged: encoder mean x k, log-variance + 2 ln k, decoder input / k."""
    vae = copy.deepcopy(vae)
    k = float(vae.config.scaling_factor) / UPSCALER_SCALING
    with torch.no_grad():
        q = vae.quant_conv
        half = q.weight.shape[0] // 2
        q.weight[:half] *= k
        q.bias[:half] *= k
        q.bias[half:] += 2 * math.log(k)
        vae.post_quant_conv.weight /= k
    vae.register_to_config(scaling_factor=UPSCALER_SCALING)
    return vae


def tune_decoder(vae: Any, highs: torch.Tensor, cfg: UpscalerConfig, gen: torch.Generator) -> None:
    """Fine-tune the decoder on high-res crops (the encoder, and so the latent space
    the UNet learns, stays fixed)."""
    vae.requires_grad_(False)
    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=cfg.vae_lr, weight_decay=0.0)
    order = batches(len(highs), 16, gen)
    start = time.monotonic()
    for step in range(cfg.vae_steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg.vae_steps, cfg.vae_lr, 20)
        x = to_float(highs[next(order)])
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mean
        recon = vae.decode(z).sample
        loss = F.mse_loss(recon, x) + F.l1_loss(recon, x)
        opt.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        opt.step()
        if step % cfg.log_every == 0 or step == cfg.vae_steps - 1:
            print(f"vae step {step:4d} rec {loss.item():.4f} {time.monotonic() - start:.0f}s")
    vae.requires_grad_(False)
    vae.eval()


def build_unet(cross_attention_dim: int, seed: int) -> Any:
    torch.manual_seed(seed + 5)
    return diffusers_module().UNet2DConditionModel(
        sample_size=IMAGE_SIZE,  # latents are at the low-res size
        in_channels=7,  # 4 latent + 3 low-res image
        out_channels=4,
        block_out_channels=(32, 64, 96),
        layers_per_block=1,
        down_block_types=("DownBlock2D",) * 3,
        up_block_types=("UpBlock2D",) * 3,
        mid_block_type="UNetMidBlock2D",  # no attention: crops train the whole image
        cross_attention_dim=cross_attention_dim,
        norm_num_groups=16,
        num_class_embeds=1000,  # the noise level, as in the real x4 upscaler
    )


def schedulers() -> tuple[Any, Any, Any]:
    """(training DDPM, sampling DDIM, low-res noise DDPM): the x4 upscaler's configs."""
    d = diffusers_module()
    betas = {"beta_schedule": "scaled_linear", "beta_start": 0.0001, "beta_end": 0.02}
    train = d.DDPMScheduler(**betas, prediction_type="v_prediction")
    sample = d.DDIMScheduler(
        **betas,
        prediction_type="v_prediction",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        timestep_spacing="trailing",
    )
    low_res = d.DDPMScheduler(**betas)
    return train, sample, low_res


def train(out_dir: Path, cfg: UpscalerConfig, base_dir: Path = DEMO_MODEL) -> Path:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    t0 = time.monotonic()
    base = load_base(base_dir)
    lows, highs = make_crops(cfg)
    print(f"crops {tuple(lows.shape)} {tuple(highs.shape)} {time.monotonic() - t0:.0f}s")
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    vae = rescale_vae(base.vae)
    tune_decoder(vae, highs, cfg, gen)
    with torch.no_grad():
        latents = torch.cat(
            [
                vae.encode(to_float(highs[i : i + 256])).latent_dist.mean
                for i in range(0, len(highs), 256)
            ]
        )
    latents *= UPSCALER_SCALING
    print(f"latents std {latents.std().item():.3f} {time.monotonic() - t0:.0f}s", flush=True)
    low_f = to_float(lows)
    empty = base.text_encoder(
        base.tokenizer("", padding="max_length", return_tensors="pt").input_ids
    )[0].detach()

    unet = build_unet(base.text_encoder.config.hidden_size, cfg.seed)
    unet.train()
    ema = copy.deepcopy(unet).eval()
    train_sched, sample_sched, low_res_sched = schedulers()
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
        level = torch.randint(0, cfg.train_noise_level + 1, (b,), generator=gen)
        low = low_res_sched.add_noise(
            low_f[idx], torch.randn(low_f[idx].shape, generator=gen), level
        )
        noise = torch.randn(z0.shape, generator=gen)
        t = torch.randint(0, train_sched.config.num_train_timesteps, (b,), generator=gen)
        noisy = train_sched.add_noise(z0, noise, t)
        pred = unet(
            torch.cat([noisy, low], dim=1),
            t,
            encoder_hidden_states=empty.expand(b, -1, -1),
            class_labels=level,
        ).sample
        loss = F.mse_loss(pred, train_sched.get_velocity(z0, noise, t))
        opt.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        ema_update(ema, unet, min(cfg.ema_decay, (1 + step) / (10 + step)))
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
        "base": "demo-model (VAE, text encoder, tokenizer)",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }

    def build(tmp: Path) -> None:
        pipe = diffusers_module().StableDiffusionUpscalePipeline(
            vae=vae,
            text_encoder=base.text_encoder,
            tokenizer=base.tokenizer,
            unet=ema,
            low_res_scheduler=low_res_sched,
            scheduler=sample_sched,
            max_noise_level=MAX_NOISE_LEVEL,
        )
        pipe.to(torch.float16)
        pipe.save_pretrained(tmp, safe_serialization=True)

    write_folder(out_dir, build, meta)
    print(f"saved {out_dir} after {minutes:.1f} min", flush=True)
    return Path(out_dir)


def main(argv: list[str] | None = None) -> None:
    out_dir, cfg = cli_config(__doc__, UpscalerConfig, ("steps", "vae_steps", "num_scenes"), argv)
    train(out_dir, cfg)


if __name__ == "__main__":
    main()
