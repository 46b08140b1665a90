"""The engine interface the worker drives. Torch-free: data types and a Protocol."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from PIL import Image


@dataclass(frozen=True)
class BatchItem:
    """One job's share of a batch: its prompts and one seed per image."""

    job_id: str
    prompt: str
    negative_prompt: str
    seeds: list[int]


@dataclass(frozen=True)
class BatchRequest:
    """Jobs sharing a batch key: everything but prompts and seeds is common."""

    model: str
    task: str
    width: int
    height: int
    num_inference_steps: int
    guidance_scale: float
    scheduler: str
    items: list[BatchItem]

    @property
    def num_images(self) -> int:
        return sum(len(it.seeds) for it in self.items)


@dataclass
class ItemOutput:
    job_id: str
    images: list[Image.Image]
    warnings: list[str] = field(default_factory=list)


@dataclass
class BatchOutput:
    items: dict[str, ItemOutput]  # by job id; canceled jobs are absent
    canceled: set[str] = field(default_factory=set)


# Called after every denoising step with (step, total); returns the job ids to drop
# from the batch (canceled). If every job is dropped the engine stops early.
StepCallback = Callable[[int, int], set[str]]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    source: str  # path or hub id
    family: str  # sd1 | sd2 | sdxl | unknown
    default_width: int
    default_height: int
    loaded: bool = False
    # The scheduler the checkpoint ships with: what a request without one gets.
    default_scheduler: str = "euler_a"


class GenerationEngine(Protocol):
    def load(self) -> None:
        """Load (and warm) the default model; after it returns ``ready()`` is True."""
        ...

    def ready(self) -> bool: ...

    def generate(self, request: BatchRequest, on_step: StepCallback) -> BatchOutput:
        """Run one batch. Image ``k`` of item ``i`` must depend only on the item's
        prompts, its seed ``seeds[k]`` and the shared parameters, never on the rest of
        the batch. Raises OutOfMemory (worker splits and retries) or GenerationFailed."""
        ...
