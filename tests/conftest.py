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

pytest_plugins = ["tests.s3server"]  # s3_server / s3_env: a real S3-compatible server

__all__ = ["free_port"]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The random-weight tiny model, created once per test session (needs torch)."""
    from sdserve.engine.demo import create_demo_model

    path = tmp_path_factory.mktemp("models") / "tiny"
    create_demo_model(path)
    return path


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
