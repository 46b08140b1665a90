"""Train the demo x4 upscaler (diffusers' ``StableDiffusionUpscalePipeline`` format).

64x64 demo scenes in, 256x256 out. As in stabilityai/stable-diffusion-x4-upscaler the
UNet denoises latents at the low-res size, conditioned on the (noised) low-res image
concatenated to its input (4 + 3 = 7 channels) and on the noise level as a class label;
the x4 VAE decodes the latents to 4x the size. v-prediction, DDIM sampling.

- Data: each scene is rendered twice from the same random draws, at 64 and at 256
  (same geometry). Training uses aligned crops (16x16 low-res <-> 64x64 high-res):
  every layer is convolutional (no attention), so crops teach the whole image.
- VAE: its own (3 levels, 256x256 <-> 64x64x4), whose latent holds only what the
  low-res image determines (``train_vae``), rescaled so the pipeline's fixed
  ``scaling_factor`` 0.08333 gives unit-variance latents.
- UNet: trained on that latent space, latents of the whole 256x256 renders cut to the
  crops.
- Text encoder and tokenizer: the demo model's (the pipeline needs them; this UNet
  has no cross-attention, so the prompt does not matter).

    python -m sdserve.training.upscaler OUT_DIR [--steps 900] [--vae-steps 600]
        [--encoder-steps 200] [--num-scenes 1000] [--seed 0] [--minutes N]
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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
    write_folder,
)
from sdserve.training.scenes import IMAGE_SIZE
from sdserve.training.upscaler_data import HIGH, crop_windows, cut, make_pairs

UPSCALER_SCALING = 0.08333  # fixed by StableDiffusionUpscalePipeline
MAX_NOISE_LEVEL = 350
VAE_CHANNELS = (16, 32, 64)
# GroupNorm with one channel per group (the demo VAE's last norm: 16 groups of 16
# channels) removes each channel's own mean and spread over the image, so a two-colour
# image decodes to values that depend on how much of it the object covers, not on its
# colours, and a crop decodes differently from the whole image. Several channels per
# group keep their relative levels, so flat colours come through.
VAE_GROUPS = 4
UNET_GROUPS = 8


@dataclass(frozen=True)
class UpscalerConfig:
    seed: int = 0
    threads: int = 1
    num_scenes: int = 1000
    crops_per_scene: int = 4
    vae_steps: int = 600  # decoder + low-res predictor
    encoder_steps: int = 200
    vae_batch: int = 16
    vae_lr: float = 2e-3
    latent_noise: float = 0.1
    nll_weight: float = 0.01
    steps: int = 900  # UNet
    batch: int = 32
    lr: float = 1e-3
    warmup: int = 50
    train_noise_level: int = 100  # low-res noise levels drawn in [0, this]
    ema_decay: float = 0.995
    log_every: int = 50
    max_minutes: float | None = None


def build_vae(seed: int) -> Any:
    """The upscaler's own x4 VAE (3 levels, 256x256 <-> 64x64x4), the demo model's
    shape; no attention, so it trains on crops and runs on whole images alike."""
    torch.manual_seed(seed + 3)
    return diffusers_module().AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=VAE_CHANNELS,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=VAE_GROUPS,
        sample_size=HIGH,
        mid_block_add_attention=False,
        scaling_factor=UPSCALER_SCALING,
    )


def build_predictor(seed: int) -> torch.nn.Module:
    """A small conv net from the low-res crop to a latent of the same size: the
    stand-in, during VAE training, for what the UNet will be able to predict."""
    torch.manual_seed(seed + 4)
    width = 64
    layers: list[torch.nn.Module] = [torch.nn.Conv2d(3, width, 3, padding=1), torch.nn.SiLU()]
    for _ in range(2):
        layers += [torch.nn.Conv2d(width, width, 3, padding=1), torch.nn.SiLU()]
    layers.append(torch.nn.Conv2d(width, 4, 3, padding=1))
    return torch.nn.Sequential(*layers)


def rec_loss(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(recon, target) + F.l1_loss(recon, target)


Data = tuple[torch.Tensor, torch.Tensor]  # (low, high) uint8 image batches


def train_vae(
    crops: Data, cfg: UpscalerConfig, gen: torch.Generator
) -> tuple[Any, torch.nn.Module]:
    """The upscaler's VAE, in two stages on aligned crops.

    1. Decoder and a low-res predictor jointly: decode(predictor(low) + noise) ~ high.
       A plain autoencoder would put into its latent whatever helps reconstruction,
       including where an edge falls inside a low-res pixel; the 64x64 input cannot
       tell, so the UNet would have to guess, and a sharp edge guessed 1-2 px off
       costs more PSNR than a blend. A latent made from the low-res image holds only
       what the UNet can know, and the decoder learns the mean-square-best image from
       it: flat colours exact, a blend only where the low-res image is ambiguous. The
       noise (``latent_noise`` x the latent's spread) keeps it robust to the UNet's
       errors.
    2. The encoder, to give that latent from the high-res image (the UNet's training
       targets, as in any latent upscaler): its mean fits the prediction, its
       variance the remaining mismatch (Gaussian likelihood).
    """
    vae = build_vae(cfg.seed)
    predictor = build_predictor(cfg.seed)
    vae.requires_grad_(False)
    vae.train()
    start = time.monotonic()

    def stage(
        name: str,
        params: list[torch.nn.Parameter],
        loss_fn: Any,
        steps: int,
    ) -> None:
        lows, highs = crops
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.AdamW(params, lr=cfg.vae_lr, weight_decay=0.0)
        order = batches(len(highs), cfg.vae_batch, gen)
        for step in range(steps):
            for group in opt.param_groups:
                group["lr"] = lr_at(step, steps, cfg.vae_lr, 20)
            idx = next(order)
            loss = loss_fn(to_float(lows[idx]), to_float(highs[idx]))
            opt.zero_grad(set_to_none=True)
            torch.autograd.backward(loss)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            if step % cfg.log_every == 0 or step == steps - 1:
                print(
                    f"{name} step {step:4d} loss {loss.item():.4f} {time.monotonic() - start:.0f}s",
                    flush=True,
                )
        for p in params:
            p.requires_grad_(False)

    def decoder_loss(low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        z = predictor(low)
        spread = z.detach().std() + 1e-6
        z = z + cfg.latent_noise * spread * torch.randn(z.shape, generator=gen)
        return rec_loss(vae.decode(z).sample, high)

    def encoder_loss(low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = predictor(low)
        post = vae.encode(high).latent_dist
        spread = target.var() + 1e-6
        fit = F.mse_loss(post.mean, target) / spread
        # the variance fits the squared mismatch (mean held: it has its own term)
        nll = F.gaussian_nll_loss(post.mean.detach(), target, post.var, full=False)
        loss: torch.Tensor = fit + cfg.nll_weight * nll
        return loss

    decoder = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    decoder += list(predictor.parameters())
    encoder = list(vae.encoder.parameters()) + list(vae.quant_conv.parameters())
    stage("decoder", decoder, decoder_loss, cfg.vae_steps)
    stage("encoder", encoder, encoder_loss, cfg.encoder_steps)
    for module in (vae, predictor):
        module.eval()
    return vae, predictor


@torch.no_grad()
def vae_check(vae: Any, predictor: torch.nn.Module, seed: int, n: int = 4) -> str:
    """PSNR on whole held-out scenes of decode(encode(high)) and decode(predictor(low)):
    the ceiling the UNet works under (crops trained the VAE; the pipeline runs it on
    whole images, where GroupNorm sees other statistics)."""
    low, high = (to_float(x) for x in make_pairs(n, seed + 10_000))

    def psnr(z: torch.Tensor) -> float:
        out = vae.decode(z).sample.clamp(-1, 1)
        mse = float(((out - high) * 127.5).pow(2).mean())
        return 10 * math.log10(255.0**2 / max(mse, 1e-10))

    recon, pred = psnr(vae.encode(high).latent_dist.mean), psnr(predictor(low))
    return f"PSNR autoencoded {recon:.2f} dB, from low-res {pred:.2f} dB"


def rescale_vae(vae: Any, k: float) -> Any:
    """A copy of ``vae`` whose latents are ``k`` times larger and decode the same:
    encoder mean x k, log-variance + 2 ln k, decoder input / k. Used so that the
    pipeline's fixed ``latents * 0.08333`` has unit variance."""
    vae = copy.deepcopy(vae)
    with torch.no_grad():
        q = vae.quant_conv
        half = q.weight.shape[0] // 2
        q.weight[:half] *= k
        q.bias[:half] *= k
        q.bias[half:] += 2 * math.log(k)
        vae.post_quant_conv.weight /= k
    return vae


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
        norm_num_groups=UNET_GROUPS,
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
    lows, highs = make_pairs(cfg.num_scenes, cfg.seed)
    windows = crop_windows(lows, cfg.crops_per_scene, cfg.seed + 6)
    print(f"{len(lows)} scenes, {len(windows)} crops {time.monotonic() - t0:.0f}s", flush=True)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    raw_vae, predictor = train_vae((cut(lows, windows), cut(highs, windows)), cfg, gen)
    print(f"vae on whole images: {vae_check(raw_vae, predictor, cfg.seed)}", flush=True)
    with torch.no_grad():
        latents = torch.cat(
            [
                raw_vae.encode(to_float(highs[i : i + 16])).latent_dist.mean
                for i in range(0, len(highs), 16)
            ]
        )
    # unit-variance latents after the pipeline's fixed scaling
    k = 1.0 / (UPSCALER_SCALING * latents.std().item())
    vae = rescale_vae(raw_vae, k)
    latents *= k * UPSCALER_SCALING
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
    order = batches(len(windows), cfg.batch, torch.Generator().manual_seed(cfg.seed + 2))
    z_crops, low_crops = cut(latents, windows), cut(low_f, windows)
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
        z0 = z_crops[idx]
        level = torch.randint(0, cfg.train_noise_level + 1, (b,), generator=gen)
        low = low_res_sched.add_noise(
            low_crops[idx], torch.randn(low_crops[idx].shape, generator=gen), level
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
        "base": "demo-model (text encoder, tokenizer)",
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
    options = ("steps", "vae_steps", "encoder_steps", "num_scenes")
    out_dir, cfg = cli_config(__doc__, UpscalerConfig, options, argv)
    train(out_dir, cfg)


if __name__ == "__main__":
    main()
