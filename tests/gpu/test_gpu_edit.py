"""Editing tasks on a real CUDA device (skipped without one): derived pipelines keep the
shared fp16 weights in place, and model CPU offload survives switching tasks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from PIL import Image  # noqa: E402

from sdserve.config import Settings  # noqa: E402
from sdserve.engine.base import BatchItem, BatchRequest  # noqa: E402
from sdserve.engine.catalog import Catalog, describe  # noqa: E402
from sdserve.engine.demo import create_demo_model  # noqa: E402
from sdserve.engine.pipelines import DiffusersEngine  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _none(step: int, total: int) -> set[str]:
    return set()


def _catalog(root: Path, edit_models_dir: Path) -> Catalog:
    demo = create_demo_model(root / "demo")
    return Catalog(describe("demo", str(demo)), [describe("x4", str(edit_models_dir / "x4"))])


def _requests() -> list[BatchRequest]:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    item = BatchItem("j", "a cat", "", [1, 2], image, mask)
    low = BatchItem("j", "a cat", "", [1, 2], image.resize((16, 16)))
    return [
        BatchRequest("demo", task, 64, 64, 4, 7.5, "euler_a", [item], strength=0.6)
        for task in ("txt2img", "img2img", "inpaint", "txt2img")
    ] + [BatchRequest("x4", "upscale", 64, 64, 4, 7.5, "ddim", [low])]


@pytest.mark.parametrize("offload", [False, True])
def test_every_task_runs_in_fp16_on_shared_weights(
    tmp_path: Path, edit_models_dir: Path, offload: bool
) -> None:
    eng = DiffusersEngine(
        Settings(device="cuda", cpu_offload=offload),
        _catalog(tmp_path, edit_models_dir),
        max_loaded=2,
    )
    eng.load()
    outputs = []
    for req in _requests():
        out = eng.generate(req, _none)
        images = out.items["j"].images
        assert [im.size for im in images] == [(64, 64), (64, 64)]
        outputs.append([np.asarray(im) for im in images])
    model = eng.get_model("demo")
    for pipe in (model.pipe, *model.derived.values()):
        assert pipe.unet is model.pipe.unet
        assert pipe.unet.dtype == torch.float16  # from_pipe did not re-cast shared weights
    # txt2img after img2img/inpaint is the txt2img of before (no state leaked).
    assert all(np.array_equal(a, b) for a, b in zip(outputs[0], outputs[3], strict=True))
