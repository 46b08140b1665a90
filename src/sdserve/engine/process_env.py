"""Process environment for the engine, applied before torch/diffusers are imported.

- OpenMP threads that spin-wait collapse when another process shares the cores: on this
  project's 2-core machines 20 steps of the tiny model took 36 s instead of 0.43 s while
  one other busy process ran. Passive waiting costs little when the cores are free.
- Worker logs are for operators: no per-load progress bars, and transformers' notes
  about optional packages (torchvision) that the pipelines do not use.
Torch-free on purpose: it must run before ``import torch``. Explicit settings win.
"""

from __future__ import annotations

import os


def prepare_engine_env() -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
