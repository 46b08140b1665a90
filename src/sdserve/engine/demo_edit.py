"""Tiny random-weight editing models: a 9-channel inpainting SD, the SD x4 upscaler and
the x2 latent upscaler, plus a tiny SDXL (whose img2img / inpainting pipelines differ
from SD's), written locally for tests.

Like ``demo.create_demo_model`` these are real diffusers folders saved with
``save_pretrained`` as safetensors (``model_index.json`` names the pipeline class), so
they are described by the catalog and loaded by ``load_pipeline`` exactly as downloaded
checkpoints are. The architectures follow the real ones (input channels, class
embeddings, K-diffusion blocks, scheduler configs); only the widths are tiny. Images
are noise-like. Nothing here downloads.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sdserve.engine.demo import _components, _diffusers, _tokenizer


def _write(path: Path, build: Callable[[Path], Any]) -> Path:
    """Build a pipeline in a sibling temp dir and rename it into place (never half a
    model at ``path``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".demo-", dir=path.parent))
    try:
        pipe = build(tmp)
        pipe.save_pretrained(tmp, safe_serialization=True)
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return path


def _text_parts(tmp: Path, seed: int) -> tuple[Any, dict[str, Any]]:
    tokenizer = _tokenizer(tmp / "tokenizer")
    parts = _components(seed, len(tokenizer), tokenizer.eos_token_id, tokenizer.bos_token_id)
    return tokenizer, parts


def create_demo_inpaint_model(path: Path, seed: int = 0) -> Path:
    """An SD1-format inpainting model: the demo components with a 9-channel UNet
    (4 latent + 1 mask + 4 masked-image latent channels), as in SD inpainting."""

    def build(tmp: Path) -> Any:
        d = _diffusers()
        tokenizer, parts = _text_parts(tmp, seed)
        torch.manual_seed(seed + 10)
        parts["unet"] = d.UNet2DConditionModel(
            sample_size=16,
            in_channels=9,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=8,
            norm_num_groups=16,
        )
        return d.StableDiffusionInpaintPipeline(
            tokenizer=tokenizer,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
            **parts,
        )

    return _write(path, build)


def create_demo_upscaler(path: Path, seed: int = 0) -> Path:
    """A StableDiffusionUpscalePipeline (x4): 7-channel UNet (latents + the noised
    low-res image) with a noise-level class embedding, a x4 VAE, v-prediction DDIM and
    a DDPM low-res scheduler, as in stabilityai/stable-diffusion-x4-upscaler."""

    def build(tmp: Path) -> Any:
        d = _diffusers()
        tokenizer, parts = _text_parts(tmp, seed)
        torch.manual_seed(seed + 20)
        unet = d.UNet2DConditionModel(
            sample_size=16,  # the low-res input side; output 64 (x4 VAE)
            in_channels=7,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=8,
            norm_num_groups=16,
            num_class_embeds=1000,  # noise_level 0..max_noise_level
        )
        # The x4 VAE (two downsamples) and its scaling factor; it is the demo VAE
        # shape, which already downsamples x4.
        vae = parts["vae"]
        vae.register_to_config(scaling_factor=0.08333)
        return d.StableDiffusionUpscalePipeline(
            vae=vae,
            text_encoder=parts["text_encoder"],
            tokenizer=tokenizer,
            unet=unet,
            low_res_scheduler=d.DDPMScheduler(
                beta_schedule="scaled_linear", beta_start=0.0001, beta_end=0.02
            ),
            scheduler=d.DDIMScheduler(
                beta_schedule="scaled_linear",
                beta_start=0.0001,
                beta_end=0.02,
                prediction_type="v_prediction",
                clip_sample=False,
                set_alpha_to_one=False,
            ),
            max_noise_level=350,
        )

    return _write(path, build)


def create_demo_latent_upscaler(path: Path, seed: int = 0) -> Path:
    """A StableDiffusionLatentUpscalePipeline (x2 in latent space): K-diffusion UNet
    blocks, 8 input channels (latents + upscaled image latents), 5 output channels,
    Fourier time embedding conditioned on the pooled text embedding, and a sample-
    predicting Euler scheduler, as in stabilityai/sd-x2-latent-upscaler."""

    def build(tmp: Path) -> Any:
        d = _diffusers()
        tokenizer, parts = _text_parts(tmp, seed)
        hidden = parts["text_encoder"].config.hidden_size
        torch.manual_seed(seed + 30)
        unet = d.UNet2DConditionModel(
            sample_size=16,  # upscaled latent side: output 64 with the x4 demo VAE
            act_fn="gelu",
            attention_head_dim=8,
            norm_num_groups=None,
            # The K blocks only line up with four levels (as in diffusers' own tests).
            block_out_channels=(32, 32, 64, 64),
            layers_per_block=1,
            time_cond_proj_dim=128 + hidden,  # noise-level embedding + pooled text
            conv_in_kernel=1,
            conv_out_kernel=1,
            cross_attention_dim=hidden,
            down_block_types=("KDownBlock2D",) + ("KCrossAttnDownBlock2D",) * 3,
            up_block_types=("KCrossAttnUpBlock2D",) * 3 + ("KUpBlock2D",),
            in_channels=8,
            mid_block_type=None,
            only_cross_attention=False,
            out_channels=5,
            resnet_time_scale_shift="scale_shift",
            time_embedding_type="fourier",
            timestep_post_act="gelu",
        )
        return d.StableDiffusionLatentUpscalePipeline(
            vae=parts["vae"],
            text_encoder=parts["text_encoder"],
            tokenizer=tokenizer,
            unet=unet,
            scheduler=d.EulerDiscreteScheduler(
                beta_schedule="scaled_linear",
                beta_start=0.00085,
                beta_end=0.012,
                prediction_type="sample",
            ),
        )

    return _write(path, build)


def create_demo_sdxl_model(path: Path, seed: int = 0) -> Path:
    """An SDXL-format model: two CLIP text encoders (the second with projection, for
    the pooled embedding), a UNet with SDXL's text-time added conditioning, and the
    demo VAE."""

    def build(tmp: Path) -> Any:
        from transformers import CLIPTextConfig, CLIPTextModelWithProjection

        d = _diffusers()
        tokenizer, parts = _text_parts(tmp, seed)
        tokenizer_2 = _tokenizer(tmp / "tokenizer_2")
        torch.manual_seed(seed + 40)
        text_encoder_2 = CLIPTextModelWithProjection(
            CLIPTextConfig(**{**parts["text_encoder"].config.to_dict(), "projection_dim": 32})
        )
        hidden = parts["text_encoder"].config.hidden_size
        torch.manual_seed(seed + 41)
        unet = d.UNet2DConditionModel(
            sample_size=16,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            transformer_layers_per_block=(1, 2),
            cross_attention_dim=2 * hidden,  # both encoders' hidden states side by side
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            # pooled text (projection_dim) + 6 size/crop conditioning values x 8
            projection_class_embeddings_input_dim=32 + 6 * 8,
            norm_num_groups=16,
        )
        return d.StableDiffusionXLPipeline(
            vae=parts["vae"],
            text_encoder=parts["text_encoder"],
            text_encoder_2=text_encoder_2,
            tokenizer=tokenizer,
            tokenizer_2=tokenizer_2,
            unet=unet,
            scheduler=d.EulerDiscreteScheduler(
                beta_start=0.00085,
                beta_end=0.012,
                beta_schedule="scaled_linear",
                steps_offset=1,
                timestep_spacing="leading",
            ),
        )

    return _write(path, build)
