"""GPU-path switches that also run on CPU: channels-last and fused QKV projections
change only float rounding, and keep batched images identical to single ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sdserve.config import Settings
from sdserve.engine.base import BatchItem, BatchRequest
from sdserve.engine.pipelines import DiffusersEngine
from sdserve.wiring import build_catalog


def _images(settings: Settings, seeds_per_job: list[list[int]]) -> list[np.ndarray]:
    engine = DiffusersEngine(settings, build_catalog(settings), batch_invariant=True)
    engine.load()
    name = engine.models()[0].name
    items = [BatchItem(f"j{i}", "a red circle", "", seeds) for i, seeds in enumerate(seeds_per_job)]
    req = BatchRequest(name, "txt2img", 32, 32, 3, 7.5, "euler", items)
    out = engine.generate(req, lambda step, total: set())
    return [np.asarray(im, dtype=np.int16) for it in items for im in out.items[it.job_id].images]


@pytest.mark.parametrize("option", ["channels_last", "fuse_qkv"])
def test_option_changes_rounding_only_and_stays_batch_exact(
    tiny_model_dir: Path, tmp_path: Path, option: str
) -> None:
    base = Settings(model=str(tiny_model_dir), data_dir=tmp_path / "a")
    tuned = Settings(model=str(tiny_model_dir), data_dir=tmp_path / "b", **{option: True})
    plain = _images(base, [[1]])[0]
    alone = [_images(tuned, [[s]])[0] for s in (1, 2, 3)]
    batched = _images(tuned, [[1, 2], [3]])
    assert np.abs(alone[0] - plain).max() <= 2  # same image up to rounding
    for single, in_batch in zip(alone, batched, strict=True):
        assert np.array_equal(single, in_batch)
