"""Process environment for CPU inference, applied before torch is imported.

OpenMP threads that spin-wait collapse when another process shares the cores: on this
project's 2-core machines 20 steps of the tiny model took 36 s instead of 0.43 s while
one other busy process ran. Passive waiting costs little when the cores are free.
Torch-free on purpose: it must run before ``import torch``.
"""

from __future__ import annotations

import os


def prepare_cpu_env() -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
