"""The demo model's architecture and file layout: tokenizer, VAE, text encoder, UNet,
and saving them as an SD1 diffusers folder. Used by the trainers in this package."""

from __future__ import annotations

import importlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from sdserve.engine.demo import MAX_LENGTH, learn_bpe
from sdserve.training.scenes import IMAGE_SIZE, vocabulary

LATENT_SIZE = IMAGE_SIZE // 4
# linear (DDPM) ends near zero SNR, so flat colours do not leak through the noise;
# scaled_linear is what SD 1.x ships.
BETA_SCHEDULES = {"linear": (0.0001, 0.02), "scaled_linear": (0.00085, 0.012)}


def train_betas(schedule: str, prediction: str) -> dict[str, Any]:
    start, end = BETA_SCHEDULES[schedule]
    return {
        "num_train_timesteps": 1000,
        "beta_start": start,
        "beta_end": end,
        "beta_schedule": schedule,
        "prediction_type": prediction,
    }


# ----------------------------------------------------------------------------- build


def diffusers_module() -> Any:
    """diffusers, untyped (its partial annotations trip mypy --strict)."""
    return importlib.import_module("diffusers")


def build_tokenizer(folder: Path) -> Any:
    """A CLIP BPE tokenizer whose vocabulary holds every grammar word whole.

    Byte-level single characters (and their word-final forms) stay in the vocabulary,
    so any text tokenizes; only grammar words are guaranteed one token each.
    """
    from transformers import CLIPTokenizer

    words = vocabulary()
    vocab, merges = learn_bpe(" ".join(words), num_merges=10_000)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    pairs: Any = [tuple(m.split(" ")) for m in merges]  # tokenizers wants pairs
    tok = CLIPTokenizer(
        vocab=vocab,
        merges=pairs,
        model_max_length=MAX_LENGTH,
    )
    for w in words:
        ids = tok(w, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise RuntimeError(f"tokenizer splits grammar word {w!r} into {ids}")
    return tok


def build_models(vocab_size: int, bos: int, eos: int, seed: int) -> dict[str, Any]:
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    vae = diffusers_module().AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=IMAGE_SIZE,
        mid_block_add_attention=False,  # flat shapes need no attention; 2x faster
    )
    torch.manual_seed(seed + 1)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=MAX_LENGTH,
            projection_dim=64,
            bos_token_id=bos,
            eos_token_id=eos,
            pad_token_id=eos,
        )
    )
    torch.manual_seed(seed + 2)
    unet = diffusers_module().UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64, 128),
        layers_per_block=1,
        # Cross-attention at 8x8 and 4x4 only: attention at 16x16 doubles the step time.
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64,
        attention_head_dim=8,
        norm_num_groups=16,
    )
    return {"vae": vae, "text_encoder": text_encoder, "unet": unet}


# ----------------------------------------------------------------------------- save


def save_pipeline(out_dir: Path, parts: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Write an SD1 diffusers folder (fp16 safetensors) atomically into ``out_dir``."""
    diffusers = diffusers_module()
    scheduler = diffusers.DDIMScheduler(
        **meta["train_betas"],
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        timestep_spacing="trailing",
    )
    pipe = diffusers.StableDiffusionPipeline(
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
        **parts,
    )
    pipe.to(torch.float16)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".demo-train-", dir=out_dir.parent))
    try:
        pipe.save_pretrained(tmp, safe_serialization=True)
        (tmp / "training.json").write_text(json.dumps(meta, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out_dir
