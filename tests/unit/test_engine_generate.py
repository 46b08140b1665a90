"""DiffusersEngine on the tiny demo model: real diffusers code paths on CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sdserve.config import Settings
from sdserve.domain.errors import GenerationFailed, OutOfMemory
from sdserve.engine.base import BatchItem, BatchOutput, BatchRequest
from sdserve.engine.catalog import Catalog, describe
from sdserve.engine.pipelines import DiffusersEngine

STEPS = 4
A = BatchItem("a", "a photo of a cat", "", [5, 6])
B = BatchItem("b", "a red house at night", "blurry", [9])


def _none(step: int, total: int) -> set[str]:
    return set()


@pytest.fixture(scope="module")
def engine(demo_model_dir: Path) -> DiffusersEngine:
    eng = DiffusersEngine(Settings(device="cpu"), Catalog(describe("demo", str(demo_model_dir))))
    eng.load()
    return eng


def _req(items: list[BatchItem], scheduler: str = "euler_a", size: int = 64) -> BatchRequest:
    return BatchRequest("demo", "txt2img", size, size, STEPS, 7.5, scheduler, items)


def _arrays(out: BatchOutput, job: str) -> list[np.ndarray]:
    return [np.asarray(im) for im in out.items[job].images]


def test_ready_models_and_sizes(engine: DiffusersEngine) -> None:
    assert engine.ready()
    assert [(m.name, m.loaded) for m in engine.models()] == [("demo", True)]
    out = engine.generate(_req([BatchItem("j", "a cat", "", [1])], size=96), _none)
    (image,) = out.items["j"].images
    assert image.size == (96, 96) and image.mode == "RGB"
    assert out.canceled == set() and out.items["j"].warnings == []


@pytest.mark.parametrize("scheduler", ["euler_a", "dpmpp_2m", "ddim"])
def test_batched_equals_single_pixel_for_pixel(engine: DiffusersEngine, scheduler: str) -> None:
    full = engine.generate(_req([A, B], scheduler), _none)
    for item in (A, B):
        for k, seed in enumerate(item.seeds):
            one = BatchItem(item.job_id, item.prompt, item.negative_prompt, [seed])
            alone = engine.generate(_req([one], scheduler), _none)
            assert np.array_equal(_arrays(full, item.job_id)[k], _arrays(alone, item.job_id)[0])
    a0, a1 = _arrays(full, "a")
    assert not np.array_equal(a0, a1)  # different seeds, different images


def test_switching_scheduler_keeps_the_weights(engine: DiffusersEngine) -> None:
    unet = engine.get_model("demo").pipe.unet
    for name in ("ddim", "lcm", "heun"):
        engine.generate(_req([BatchItem("j", "x", "", [1])], name), _none)
        pipe = engine.get_model("demo").pipe
        assert pipe.unet is unet
        assert type(pipe.scheduler).__name__ != "PNDMScheduler"


def test_cancel_all_stops_early_and_returns_nothing(engine: DiffusersEngine) -> None:
    seen: list[tuple[int, int]] = []

    def cancel(step: int, total: int) -> set[str]:
        seen.append((step, total))
        return {"a", "b"} if step == 1 else set()

    out = engine.generate(_req([A, B]), cancel)
    assert out.items == {} and out.canceled == {"a", "b"}
    assert seen == [(1, STEPS)]


def test_cancel_one_keeps_the_other_identical(engine: DiffusersEngine) -> None:
    steps: list[int] = []

    def cancel_a(step: int, total: int) -> set[str]:
        steps.append(step)
        return {"a", "not-in-batch"} if step == 2 else set()

    out = engine.generate(_req([A, B]), cancel_a)
    assert set(out.items) == {"b"} and out.canceled == {"a"}
    assert steps == list(range(1, STEPS + 1))
    ref = engine.generate(_req([A, B]), _none)
    assert np.array_equal(_arrays(out, "b")[0], _arrays(ref, "b")[0])


def test_truncation_warning(engine: DiffusersEngine) -> None:
    long_item = BatchItem("long", " ".join(["cat"] * 100), "", [1])
    out = engine.generate(_req([long_item, BatchItem("short", "a cat", "", [1])]), _none)
    assert out.items["long"].warnings == ["prompt truncated to 77 tokens (was 102)"]
    assert out.items["short"].warnings == []


def test_errors_are_mapped(engine: DiffusersEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = engine.get_model("demo").pipe

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 1 TB")

    monkeypatch.setattr(type(pipe), "__call__", boom)
    with pytest.raises(OutOfMemory):
        engine.generate(_req([BatchItem("j", "x", "", [1])]), _none)
    monkeypatch.setattr(type(pipe), "__call__", lambda *a, **k: 1 / 0)
    with pytest.raises(GenerationFailed, match="ZeroDivisionError"):
        engine.generate(_req([BatchItem("j", "x", "", [1])]), _none)


def test_lru_cache_loads_on_demand(demo_model_dir: Path) -> None:
    catalog = Catalog(describe("one", str(demo_model_dir)), [describe("two", str(demo_model_dir))])
    eng = DiffusersEngine(Settings(device="cpu"), catalog, max_loaded=1)
    eng.load()
    eng.generate(BatchRequest("two", "txt2img", 64, 64, 1, 1.0, "euler", [A]), _none)
    assert {m.name: m.loaded for m in eng.models()} == {"one": False, "two": True}


class _WithPreviews:
    """A step callback carrying a preview sink (engine/previews.py)."""

    def __init__(self) -> None:
        self.previews = self
        self.every_s = 0.000001  # every step
        self.got: list[tuple[str, Any]] = []

    def __call__(self, *args: Any) -> Any:
        if len(args) == 2 and isinstance(args[0], str):  # the sink: (job_id, image)
            self.got.append(args)
            return None
        return set()  # the step callback: (step, total)


def test_previews_from_latents_change_no_output(engine: DiffusersEngine) -> None:
    plain = engine.generate(_req([A, B], size=96), _none)
    steps = _WithPreviews()
    shown = engine.generate(_req([A, B], size=96), steps)
    assert {job for job, _ in steps.got} == {"a", "b"}
    assert len(steps.got) == 2 * STEPS
    assert all(im.size == (96, 96) and im.mode == "RGB" for _, im in steps.got)
    for job in ("a", "b"):
        assert all(
            np.array_equal(x, y)
            for x, y in zip(_arrays(plain, job), _arrays(shown, job), strict=True)
        )
    # With an image checker configured the engine makes none, whatever it is handed.
    settings = engine.settings
    engine.settings = settings.model_copy(update={"image_checker": "model"})
    try:
        checked = _WithPreviews()
        engine.generate(_req([A], size=64), checked)
        assert checked.got == []
    finally:
        engine.settings = settings
