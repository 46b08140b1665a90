"""The checkpoint's own safety checker: real loading from a model folder, verdicts that
agree with diffusers' own forward(), images left untouched, safetensors only."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdserve.config import Settings
from sdserve.domain.errors import ModelLoadError, UnsafeWeights
from sdserve.engine.safety_checker import (
    ModelSafetyChecker,
    has_safety_checker,
    write_tiny_safety_checker,
)
from sdserve.safety.decisions import ImageChecker
from sdserve.safety.factory import build_image_checker

RED = Image.new("RGB", (64, 64), (220, 20, 20))
BLUE = Image.new("RGB", (64, 64), (20, 20, 220))
GRADIENT = Image.fromarray(
    np.tile(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], (64, 1, 3))
)
NOISE = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def model_with_checker(tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path) -> Path:
    """A copy of the tiny model with a checker that flags images like RED."""
    folder = tmp_path_factory.mktemp("checked") / "tiny"
    shutil.copytree(demo_model_dir, folder)
    write_tiny_safety_checker(folder, flag_like=[RED])
    return folder


def test_writer_saves_safetensors_and_lists_the_parts(model_with_checker: Path) -> None:
    assert has_safety_checker(model_with_checker)
    files = sorted(p.name for p in (model_with_checker / "safety_checker").iterdir())
    assert files == ["config.json", "model.safetensors"]
    index = (model_with_checker / "model_index.json").read_text()
    assert "StableDiffusionSafetyChecker" in index and "CLIPImageProcessor" in index


def test_flags_only_images_like_the_marker(model_with_checker: Path) -> None:
    checker = ModelSafetyChecker.load(model_with_checker, "cpu")
    assert isinstance(checker, ImageChecker)
    verdicts = checker.check([RED, BLUE, GRADIENT, NOISE])
    assert [v.flagged for v in verdicts] == [True, False, False, False]
    assert verdicts[0].labels == ("adult",) and verdicts[0].source == "model"
    assert "over threshold" in verdicts[0].reason
    assert checker.check([]) == []


def test_verdicts_agree_with_diffusers_forward(model_with_checker: Path) -> None:
    checker = ModelSafetyChecker.load(model_with_checker, "cpu")
    images = [RED, BLUE, GRADIENT, NOISE, RED.resize((96, 96))]
    ours = [v.flagged for v in checker.check(images)]
    dummy = np.ones((len(images), 4, 4, 3))  # diffusers blacks out these, not ours
    _, theirs = checker.model(checker.embed(images), dummy)
    assert ours == [bool(x) for x in theirs]
    assert dummy[0].sum() == 0 and dummy[1].sum() > 0  # forward() did black out image 0


def test_images_are_left_alone(model_with_checker: Path) -> None:
    before = RED.tobytes()
    ModelSafetyChecker.load(model_with_checker, "cpu").check([RED])
    assert RED.tobytes() == before


def test_default_tiny_checker_flags_nothing(tmp_path: Path) -> None:
    write_tiny_safety_checker(tmp_path)
    verdicts = ModelSafetyChecker.load(tmp_path, "cpu").check([RED, NOISE])
    assert not any(v.flagged for v in verdicts)


def test_pipeline_still_loads_a_folder_that_lists_a_checker(model_with_checker: Path) -> None:
    from sdserve.engine.base import ModelInfo
    from sdserve.engine.loader import load_pipeline

    info = ModelInfo("tiny", str(model_with_checker), "sd1", 64, 64)
    pipe = load_pipeline(info, Settings(device="cpu"))
    assert pipe.safety_checker is None  # generation never runs it; we check separately


def test_factory_builds_the_model_checker(model_with_checker: Path, tmp_path: Path) -> None:
    settings = Settings(image_checker="model", device="cpu")
    checker = build_image_checker(settings, model_with_checker)
    assert isinstance(checker, ModelSafetyChecker)
    with pytest.raises(ModelLoadError, match="has no safety_checker/"):
        build_image_checker(settings, tmp_path)
    with pytest.raises(ModelLoadError, match="needs the model's folder"):
        build_image_checker(settings, None)


def test_pickle_only_checker_is_refused(model_with_checker: Path, tmp_path: Path) -> None:
    folder = tmp_path / "m"
    shutil.copytree(model_with_checker, folder)
    weights = folder / "safety_checker" / "model.safetensors"
    weights.rename(weights.with_name("pytorch_model.bin"))
    with pytest.raises(UnsafeWeights, match=r"pytorch_model\.bin"):
        ModelSafetyChecker.load(folder, "cpu")
