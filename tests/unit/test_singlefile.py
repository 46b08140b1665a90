"""Single-file checkpoints: the demo model converted to one original-layout
.safetensors loads (our loader, safetensors only) and draws bit-identical images to
its folder; diffusers' own single-file reader reads the file back to the same
tensors, which pins the layout to the public one."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sdserve.engine.base import BatchItem, BatchRequest
from sdserve.engine.catalog import Catalog, describe
from sdserve.engine.singlefile import TEXT_PREFIX, UNET_PREFIX, VAE_PREFIX
from sdserve.wiring import PACKAGED_DEMO, packaged_demo_available

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from convert_to_single_file import convert


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if not packaged_demo_available():
        pytest.skip("the packaged demo model is not built")
    out = tmp_path_factory.mktemp("single") / "demo-single.safetensors"
    convert(PACKAGED_DEMO, out)
    return PACKAGED_DEMO, out


def test_file_has_the_original_layout_and_diffusers_reads_it(
    converted: tuple[Path, Path],
) -> None:
    import diffusers
    from safetensors.torch import load_file

    folder, path = converted
    keys = set(load_file(str(path)))
    for prefix in (UNET_PREFIX, VAE_PREFIX, TEXT_PREFIX + "text_model."):
        assert any(k.startswith(prefix) for k in keys)
    assert UNET_PREFIX + "input_blocks.0.0.weight" in keys
    assert VAE_PREFIX + "decoder.up.0.block.0.conv1.weight" in keys
    kw = {"safety_checker": None, "requires_safety_checker": False}
    theirs = diffusers.StableDiffusionPipeline.from_single_file(
        str(path), config=str(path.with_name(path.stem + ".config")), local_files_only=True, **kw
    )
    ref = diffusers.StableDiffusionPipeline.from_pretrained(str(folder), **kw)
    for name in ("unet", "vae", "text_encoder"):
        a, b = getattr(theirs, name).state_dict(), getattr(ref, name).state_dict()
        assert set(a) == set(b)
        assert all(torch.equal(a[k], b[k]) for k in b), name


def test_single_file_draws_bit_identical_images_to_the_folder(
    converted: tuple[Path, Path], make_settings, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    import diffusers

    from sdserve.engine.pipelines import DiffusersEngine

    def not_diffusers(*a: object, **k: object) -> None:
        raise AssertionError("loaded by diffusers, not engine/singlefile.py")

    monkeypatch.setattr(diffusers.StableDiffusionPipeline, "from_single_file", not_diffusers)

    folder, path = converted
    file_info = describe("single", str(path))
    folder_info = describe("folder", str(folder))
    # Native size and scheduler come from the config folder beside the file.
    assert file_info.family == "sd1" and file_info.config is not None
    assert (file_info.default_width, file_info.default_scheduler) == (
        folder_info.default_width,
        folder_info.default_scheduler,
    )
    catalog = Catalog(describe("folder", str(folder)), [file_info])
    engine = DiffusersEngine(make_settings(), catalog, max_loaded=2)
    images = {}
    for model in ("folder", "single"):
        req = BatchRequest(
            model=model,
            task="txt2img",
            width=64,
            height=64,
            num_inference_steps=3,
            guidance_scale=7.5,
            scheduler="euler_a",
            items=[BatchItem("j", "a red circle", "", [7, 8])],
        )
        out = engine.generate(req, lambda step, total: set())
        images[model] = [np.asarray(im) for im in out.items["j"].images]
    for a, b in zip(images["folder"], images["single"], strict=True):
        assert np.array_equal(a, b)
    assert not np.array_equal(images["folder"][0], images["folder"][1])


def test_a_truncated_file_is_refused_with_the_missing_tensor(
    converted: tuple[Path, Path], tmp_path: Path
) -> None:
    from safetensors.torch import load_file, save_file

    from sdserve.engine.singlefile import load_single_file

    _, path = converted
    tensors = load_file(str(path))
    tensors.pop(UNET_PREFIX + "out.2.weight")
    broken = tmp_path / "broken.safetensors"
    save_file(tensors, str(broken))
    with pytest.raises(ValueError, match=re.escape("out.2.weight")):
        load_single_file(broken, path.with_name(path.stem + ".config"), torch.float32)
