from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageFilter

from sdserve.domain.errors import InvalidRequest
from sdserve.engine.base import BatchItem, BatchRequest, ModelInfo
from sdserve.engine.fake import FakeEngine


def _req(items: list[BatchItem], steps: int = 4) -> BatchRequest:
    return BatchRequest("fake", "txt2img", 64, 48, steps, 7.5, "euler_a", items)


def test_fake_engine_is_deterministic_and_batch_invariant() -> None:
    eng = FakeEngine()
    eng.load()
    a = BatchItem("a", "a cat", "", [5, 6])
    b = BatchItem("b", "a dog", "", [9])
    full = eng.generate(_req([a, b]), lambda s, t: set())
    alone = eng.generate(_req([BatchItem("a", "a cat", "", [6])]), lambda s, t: set())
    assert full.items["a"].images[0].size == (64, 48)
    assert np.array_equal(
        np.asarray(full.items["a"].images[1]), np.asarray(alone.items["a"].images[0])
    )
    assert not np.array_equal(
        np.asarray(full.items["a"].images[0]), np.asarray(full.items["a"].images[1])
    )
    assert eng.models()[0].loaded


def test_fake_engine_steps_and_cancellation() -> None:
    eng = FakeEngine()
    steps: list[tuple[int, int]] = []

    def cancel_b(step: int, total: int) -> set[str]:
        steps.append((step, total))
        return {"b"} if step == 2 else set()

    out = eng.generate(_req([BatchItem("a", "x", "", [1]), BatchItem("b", "y", "", [2])]), cancel_b)
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert set(out.items) == {"a"} and out.canceled == {"b"}

    seen: list[int] = []

    def cancel_all(step: int, total: int) -> set[str]:
        seen.append(step)
        return {"a"}

    out = eng.generate(_req([BatchItem("a", "x", "", [1])]), cancel_all)
    assert out.items == {} and out.canceled == {"a"} and seen == [1]


def test_fake_engine_truncation_warning() -> None:
    out = FakeEngine().generate(_req([BatchItem("a", "word " * 100, "", [1])]), lambda s, t: set())
    assert out.items["a"].warnings == ["prompt truncated to 77 tokens"]


def _noise(seed: int, w: int, h: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _edit(task: str, items: list[BatchItem], **kw: Any) -> BatchRequest:
    return BatchRequest("fake", task, 32, 32, 10, 7.5, "euler_a", items, **kw)


def test_fake_img2img_depends_on_input_seed_and_strength() -> None:
    eng = FakeEngine()
    a, b = _noise(1, 32, 32), _noise(2, 32, 32)

    def one(image: Image.Image, seed: int, strength: float) -> np.ndarray:
        req = _edit("img2img", [BatchItem("j", "x", "", [seed], image)], strength=strength)
        return np.asarray(eng.generate(req, lambda s, t: set()).items["j"].images[0])

    assert np.array_equal(one(a, 1, 0.5), one(a, 1, 0.5))
    assert not np.array_equal(one(a, 1, 0.5), one(b, 1, 0.5))
    assert not np.array_equal(one(a, 1, 0.5), one(a, 2, 0.5))
    # Lower strength stays closer to the input.
    base = np.asarray(a).astype(int)
    assert np.abs(one(a, 1, 0.2) - base).mean() < np.abs(one(a, 1, 0.9) - base).mean()
    steps: list[tuple[int, int]] = []

    def record(step: int, total: int) -> set[str]:
        steps.append((step, total))
        return set()

    eng.generate(_edit("img2img", [BatchItem("j", "x", "", [1], a)], strength=0.35), record)
    assert steps == [(1, 3), (2, 3), (3, 3)]  # steps_run(10, 0.35)


def test_fake_inpaint_respects_mask_and_keep_unmasked() -> None:
    eng = FakeEngine()
    image = _noise(3, 32, 32)
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (8, 8, 24, 24))
    item = BatchItem("j", "x", "", [4], image, mask)
    kept = eng.generate(_edit("inpaint", [item], mask_blur=2), lambda s, t: set())
    raw = eng.generate(
        _edit("inpaint", [item], mask_blur=2, keep_unmasked=False), lambda s, t: set()
    )
    soft = np.asarray(mask.filter(ImageFilter.GaussianBlur(2)))
    out, original = np.asarray(kept.items["j"].images[0]), np.asarray(image)
    assert np.array_equal(out[soft == 0], original[soft == 0])
    assert not np.array_equal(out[soft == 255], original[soft == 255])
    assert not np.array_equal(np.asarray(raw.items["j"].images[0])[soft == 0], original[soft == 0])


def test_fake_upscale_resizes_and_refuses_what_a_model_cannot_do() -> None:
    eng = FakeEngine()
    req = BatchRequest(
        "fake", "upscale", 64, 48, 5, 7.5, "ddim", [BatchItem("j", "x", "", [1], _noise(5, 16, 12))]
    )
    assert eng.generate(req, lambda s, t: set()).items["j"].images[0].size == (64, 48)
    with pytest.raises(InvalidRequest) as err:
        eng.generate(replace(req, items=[BatchItem("j", "x", "", [1])]), lambda s, t: set())
    assert err.value.problems[0].field == "image"
    strict = FakeEngine(
        [ModelInfo("m", "m", "sd1", 64, 64), ModelInfo("u", "u", "upscaler", 64, 64)]
    )
    with pytest.raises(InvalidRequest) as err:
        strict.generate(replace(req, model="m"), lambda s, t: set())
    assert err.value.problems[0].field == "task"
    assert strict.generate(replace(req, model="u"), lambda s, t: set()).items["j"].images
