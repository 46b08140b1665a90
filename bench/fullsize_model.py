"""Write a random-weight model with Stable Diffusion 1.5's exact architecture.

No pretrained weights can be downloaded where sdserve is built, but speed and memory
depend on the architecture, not on the values: this model costs what SD 1.5 costs per
step (860M-parameter UNet, the 123M CLIP ViT-L/14 text encoder, the 84M VAE), so GPU
benchmarks on it are representative. Its images are noise.
Usage: python -m bench.fullsize_model OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def create_sd15_shaped_model(out: Path) -> Path:
    import diffusers
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    from sdserve.engine.demo import _tokenizer

    d: Any = diffusers
    torch.manual_seed(0)
    tokenizer = _tokenizer(out / "tokenizer")
    unet = d.UNet2DConditionModel(sample_size=64, cross_attention_dim=768)
    vae = d.AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        sample_size=512,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.eos_token_id,
        )
    )
    scheduler = d.PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        set_alpha_to_one=False,
        skip_prk_steps=True,
        steps_offset=1,
    )
    pipe = d.StableDiffusionPipeline(
        unet=unet.half(),
        vae=vae.half(),
        text_encoder=text_encoder.half(),
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)
    params = sum(p.numel() for p in unet.parameters())
    print(f"wrote SD1.5-shaped model to {out} (UNet {params / 1e6:.0f}M parameters)")
    return out


if __name__ == "__main__":
    create_sd15_shaped_model(Path(sys.argv[1]))
