"""A tiny random-weight Stable Diffusion model, written locally for tests and demos.

It is a real SD1-format diffusers folder (CLIP text encoder + tokenizer, UNet, VAE,
scheduler, ``model_index.json``), saved with ``save_pretrained`` as safetensors, so it
goes through exactly the same ``load_pipeline`` path as a downloaded checkpoint. Images
are noise-like (weights are random), but every code path (schedulers, batching, seeds,
cancellation, VAE decode) is exercised. Native size 64x64: UNet sample 16, VAE x4.

Nothing here downloads: the CLIP BPE vocabulary and merges are learned from a small
built-in word list.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch

DEMO_TEXT = (
    "a photo of an the cat dog house room living kitchen bedroom modern interior design "
    "sofa chair table lamp window light sunny bright dark night day city street car tree "
    "forest mountain river lake sea beach sky cloud sunset portrait painting oil digital "
    "art style realistic detailed high quality render product shot white background red "
    "green blue yellow orange purple black wooden stone glass metal with and in on at by "
    "for to from cozy minimal luxury staged virtual empty furniture plant flower garden "
    "person woman man child smiling standing sitting walking vintage futuristic studio "
    "lighting soft warm cold cinematic wide angle close up view landscape scene"
)
NUM_MERGES = 300
MAX_LENGTH = 77
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte-level alphabet: every byte maps to a printable character."""
    keep = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = keep[:]
    n = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(keep, chars, strict=True)}


def learn_bpe(text: str, num_merges: int) -> tuple[dict[str, int], list[str]]:
    """A minimal, deterministic BPE learner in CLIP's format (``</w>`` word ends).

    Ties between equally frequent pairs break lexicographically, so the same text
    always yields the same vocabulary.
    """
    alphabet = list(_bytes_to_unicode().values())
    vocab_list = alphabet + [c + "</w>" for c in alphabet]
    words = Counter(text.lower().split())
    splits: dict[str, list[str]] = {}
    for w in words:
        syms = list(w)
        syms[-1] += "</w>"
        splits[w] = syms
    merges: list[str] = []
    for _ in range(num_merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for w, freq in words.items():
            syms = splits[w]
            for a, b in pairwise(syms):
                pairs[(a, b)] += freq
        if not pairs:
            break
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        merges.append(f"{best[0]} {best[1]}")
        vocab_list.append(best[0] + best[1])
        for w in words:
            syms, out, i = splits[w], [], 0
            while i < len(syms):
                if i + 1 < len(syms) and (syms[i], syms[i + 1]) == best:
                    out.append(syms[i] + syms[i + 1])
                    i += 2
                else:
                    out.append(syms[i])
                    i += 1
            splits[w] = out
    vocab_list += [BOS, EOS]
    return {tok: i for i, tok in enumerate(dict.fromkeys(vocab_list))}, merges


def _diffusers() -> Any:
    """diffusers untyped (its stubs are partial); keeps mypy strict elsewhere."""
    import diffusers

    return diffusers


def _tokenizer(folder: Path) -> Any:
    from transformers import CLIPTokenizer

    vocab, merges = learn_bpe(DEMO_TEXT, NUM_MERGES)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    # tokenizers wants (left, right) pairs, not "left right" lines (the annotation
    # on CLIPTokenizer says list[str], which the Rust side rejects).
    pairs: Any = [
        tuple(line.split(" ", 1)) for line in (folder / "merges.txt").read_text().splitlines()[1:]
    ]
    tok = CLIPTokenizer(
        vocab=json.loads((folder / "vocab.json").read_text()),
        merges=pairs,
        model_max_length=MAX_LENGTH,
    )
    return tok


def _components(seed: int, vocab_size: int, eos_id: int, bos_id: int) -> dict[str, Any]:
    from transformers import CLIPTextConfig, CLIPTextModel

    d = _diffusers()

    # Seed before each component so one component's size never shifts another's weights.
    torch.manual_seed(seed)
    unet = d.UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=16,
    )
    torch.manual_seed(seed + 1)
    vae = d.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=64,
    )
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=MAX_LENGTH,
            projection_dim=32,
            bos_token_id=bos_id,
            eos_token_id=eos_id,
            pad_token_id=eos_id,
        )
    )
    # The same scheduler config SD 1.5 ships (PNDM, scaled-linear betas).
    scheduler = d.PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        set_alpha_to_one=False,
        skip_prk_steps=True,
        steps_offset=1,
    )
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "scheduler": scheduler}


def create_demo_model(path: Path, seed: int = 0) -> Path:
    """Write the tiny model to ``path`` (replaced if present); returns ``path``.

    Deterministic: the same seed gives byte-identical weight files.
    """
    path = Path(path)
    # Build in a sibling temp dir and rename, so a crash never leaves half a model
    # that ensure_demo_model would then mistake for a complete one.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".demo-", dir=path.parent))
    try:
        tokenizer = _tokenizer(tmp / "tokenizer")
        parts = _components(seed, len(tokenizer), tokenizer.eos_token_id, tokenizer.bos_token_id)
        pipe = _diffusers().StableDiffusionPipeline(
            tokenizer=tokenizer,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
            **parts,
        )
        pipe.save_pretrained(tmp, safe_serialization=True)
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return path


def ensure_demo_model(path: Path, seed: int = 0) -> Path:
    """Create the demo model at ``path`` unless a complete one is already there."""
    path = Path(path)
    if not (path / "model_index.json").exists():
        create_demo_model(path, seed)
    return path
