"""Where a loaded model's weights live: the real ``model_cache.Placement``."""

from __future__ import annotations

import torch

from sdserve.engine.memory import release_memory
from sdserve.engine.tasks import LoadedModel

_HOST = torch.device("cpu")


class PipelinePlacement:
    """Moves a model's pipeline between its compute device and host RAM. Pipelines
    derived with ``from_pipe`` share the modules, so they move with it."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def to_device(self, value: LoadedModel) -> None:
        value.pipe.to(self.device)

    def to_host(self, value: LoadedModel) -> None:
        value.pipe.to(_HOST)
        release_memory()  # the device copies are free now; hand them back to CUDA

    def release(self) -> None:
        release_memory()
