"""Tiny LoRA adapters for a diffusers SD model, in the two key layouts found in the wild.

For tests and demos: random low-rank updates on the UNet's attention projections (and
the text encoder's, optionally), saved as .safetensors either in the diffusers/PEFT
layout (``unet.<module>.lora_A.weight`` / ``lora_B``) or in kohya's (sd-scripts, A1111:
``lora_unet_<module_with_underscores>.lora_down.weight`` / ``lora_up`` / ``alpha``).
The same seed writes the same update in both layouts, so they must draw alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_file

Layout = Literal["peft", "kohya"]
_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
_TE_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")


def _linears(
    module: torch.nn.Module, targets: tuple[str, ...]
) -> list[tuple[str, torch.nn.Linear]]:
    return [
        (name, m)
        for name, m in module.named_modules()
        if isinstance(m, torch.nn.Linear) and name.endswith(targets)
    ]


def make_lora(
    model_dir: Path,
    out: Path,
    layout: Layout = "peft",
    rank: int = 4,
    seed: int = 0,
    magnitude: float = 0.5,
    text_encoder: bool = True,
) -> Path:
    """Write a random rank-``rank`` adapter for the model at ``model_dir`` to ``out``."""
    import importlib

    import transformers

    diffusers: Any = importlib.import_module("diffusers")  # untyped: keeps mypy strict
    unet = diffusers.UNet2DConditionModel.from_pretrained(model_dir / "unet")
    parts: list[tuple[str, str, list[tuple[str, torch.nn.Linear]]]] = [
        ("unet", "lora_unet", _linears(unet, _TARGETS))
    ]
    if text_encoder:
        te = transformers.CLIPTextModel.from_pretrained(model_dir / "text_encoder")
        parts.append(("text_encoder", "lora_te", _linears(te, _TE_TARGETS)))
    gen = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for prefix, kohya_prefix, linears in parts:
        for name, lin in linears:
            down = torch.randn(rank, lin.in_features, generator=gen) * magnitude
            up = torch.randn(lin.out_features, rank, generator=gen) * magnitude / rank
            if layout == "peft":
                tensors[f"{prefix}.{name}.lora_A.weight"] = down.contiguous()
                tensors[f"{prefix}.{name}.lora_B.weight"] = up.contiguous()
            else:
                key = f"{kohya_prefix}_{name.replace('.', '_')}"
                tensors[f"{key}.lora_down.weight"] = down.contiguous()
                tensors[f"{key}.lora_up.weight"] = up.contiguous()
                tensors[f"{key}.alpha"] = torch.tensor(float(rank))
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out))
    return out
