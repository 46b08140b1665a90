from __future__ import annotations

import json
from pathlib import Path

import pytest

from sdserve.domain.limits import SCHEDULER_NAMES
from sdserve.engine.schedulers import SCHEDULERS, make_scheduler


def test_table_covers_every_scheduler_name() -> None:
    assert set(SCHEDULERS) == set(SCHEDULER_NAMES)


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_each_scheduler_builds_from_the_demo_config(name: str, demo_model_dir: Path) -> None:
    config = json.loads((demo_model_dir / "scheduler" / "scheduler_config.json").read_text())
    sched = make_scheduler(name, config)
    assert type(sched).__name__ == SCHEDULERS[name].class_name
    sched.set_timesteps(4)
    assert len(sched.timesteps) >= 4


def test_karras_override_does_not_leak(demo_model_dir: Path) -> None:
    config = json.loads((demo_model_dir / "scheduler" / "scheduler_config.json").read_text())
    assert make_scheduler("dpmpp_2m_karras", config).config.use_karras_sigmas is True
    assert make_scheduler("dpmpp_2m", config).config.use_karras_sigmas is False
    assert "use_karras_sigmas" not in config


def test_native_scheduler_names_map_back_to_the_same_classes() -> None:
    from sdserve.engine.catalog import NATIVE_SCHEDULERS

    for class_name, name in NATIVE_SCHEDULERS.items():
        assert SCHEDULERS[name].class_name == class_name


def test_models_default_to_their_own_scheduler(demo_model_dir: Path) -> None:
    from sdserve.engine.catalog import describe
    from sdserve.wiring import PACKAGED_DEMO

    assert describe("tiny", str(demo_model_dir)).default_scheduler == "pndm"
    assert describe("demo", str(PACKAGED_DEMO)).default_scheduler == "ddim"
