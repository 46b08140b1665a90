"""Eviction really frees memory: 20 cycles over 3 models (60 switches) on the real engine,
each a disk load that evicts the previous model; RSS stays flat."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from sdserve.config import Settings
from sdserve.engine.catalog import Catalog, describe
from sdserve.engine.memory import estimate_bytes, pipeline_bytes, rss_bytes
from sdserve.engine.pipelines import DiffusersEngine

CYCLES = 20  # x 3 models = 60 switches (~0.2 s each)


@pytest.fixture(scope="module")
def three_models(demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    from sdserve.engine.demo import create_demo_model

    root = tmp_path_factory.mktemp("three")  # the session's demo model (seed 0) and two more
    return [demo_model_dir, *(create_demo_model(root / f"m{i}", seed=i) for i in (1, 2))]


def test_switching_among_three_models_keeps_rss_flat(three_models: list[Path]) -> None:
    infos = [describe(p.name, str(p)) for p in three_models]
    size = estimate_bytes(str(three_models[0]), __import__("torch").float32)
    # A budget for one model and a half: each switch evicts (no RAM tier on CPU).
    settings = Settings(device="cpu", model_memory_budget_bytes=size * 3 // 2)
    engine = DiffusersEngine(settings, Catalog(infos[0], infos[1:]), max_loaded=3)
    after: list[int] = []
    gc.freeze()  # as a worker process does before loading (worker/process.py)
    try:
        for _ in range(CYCLES):
            for info in infos:
                model = engine.get_model(info.name)
                assert abs(pipeline_bytes(model.pipe) - size) < size // 100  # estimate ~ exact
                del model
            assert [r.name for r in engine.residents()] == [infos[-1].name]
            after.append(rss_bytes())
    finally:
        gc.unfreeze()
    loads = engine.metrics.value("sdserve_model_loads_total")
    assert loads == 3 * CYCLES  # every switch really loaded from disk
    leaked_if_kept = size * 3 * (CYCLES - 1)
    assert leaked_if_kept > 0.05 * after[0]  # a leak would show: the bound can fail
    assert abs(after[-1] - after[0]) <= 0.05 * after[0], [a // 2**20 for a in after]
