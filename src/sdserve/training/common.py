"""Pieces every demo trainer shares: data order, learning-rate schedule, EMA, the
base model's components, and an atomic folder write."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import torch

from sdserve.training.arch import diffusers_module

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets"
DEMO_MODEL = ASSETS / "demo-model"

C = TypeVar("C")


def cli_config(
    doc: str | None, cls: Callable[..., C], options: tuple[str, ...], argv: list[str] | None
) -> tuple[Path, C]:
    """A trainer's command line: ``OUT_DIR``, ``--seed`` and the integer ``options`` of
    its config dataclass (defaults from the class), ``--threads``, ``--minutes``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else "")
    parser.add_argument("out_dir", type=Path)
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    names = ("seed", *options)
    for name in names:
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=defaults[name])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--minutes", type=float, default=None)
    args = parser.parse_args(argv)
    values = {name: getattr(args, name) for name in names}
    return args.out_dir, cls(**values, threads=args.threads, max_minutes=args.minutes)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float in [-1, 1]."""
    return images.float() / 127.5 - 1.0


def batches(n: int, batch: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless deterministic shuffled index batches."""
    while True:
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n - batch + 1, batch):
            yield perm[i : i + batch]


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warmup, then cosine down to 10% of ``base``."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def ema_decay_at(step: int, decay: float) -> float:
    """The EMA's decay at ``step``: lower at first, so the random start fades fast."""
    return min(decay, (1 + step) / (10 + step))


def ema_update(
    ema: torch.nn.Module | Iterable[torch.Tensor],
    model: torch.nn.Module | Iterable[torch.Tensor],
    decay: float,
) -> None:
    """Move ``ema``'s weights towards ``model``'s (modules, or matching tensor lists)."""

    def tensors(x: torch.nn.Module | Iterable[torch.Tensor]) -> Iterable[torch.Tensor]:
        return x.parameters() if isinstance(x, torch.nn.Module) else x

    with torch.no_grad():
        for e, p in zip(tensors(ema), tensors(model), strict=True):
            e.lerp_(p, 1.0 - decay)


def load_base(model_dir: Path = DEMO_MODEL) -> Any:
    """The shipped txt2img demo model as a float32 StableDiffusionPipeline."""
    return diffusers_module().StableDiffusionPipeline.from_pretrained(
        model_dir, use_safetensors=True, local_files_only=True, torch_dtype=torch.float32
    )


@torch.no_grad()
def encode_texts(pipe: Any, captions: list[str]) -> torch.Tensor:
    """Text-encoder hidden states for ``captions`` (each distinct caption encoded once)."""
    unique = sorted(set(captions))
    ids = pipe.tokenizer(
        unique,
        padding="max_length",
        max_length=pipe.tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    states = torch.cat([pipe.text_encoder(ids[i : i + 64])[0] for i in range(0, len(ids), 64)])
    index = {c: i for i, c in enumerate(unique)}
    return states[torch.tensor([index[c] for c in captions])]


def write_folder(out_dir: Path, build: Callable[[Path], None], meta: dict[str, Any]) -> Path:
    """Run ``build(tmp)`` into a sibling temp dir, add ``training.json``, rename into
    place: never half a model at ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".train-", dir=out_dir.parent))
    try:
        build(tmp)
        (tmp / "training.json").write_text(json.dumps(meta, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out_dir
