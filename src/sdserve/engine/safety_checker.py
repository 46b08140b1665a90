"""The checkpoint's own NSFW checker as an ``ImageChecker``: verdicts, never black images.

Stable Diffusion folders ship ``safety_checker/`` (diffusers'
``StableDiffusionSafetyChecker``: a CLIP vision tower plus 17 "concept" and 3
"special care" embeddings with a threshold each) and ``feature_extractor/`` (a
``CLIPImageProcessor``). The pipeline's own use blacks out flagged images; here the
same scores are computed (the arithmetic of ``StableDiffusionSafetyChecker.forward``,
which tests compare against) and only the verdicts are returned: what to do with a
flagged image is the caller's decision (hold for review, or reject).

Only ``.safetensors`` weights load. ``write_tiny_safety_checker`` writes a random
tiny pair into a model folder so tests run this real loading path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from sdserve.domain.errors import ModelLoadError, UnsafeWeights
from sdserve.engine.catalog import PICKLE_SUFFIXES
from sdserve.engine.device import pick_device
from sdserve.safety.decisions import ImageVerdict

CATEGORY = "adult"  # the checker's concepts are sexual content
CHECKER_DIR, EXTRACTOR_DIR = "safety_checker", "feature_extractor"


def has_safety_checker(model_dir: Path) -> bool:
    return (model_dir / CHECKER_DIR / "config.json").is_file() and (
        model_dir / EXTRACTOR_DIR / "preprocessor_config.json"
    ).is_file()


def _refuse_pickle_only(folder: Path) -> None:
    files = [f.name for f in folder.iterdir() if f.is_file()]
    if not any(f.endswith(".safetensors") for f in files):
        pickled = sorted(f for f in files if f.lower().endswith(PICKLE_SUFFIXES))
        if pickled:
            raise UnsafeWeights(
                f"refusing to load {folder}: only pickle-based weights ({', '.join(pickled)}); "
                "convert them to .safetensors"
            )
        raise ModelLoadError(f"{folder} has no .safetensors weights")


class ModelSafetyChecker:
    name = "model"

    def __init__(self, model: Any, processor: Any, device: torch.device) -> None:
        self.model = model.to(device).eval()
        self.processor = processor
        self.device = device

    @classmethod
    def load(cls, model_dir: Path, device: str = "auto") -> ModelSafetyChecker:
        from diffusers.pipelines.stable_diffusion.safety_checker import (
            StableDiffusionSafetyChecker,
        )
        from transformers import CLIPImageProcessor

        from sdserve.engine.loader import _quiet_loading

        _quiet_loading()
        model_dir = Path(model_dir)
        if not has_safety_checker(model_dir):
            raise ModelLoadError(
                f"{model_dir} has no {CHECKER_DIR}/ and {EXTRACTOR_DIR}/, which "
                "SDSERVE_IMAGE_CHECKER=model needs (use a checkpoint that ships them, "
                "nudenet, or off)"
            )
        _refuse_pickle_only(model_dir / CHECKER_DIR)
        try:
            model = StableDiffusionSafetyChecker.from_pretrained(
                str(model_dir / CHECKER_DIR), use_safetensors=True, local_files_only=True
            )
            processor = CLIPImageProcessor.from_pretrained(
                str(model_dir / EXTRACTOR_DIR), local_files_only=True
            )
        except (OSError, ValueError) as exc:
            raise ModelLoadError(
                f"could not load the safety checker of {model_dir}: {exc}"
            ) from exc
        return cls(model, processor, pick_device(device))

    def embed(self, images: list[Image.Image]) -> torch.Tensor:
        """The checker's input: images resized and normalised by its feature extractor."""
        pixels = self.processor([im.convert("RGB") for im in images], return_tensors="pt")
        clip_input: torch.Tensor = pixels.pixel_values.to(self.device, self.model.dtype)
        return clip_input

    @torch.no_grad()
    def scores(self, clip_input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per image: (concept margins (N, 17), special-care margins (N, 3)); > 0 = hit."""
        m = self.model
        pooled = m.vision_model(clip_input)[1]
        embeds = torch.nn.functional.normalize(m.visual_projection(pooled).float())

        def margins(concepts: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
            cos = embeds @ torch.nn.functional.normalize(concepts.float()).t()
            return cos - thresholds.float()

        special = margins(m.special_care_embeds, m.special_care_embeds_weights)
        # As in diffusers: rounded to 3 decimals; a special-care hit makes every
        # concept 0.01 easier to hit.
        special = torch.round(special, decimals=3)
        adjustment = (special > 0).any(dim=1, keepdim=True).float() * 0.01
        concept = torch.round(
            margins(m.concept_embeds, m.concept_embeds_weights) + adjustment, decimals=3
        )
        return concept, special

    def check(self, images: list[Image.Image]) -> list[ImageVerdict]:
        if not images:
            return []
        concept, _ = self.scores(self.embed(images))
        out = []
        for row in concept:
            top = float(row.max())
            flagged = top > 0
            hits = int((row > 0).sum())
            out.append(
                ImageVerdict(
                    flagged=flagged,
                    categories={CATEGORY: 1.0 if flagged else 0.0},
                    reason=(
                        f"safety checker: {hits} concept(s) over threshold (top margin {top:+.3f})"
                        if flagged
                        else f"safety checker: no concept over threshold (top margin {top:+.3f})"
                    ),
                    source=self.name,
                    labels=(CATEGORY,) if flagged else (),
                )
            )
        return out


def write_tiny_safety_checker(
    model_dir: Path,
    seed: int = 0,
    flag_like: list[Image.Image] | None = None,
    similarity: float = 0.99,
) -> None:
    """Write a random tiny ``safety_checker/`` + ``feature_extractor/`` into a model folder.

    Saved with ``save_pretrained`` as safetensors and listed in ``model_index.json`` as
    real checkpoints do. With ``flag_like``, concept *i* becomes image *i*'s embedding
    with threshold ``similarity``: images that close to one of them are flagged, so a
    test can choose what is flagged; otherwise (all-ones concepts, threshold 1) nothing is.
    """
    from diffusers.pipelines.stable_diffusion.safety_checker import (
        StableDiffusionSafetyChecker,
    )
    from transformers import CLIPConfig, CLIPImageProcessor

    from sdserve.engine.loader import _quiet_loading

    _quiet_loading()
    model_dir = Path(model_dir)
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_attention_heads": 4,
            "num_hidden_layers": 1,
            "vocab_size": 100,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    model: Any = StableDiffusionSafetyChecker(config)
    model.eval()
    processor = CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    if flag_like:
        checker = ModelSafetyChecker(model, processor, torch.device("cpu"))
        with torch.no_grad():
            pooled = model.vision_model(checker.embed(flag_like))[1]
            embeds = model.visual_projection(pooled)
            n = min(len(flag_like), model.concept_embeds.shape[0])
            model.concept_embeds[:n] = embeds[:n]
            model.concept_embeds_weights[:n] = similarity
    model.save_pretrained(str(model_dir / CHECKER_DIR), safe_serialization=True)
    processor.save_pretrained(str(model_dir / EXTRACTOR_DIR))
    index_path = model_dir / "model_index.json"
    if index_path.is_file():
        index = json.loads(index_path.read_text())
        index[CHECKER_DIR] = ["stable_diffusion", "StableDiffusionSafetyChecker"]
        index[EXTRACTOR_DIR] = ["transformers", "CLIPImageProcessor"]
        index_path.write_text(json.dumps(index, indent=2))
