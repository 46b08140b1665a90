"""The demo x4 upscaler's trainer (sdserve.training.upscaler) on tiny step counts: it
writes a folder diffusers loads as a StableDiffusionUpscalePipeline, reruns give the
same weights, and the latent rescaling keeps decoding unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from sdserve.training import upscaler

TINY = upscaler.UpscalerConfig(
    num_scenes=4,
    crops_per_scene=2,
    vae_steps=2,
    encoder_steps=2,
    vae_batch=4,
    steps=2,
    batch=4,
    log_every=1,
)


def test_rescale_vae_scales_latents_and_decodes_the_same() -> None:
    torch.set_num_threads(1)
    vae = upscaler.build_vae(0).eval()
    big = upscaler.rescale_vae(vae, 12.0)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        post, post_big = vae.encode(x).latent_dist, big.encode(x).latent_dist
        assert torch.allclose(post_big.mean, 12.0 * post.mean, atol=1e-4)
        assert torch.allclose(post_big.std, 12.0 * post.std, rtol=1e-3)
        out = vae.decode(post.mean).sample
        out_big = big.decode(post_big.mean).sample
    assert torch.allclose(out, out_big, atol=1e-4)


def test_tiny_runs_write_a_loadable_upscaler_and_repeat_exactly(tmp_path: Path) -> None:
    from diffusers import StableDiffusionUpscalePipeline
    from safetensors.torch import load_file

    a = upscaler.train(tmp_path / "a", TINY)
    b = upscaler.train(tmp_path / "b", TINY)
    for part in ("unet", "vae"):
        wa = load_file(a / part / "diffusion_pytorch_model.safetensors")
        wb = load_file(b / part / "diffusion_pytorch_model.safetensors")
        assert wa.keys() == wb.keys()
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
        assert all(t.dtype == torch.float16 for t in wa.values())
    meta = json.loads((a / "training.json").read_text())
    assert meta["steps_done"] == TINY.steps
    assert meta["config"]["vae_steps"] == TINY.vae_steps

    pipe = StableDiffusionUpscalePipeline.from_pretrained(
        a, use_safetensors=True, local_files_only=True, torch_dtype=torch.float32
    )
    assert pipe.vae.config.scaling_factor == upscaler.UPSCALER_SCALING
    assert pipe.unet.config.in_channels == 7
    low = np.zeros((16, 16, 3), dtype=np.uint8)
    out = pipe(
        "",
        image=torch.from_numpy(low).permute(2, 0, 1)[None].float() / 127.5 - 1,
        num_inference_steps=2,
        output_type="np",
    ).images
    assert out.shape == (1, 64, 64, 3)
