"""Shared unit-test fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random-weight demo model (a few MB), created once per session."""
    import torch

    from sdserve.engine.demo import create_demo_model

    # Test machines are small and shared: one thread avoids oversubscription stalls.
    torch.set_num_threads(1)
    return create_demo_model(tmp_path_factory.mktemp("models") / "demo")
