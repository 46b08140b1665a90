"""LoRA adapters on the demo model: both key layouts, exact removal, no leaks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sdserve.config import Settings
from sdserve.domain.errors import InvalidRequest
from sdserve.engine.base import BatchItem, BatchRequest
from sdserve.engine.catalog import Catalog, describe
from sdserve.engine.demo_lora import make_lora
from sdserve.engine.memory import release_memory, rss_bytes
from sdserve.engine.pipelines import DiffusersEngine

ALTERNATIONS = 50


@pytest.fixture(scope="module")
def loras_dir(demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("loras")
    make_lora(demo_model_dir, root / "style_a.safetensors", "peft", seed=7)
    make_lora(demo_model_dir, root / "style-a.kohya.safetensors", "kohya", seed=7)
    make_lora(demo_model_dir, root / "other.safetensors", "peft", seed=8, text_encoder=False)
    return root


def _engine(model: Path, loras: Path, **kw: object) -> DiffusersEngine:
    settings = Settings(device="cpu", loras_dir=loras, **kw)  # type: ignore[arg-type]
    return DiffusersEngine(settings, Catalog(describe("demo", str(model))))


def _image(engine: DiffusersEngine, loras: tuple[tuple[str, float], ...] = ()) -> np.ndarray:
    item = BatchItem("j", "a red house", "", [3])
    req = BatchRequest("demo", "txt2img", 64, 64, 2, 7.5, "euler", [item], loras=loras)
    return np.asarray(engine.generate(req, lambda s, t: set()).items["j"].images[0])


def test_both_key_layouts_draw_the_same_and_scale_matters(
    demo_model_dir: Path, loras_dir: Path
) -> None:
    engine = _engine(demo_model_dir, loras_dir)
    base = _image(engine)
    peft = _image(engine, (("style_a", 1.0),))
    kohya = _image(engine, (("style-a.kohya", 1.0),))
    half = _image(engine, (("style_a", 0.5),))
    both = _image(engine, (("style_a", 1.0), ("other", 1.0)))
    assert not np.array_equal(peft, base)
    assert np.array_equal(peft, kohya)  # the same update, read from either layout
    assert not np.array_equal(half, peft) and not np.array_equal(half, base)
    assert not np.array_equal(both, peft)
    assert np.array_equal(_image(engine), base)
    assert engine.metrics.value("sdserve_lora_loads_total") == 3


def test_fifty_alternations_leak_nothing_and_removal_is_exact(
    demo_model_dir: Path, loras_dir: Path
) -> None:
    # One attached adapter at most: every switch between the two detaches one.
    engine = _engine(demo_model_dir, loras_dir, max_loaded_loras=1)
    before = _image(engine)  # before any adapter was ever attached
    model = engine.get_model("demo")
    params = sum(p.numel() for p in model.pipe.unet.parameters())
    rss: list[int] = []
    for i in range(ALTERNATIONS):
        wanted = ((("style_a", 1.0),), (), (("other", 0.8),), ())[i % 4]
        model.adapters.apply(model.pipe, wanted, engine._lora_path, engine.metrics)
        if i % 10 == 9:
            release_memory()
            rss.append(rss_bytes())
    assert engine.metrics.value("sdserve_lora_evictions_total") >= ALTERNATIONS // 2 - 1
    model.adapters.apply(model.pipe, (), engine._lora_path, engine.metrics)
    assert np.array_equal(_image(engine), before)
    # Detached adapters leave no tensors behind (one stays attached, disabled).
    extra = sum(p.numel() for p in model.pipe.unet.parameters()) - params
    model.adapters._detach(model.pipe, next(iter(model.adapters.attached)), engine.metrics)
    assert extra > 0 and sum(p.numel() for p in model.pipe.unet.parameters()) == params
    assert np.array_equal(_image(engine), before)
    assert abs(rss[-1] - rss[0]) <= 0.05 * rss[0], [r // 2**20 for r in rss]


def test_an_unknown_adapter_is_refused(demo_model_dir: Path, loras_dir: Path) -> None:
    engine = _engine(demo_model_dir, loras_dir)
    with pytest.raises(InvalidRequest) as err:
        _image(engine, (("nope", 1.0),))
    assert "nope" in str(err.value)


def test_the_batch_key_holds_the_adapter_set() -> None:
    from sdserve.domain.requests import LoraRef
    from sdserve.testing import job_spec

    plain = job_spec()
    a = job_spec(loras=(LoraRef(name="a"),))
    a_half = job_spec(loras=(LoraRef(name="a", scale=0.5),))
    assert len({plain.batch_key, a.batch_key, a_half.batch_key}) == 3
    assert job_spec(loras=(LoraRef(name="a"),)).batch_key == a.batch_key


def test_a_replaced_adapter_file_is_read_again(demo_model_dir: Path, tmp_path: Path) -> None:
    make_lora(demo_model_dir, tmp_path / "style.safetensors", "peft", seed=1)
    engine = _engine(demo_model_dir, tmp_path)
    first = _image(engine, (("style", 1.0),))
    make_lora(demo_model_dir, tmp_path / "style.safetensors", "peft", seed=2)
    second = _image(engine, (("style", 1.0),))
    assert not np.array_equal(first, second)
    assert engine.metrics.value("sdserve_lora_loads_total") == 2
