"""Which LoRA adapters exist: the ``*.safetensors`` files of the adapters folder.

Torch-free, so the API validates a request's ``loras`` (names, the model's family)
before a job is queued; the engine reads the same files (engine/lora.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sdserve.config import Settings
from sdserve.domain.errors import FieldProblem, InvalidRequest
from sdserve.domain.requests import LoraRef
from sdserve.engine.base import ModelInfo

# Families whose pipelines take adapters (diffusers' LoRA loader for SD / SDXL).
LORA_FAMILIES = ("sd1", "sd2", "sdxl", "inpaint", "unknown")


def available_loras(folder: Path) -> dict[str, Path]:
    """Adapter name (file stem) -> file. Pickle formats are not adapters here."""
    if not folder.is_dir():
        return {}
    return {f.stem: f for f in sorted(folder.glob("*.safetensors")) if f.is_file()}


def lora_path(settings: Settings, name: str) -> Path | None:
    return available_loras(settings.resolved_loras_dir).get(name)


def check_loras(
    refs: Sequence[LoraRef], info: ModelInfo, settings: Settings
) -> tuple[LoraRef, ...]:
    """The request's adapters, if each exists and the model takes adapters; else a 422
    naming ``loras[i].name``."""
    if not refs:
        return ()
    if info.family not in LORA_FAMILIES:
        raise InvalidRequest.single(
            "loras", f"model {info.name!r} ({info.family}) takes no LoRA adapters"
        )
    known = available_loras(settings.resolved_loras_dir)
    problems = [
        FieldProblem(
            f"loras[{i}].name",
            f"unknown LoRA adapter {ref.name!r}; available: "
            + (", ".join(sorted(known)) or "none (add .safetensors files to the adapters folder)"),
        )
        for i, ref in enumerate(refs)
        if ref.name not in known
    ]
    if problems:
        raise InvalidRequest(problems)
    return tuple(refs)
