"""The model cache on a real CUDA device (skipped without one): the RAM tier and
eviction give GPU memory back; a model back from RAM draws the same image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sdserve.config import Settings  # noqa: E402
from sdserve.engine.base import BatchItem, BatchRequest  # noqa: E402
from sdserve.engine.catalog import Catalog, describe  # noqa: E402
from sdserve.engine.demo import create_demo_model  # noqa: E402
from sdserve.engine.pipelines import DiffusersEngine  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
CYCLES = 7


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("gpu-three")
    return [create_demo_model(root / f"m{i}", seed=i) for i in range(3)]


def _engine(paths: list[Path], ram_tier: int) -> DiffusersEngine:
    infos = [describe(p.name, str(p)) for p in paths]
    settings = Settings(device="cuda", model_ram_tier_bytes=ram_tier)
    return DiffusersEngine(settings, Catalog(infos[0], infos[1:]), max_loaded=1)


def _image(engine: DiffusersEngine, model: str) -> np.ndarray:
    req = BatchRequest(model, "txt2img", 64, 64, 2, 7.5, "euler", [BatchItem("j", "x", "", [1])])
    return np.asarray(engine.generate(req, lambda s, t: set()).items["j"].images[0])


@pytest.mark.parametrize("ram_tier", [0, 1 << 30], ids=["no-ram-tier", "ram-tier"])
def test_switching_keeps_gpu_memory_flat(three: list[Path], ram_tier: int) -> None:
    engine = _engine(three, ram_tier)
    allocated: list[int] = []
    for _ in range(CYCLES):
        for p in three:
            engine.get_model(p.name)
        allocated.append(torch.cuda.memory_allocated())
    # One model on the GPU at a time, whichever tier the others are in.
    assert [r.name for r in engine.residents() if r.tier == "device"] == [three[-1].name]
    assert abs(allocated[-1] - allocated[0]) <= 0.05 * allocated[0], allocated
    if ram_tier:
        assert engine.metrics.value("sdserve_model_requests_total", {"source": "host"}) > 0


def test_a_model_back_from_the_ram_tier_draws_the_same(three: list[Path]) -> None:
    engine = _engine(three, 1 << 30)
    first = _image(engine, three[0].name)
    engine.get_model(three[1].name)  # m0 -> RAM tier
    assert {r.name: r.tier for r in engine.residents()}[three[0].name] == "host"
    assert np.array_equal(_image(engine, three[0].name), first)
    assert engine.metrics.value("sdserve_model_requests_total", {"source": "host"}) == 1
