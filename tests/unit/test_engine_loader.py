from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from unittest import mock

import pytest

from sdserve.config import Settings
from sdserve.domain.errors import ModelLoadError, UnsafeWeights
from sdserve.engine.base import ModelInfo
from sdserve.engine.catalog import describe
from sdserve.engine.demo import create_demo_model, ensure_demo_model
from sdserve.engine.loader import load_pipeline


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(folder.rglob("*"))
        if f.is_file()
    }


def test_demo_model_is_small_deterministic_and_safetensors(
    demo_model_dir: Path, tmp_path: Path
) -> None:
    again = create_demo_model(tmp_path / "again")
    first, second = _digests(demo_model_dir), _digests(again)
    weights = [k for k in first if k.endswith(".safetensors")]
    assert len(weights) == 3
    assert all(first[k] == second[k] for k in weights)
    assert not any(k.endswith((".bin", ".pt", ".ckpt")) for k in first)
    assert sum(f.stat().st_size for f in demo_model_dir.rglob("*") if f.is_file()) < 8e6
    info = describe("demo", str(demo_model_dir))
    assert (info.family, info.default_width, info.default_height) == ("sd1", 64, 64)


def test_ensure_demo_model_keeps_an_existing_one(demo_model_dir: Path) -> None:
    with mock.patch("sdserve.engine.demo.create_demo_model") as create:
        assert ensure_demo_model(demo_model_dir) == demo_model_dir
    create.assert_not_called()


def test_demo_model_loads_through_load_pipeline(demo_model_dir: Path) -> None:
    pipe = load_pipeline(describe("demo", str(demo_model_dir)), Settings())
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert pipe.safety_checker is None
    assert pipe.tokenizer.model_max_length == 77


@pytest.mark.parametrize("suffix", [".ckpt", ".bin", ".pt"])
def test_refuses_pickle_files_without_opening_them(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"not really a pickle")
    info = ModelInfo("m", str(path), "sd1", 512, 512)
    with mock.patch("builtins.open") as opened, pytest.raises(UnsafeWeights):
        load_pipeline(info, Settings())
    opened.assert_not_called()


def test_refuses_folder_with_only_bin_weights(demo_model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "binonly"
    shutil.copytree(demo_model_dir, folder)
    unet = folder / "unet"
    (unet / "diffusion_pytorch_model.safetensors").rename(unet / "diffusion_pytorch_model.bin")
    with pytest.raises(UnsafeWeights, match="'unet' has only pickle-based weights"):
        load_pipeline(describe("binonly", str(folder)), Settings())


def test_single_file_without_local_config_says_what_to_do(tmp_path: Path) -> None:
    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    info = ModelInfo("model", str(ckpt), "sd1", 512, 512)
    with pytest.raises(ModelLoadError, match=r"model\.config"):
        load_pipeline(info, Settings(data_dir=tmp_path))


def test_hub_id_refused_when_downloads_are_off() -> None:
    info = ModelInfo("x", "someone/some-model", "unknown", 512, 512)
    with pytest.raises(ModelLoadError, match="ALLOW_HUB_DOWNLOADS"):
        load_pipeline(info, Settings())
