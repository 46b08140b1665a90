"""Single-file checkpoints in the original Stable Diffusion layout, our own code.

One ``.safetensors`` holds the UNet (``model.diffusion_model.*``), the VAE
(``first_stage_model.*``) and the CLIP text encoder (``cond_stage_model.transformer.*``)
under the names the original (CompVis/LDM) code used; the rest of the pipeline
(tokenizer, scheduler, component configs) comes from a diffusers config folder
without weights. The key mapping follows the layout that diffusers' public conversion
scripts document; it is derived here by rule from the diffusers module names, so it
holds for any block count and layers per block (the tiny demo model as much as SD 1.5).

Loading builds each component from its config, renames the file's tensors back and
loads them strictly (every tensor present, none left over): nothing is unpickled and
the weights are the same bits as the folder's, so images are bit-identical.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.transformer."

_RESNET = [
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("time_emb_proj", "emb_layers.1"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("conv_shortcut", "skip_connection"),
]
_VAE_ATTN = [
    ("group_norm", "norm"),
    ("to_q", "q"),
    ("to_k", "k"),
    ("to_v", "v"),
    ("to_out.0", "proj_out"),
]


def _sub(name: str, pairs: list[tuple[str, str]]) -> str:
    for old, new in pairs:
        if name.startswith(old + "."):
            return new + name[len(old) :]
    return name


def unet_key(key: str, layers: int, has_attn: list[bool]) -> str:
    """A diffusers UNet2DConditionModel key -> its original name (no prefix).
    ``layers``: layers_per_block; ``has_attn``: per up block, whether it has
    attentions (the upsampler's slot in its output block depends on it)."""
    fixed = {
        "time_embedding.linear_1.": "time_embed.0.",
        "time_embedding.linear_2.": "time_embed.2.",
        "conv_in.": "input_blocks.0.0.",
        "conv_norm_out.": "out.0.",
        "conv_out.": "out.2.",
    }
    for old, new in fixed.items():
        if key.startswith(old):
            return new + key[len(old) :]
    if m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
        i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        slot = 1 + i * (layers + 1) + j
        if kind == "resnets":
            return f"input_blocks.{slot}.0.{_sub(rest, _RESNET)}"
        return f"input_blocks.{slot}.1.{rest}"
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
        return f"input_blocks.{(int(m[1]) + 1) * (layers + 1)}.0.op.{m[2]}"
    if m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", key):
        return f"middle_block.{2 * int(m[1])}.{_sub(m[2], _RESNET)}"
    if m := re.match(r"mid_block\.attentions\.0\.(.*)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
        i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        slot = i * (layers + 1) + j
        if kind == "resnets":
            return f"output_blocks.{slot}.0.{_sub(rest, _RESNET)}"
        return f"output_blocks.{slot}.1.{rest}"
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
        i = int(m[1])
        part = 2 if has_attn[i] else 1
        return f"output_blocks.{i * (layers + 1) + layers}.{part}.conv.{m[2]}"
    raise KeyError(f"no original-layout name for UNet key {key!r}")


def vae_key(key: str, num_up: int) -> str:
    """A diffusers AutoencoderKL key -> its original name (no prefix)."""
    key = key.replace("conv_norm_out.", "norm_out.")
    if m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
        return f"encoder.down.{m[1]}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
    if m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
    if m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
        up = num_up - 1 - int(m[1])
        return f"decoder.up.{up}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
    if m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
        return f"decoder.up.{num_up - 1 - int(m[1])}.upsample.conv.{m[2]}"
    if m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", key):
        block = int(m[2]) + 1
        return f"{m[1]}.mid.block_{block}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
    if m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)", key):
        return f"{m[1]}.mid.attn_1.{_sub(m[2], _VAE_ATTN)}"
    return key  # conv_in, conv_out, norm_out, quant_conv, post_quant_conv


def _is_vae_attn_matrix(original: str, tensor: torch.Tensor) -> bool:
    """The original VAE's mid attention uses 1x1 convolutions where diffusers has
    linear layers: the same numbers, shaped [C, C, 1, 1] instead of [C, C]."""
    return ".mid.attn_1." in original and original.endswith("weight") and tensor.dim() == 2


def key_map(unet: Any, vae: Any, text_encoder: Any) -> dict[str, tuple[str, str]]:
    """Original-layout name -> (component, diffusers name), for every tensor."""
    cfg = unet.config
    has_attn = [hasattr(b, "attentions") for b in unet.up_blocks]
    out: dict[str, tuple[str, str]] = {}
    for key in unet.state_dict():
        out[UNET_PREFIX + unet_key(key, cfg.layers_per_block, has_attn)] = ("unet", key)
    num_up = len(vae.config.block_out_channels)
    for key in vae.state_dict():
        out[VAE_PREFIX + vae_key(key, num_up)] = ("vae", key)
    for key in text_encoder.state_dict():
        # transformers >= 5.6 dropped CLIPTextModel's ``text_model.`` level; the
        # original layout keeps it.
        name = key if key.startswith("text_model.") else "text_model." + key
        out[TEXT_PREFIX + name] = ("text_encoder", key)
    return out


def to_original(pipe: Any) -> dict[str, torch.Tensor]:
    """A pipeline's UNet, VAE and text encoder as one original-layout state dict."""
    modules = {"unet": pipe.unet, "vae": pipe.vae, "text_encoder": pipe.text_encoder}
    states = {name: m.state_dict() for name, m in modules.items()}
    out: dict[str, torch.Tensor] = {}
    for original, (component, key) in key_map(*modules.values()).items():
        tensor = states[component][key]
        if _is_vae_attn_matrix(original, tensor):
            tensor = tensor[:, :, None, None]
        out[original] = tensor.detach().cpu().contiguous()
    return out


def load_single_file(path: Path, config: Path, dtype: torch.dtype, **kwargs: Any) -> Any:
    """A StableDiffusionPipeline (SD1 layout) from an original-layout ``.safetensors``
    and a diffusers config folder (configs, tokenizer, scheduler; no weights);
    ``kwargs`` go to the pipeline (safety checker off and the like)."""
    import diffusers
    from safetensors.torch import load_file
    from transformers import CLIPTextConfig, CLIPTextModel

    d: Any = diffusers  # untyped library: keep mypy's strict mode on our code
    unet = d.UNet2DConditionModel.from_config(d.UNet2DConditionModel.load_config(config / "unet"))
    vae = d.AutoencoderKL.from_config(d.AutoencoderKL.load_config(config / "vae"))
    text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(config / "text_encoder"))
    tensors = load_file(str(path))  # safetensors: no pickle
    mapping = key_map(unet, vae, text_encoder)
    # Real checkpoints carry more (EMA weights, schedules, position ids): only an
    # unknown tensor of a component we load means the config does not fit.
    ours = (UNET_PREFIX, VAE_PREFIX, TEXT_PREFIX)
    extra = sorted(
        k
        for k in set(tensors) - set(mapping)
        if k.startswith(ours) and not k.endswith("position_ids")
    )
    if extra:
        raise ValueError(f"{path.name}: unexpected tensors for this config: {extra[:5]}")
    per: dict[str, dict[str, torch.Tensor]] = {"unet": {}, "vae": {}, "text_encoder": {}}
    for original, (component, key) in mapping.items():
        if original not in tensors:
            raise ValueError(f"{path.name}: missing tensor {original!r}")
        tensor = tensors[original]
        if ".mid.attn_1." in original and original.endswith("weight") and tensor.dim() == 4:
            tensor = tensor[:, :, 0, 0]
        per[component][key] = tensor
    modules = {"unet": unet, "vae": vae, "text_encoder": text_encoder}
    for name, module in modules.items():
        module.load_state_dict(per[name], strict=True)
        module.to(dtype).eval()
    return d.StableDiffusionPipeline.from_pretrained(
        str(config), **modules, local_files_only=True, **kwargs
    )
