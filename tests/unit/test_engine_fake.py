from __future__ import annotations

import numpy as np

from sdserve.engine.base import BatchItem, BatchRequest
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
