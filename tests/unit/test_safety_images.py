"""Torch-free image checkers, the NudeNet adapter, and the safety metrics."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image
from prometheus_client import CollectorRegistry

from sdserve.config import Settings
from sdserve.safety.decisions import ImageChecker, ImageVerdict, PolicyDecision
from sdserve.safety.factory import build_image_checker
from sdserve.safety.images import CheckerFailed, ColourRangeChecker, FailingChecker
from sdserve.safety.metrics import SafetyMetrics

RED = Image.new("RGB", (32, 32), (230, 20, 20))
BLUE = Image.new("RGB", (32, 32), (20, 20, 230))


def test_colour_range_checker_flags_only_inside_the_box() -> None:
    checker = ColourRangeChecker(low=(180, 0, 0), high=(255, 80, 80))
    assert isinstance(checker, ImageChecker)
    red, blue = checker.check([RED, BLUE])
    assert red.flagged and red.labels == ("adult",) and red.categories == {"adult": 1.0}
    assert "inside" in red.reason and red.source == "colour-range"
    assert not blue.flagged and blue.labels == () and "outside" in blue.reason
    assert checker.check([]) == []
    # palette and alpha images are judged by their RGB pixels
    assert checker.check([RED.convert("P"), RED.convert("RGBA")])[0].flagged


def test_failing_checker_raises() -> None:
    with pytest.raises(CheckerFailed, match="boom"):
        FailingChecker("boom").check([RED])


def test_verdicts_never_touch_the_images() -> None:
    before = RED.tobytes()
    ColourRangeChecker(low=(0, 0, 0), high=(255, 255, 255)).check([RED])
    assert RED.tobytes() == before


def _samples(registry: CollectorRegistry) -> dict[tuple[str, str, str], float]:
    out = {}
    for metric in registry.collect():
        for s in metric.samples:
            if s.name == "sdserve_safety_decisions_total":
                out[(s.labels["stage"], s.labels["category"], s.labels["outcome"])] = s.value
    return out


def test_metrics_count_decisions_by_stage_category_outcome() -> None:
    registry = CollectorRegistry()
    metrics = SafetyMetrics(registry)
    metrics.prompt(PolicyDecision(True, 0.9, {"violence": 0.1}, "ok", "builtin"))
    metrics.prompt(
        PolicyDecision(False, 0.9, {"violence": 0.9, "hate": 0.8, "adult": 0.1}, "no", "builtin")
    )
    metrics.prompt(PolicyDecision(False, 0.0, {}, "down", "external", error="timeout"))
    metrics.images(
        [
            ImageVerdict(False),
            ImageVerdict(True, {"adult": 0.9}, labels=("adult",)),
            ImageVerdict(True),
        ]
    )
    metrics.image_error()
    assert _samples(registry) == {
        ("prompt", "none", "approved"): 1.0,
        ("prompt", "violence", "refused"): 1.0,
        ("prompt", "hate", "refused"): 1.0,
        ("prompt", "none", "error"): 1.0,
        ("image", "none", "approved"): 1.0,
        ("image", "adult", "flagged"): 1.0,
        ("image", "none", "flagged"): 1.0,
        ("image", "none", "error"): 1.0,
    }
    # one registry per app or worker: a second one starts from zero
    assert _samples(CollectorRegistry()) == {}
    SafetyMetrics(CollectorRegistry())


def test_image_checker_off_by_default() -> None:
    assert build_image_checker(Settings()) is None


def test_nudenet_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "nudenet", None)  # import fails as if not installed
    with pytest.raises(RuntimeError, match=r"pip install 'sdserve\[nudenet\]'"):
        build_image_checker(Settings(image_checker="nudenet"))


def test_nudenet_detections_map_to_verdicts() -> None:
    from sdserve.safety.nudenet import verdict

    exposed = [
        {"class": "FACE_FEMALE", "score": 0.95, "box": [0, 0, 1, 1]},
        {"class": "FEMALE_BREAST_EXPOSED", "score": 0.71, "box": [0, 0, 1, 1]},
    ]
    v = verdict(exposed, 0.6)
    assert v.flagged and v.labels == ("adult",) and v.categories == {"adult": 0.71}
    assert "FEMALE_BREAST_EXPOSED" in v.reason
    assert not verdict(exposed, 0.8).flagged  # under the threshold
    covered = [{"class": "FEMALE_BREAST_COVERED", "score": 0.99}]
    assert not verdict(covered, 0.6).flagged and verdict(covered, 0.6).categories == {"adult": 0.0}


class _Detector:
    def __init__(self, answers: list[list[dict[str, object]]]) -> None:
        self.answers = answers
        self.inputs: list[bytes] = []

    def detect_batch(self, images: list[bytes]) -> list[list[dict[str, object]]]:
        self.inputs = images
        return self.answers


def test_nudenet_checker_sends_encoded_images_and_checks_counts() -> None:
    from sdserve.safety.nudenet import NudeNetChecker

    detector = _Detector([[], [{"class": "BUTTOCKS_EXPOSED", "score": 0.9}]])
    verdicts = NudeNetChecker(0.6, detector=detector).check([RED, BLUE])
    assert [v.flagged for v in verdicts] == [False, True]
    assert all(b.startswith(b"\x89PNG") for b in detector.inputs)
    with pytest.raises(RuntimeError, match="2 results for 1 images"):
        NudeNetChecker(0.6, detector=detector).check([RED])


def test_nudenet_real_model_runs_offline() -> None:
    pytest.importorskip("nudenet", reason="the optional nudenet extra is not installed")
    checker = build_image_checker(Settings(image_checker="nudenet", image_checker_threshold=0.5))
    assert checker is not None and checker.name == "nudenet"
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8))
    verdicts = checker.check([RED, noise])
    # plain colour and noise contain no people: real inference, nothing flagged
    assert [v.flagged for v in verdicts] == [False, False]
    assert all(v.source == "nudenet" and "adult" in v.categories for v in verdicts)


def test_safety_package_imports_no_torch() -> None:
    import subprocess

    code = (
        "import sys\n"
        "import sdserve.safety, sdserve.safety.factory, sdserve.safety.images\n"
        "import sdserve.safety.metrics, sdserve.safety.nudenet\n"
        "from sdserve.config import Settings\n"
        "sdserve.safety.factory.build_prompt_policy(Settings()).check('a cat')\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert 'nudenet' not in sys.modules, 'nudenet imported eagerly'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
