"""Shared fixtures: free ports, settings in temporary data dirs, the tiny model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sdserve.config import Settings
from sdserve.engine.process_env import prepare_engine_env
from sdserve.testing import free_port

prepare_engine_env()  # before anything imports torch (see process_env)

# s3_server / s3_env: a real S3-compatible server; redis_url / redis_prefix /
# private_redis: the machine's redis-server or private ones (tests/redis_server.py).
pytest_plugins = ["tests.s3server", "tests.redis_server"]

__all__ = ["free_port"]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The random-weight tiny model, created once per test session (needs torch)."""
    from sdserve.engine.demo import create_demo_model

    path = tmp_path_factory.mktemp("models") / "tiny"
    create_demo_model(path)
    return path


@pytest.fixture(scope="session")
def edit_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random-weight editing models, created once per session (a few MB each,
    ~4 s in all): ``inpaint`` (9-channel UNet), ``x4`` (SD x4 upscaler), ``x2`` (latent
    upscaler), ``xl`` (SDXL). Tests load them by path through the real catalog and
    loader."""
    from sdserve.engine.demo_edit import (
        create_demo_inpaint_model,
        create_demo_latent_upscaler,
        create_demo_sdxl_model,
        create_demo_upscaler,
    )

    root = tmp_path_factory.mktemp("edit-models")
    create_demo_inpaint_model(root / "inpaint")
    create_demo_upscaler(root / "x4")
    create_demo_latent_upscaler(root / "x2")
    create_demo_sdxl_model(root / "xl")
    return root


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "queue_backend": "memory",
            "batch_window_ms": 0,
            "poll_interval_ms": 50,
            "webhook_secret": "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            # One open tenant, as before keys: tests of keys and tenants turn it on.
            "auth": "off",
            # Given, as a Redis deployment must (the embedded one generates it: tested
            # in tests/unit/test_security.py).
            "secret_key": "test-secret-key-" + "0" * 32,
        }
        values.update(overrides)
        return Settings(**values)

    return build
