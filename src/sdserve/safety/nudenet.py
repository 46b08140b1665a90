"""NudeNet (an ONNX nudity detector) as an ``ImageChecker``: the optional extra.

NudeNet is AGPL-3.0, so it is never a default dependency: ``pip install
sdserve[nudenet]`` brings it (with onnxruntime and OpenCV; no torch). Its detector
ships its model file inside the package, so it works offline.

An image is flagged when NudeNet finds an exposed intimate body part (``FLAGGED``)
with a score at or above the threshold.
"""

from __future__ import annotations

import io
from typing import Any

from PIL.Image import Image

from sdserve.safety.decisions import ImageVerdict

CATEGORY = "adult"
FLAGGED = frozenset(
    {
        "FEMALE_BREAST_EXPOSED",
        "FEMALE_GENITALIA_EXPOSED",
        "MALE_GENITALIA_EXPOSED",
        "BUTTOCKS_EXPOSED",
        "ANUS_EXPOSED",
    }
)
INSTALL_HINT = (
    "SDSERVE_IMAGE_CHECKER=nudenet needs the optional NudeNet extra (AGPL-3.0): "
    "pip install 'sdserve[nudenet]'"
)


def load_detector() -> Any:
    try:
        from nudenet import NudeDetector
    except ImportError as exc:
        raise RuntimeError(INSTALL_HINT) from exc
    return NudeDetector()


def verdict(detections: list[dict[str, Any]], threshold: float) -> ImageVerdict:
    """NudeNet's detections for one image -> our verdict."""
    exposed = [d for d in detections if d.get("class") in FLAGGED]
    top = max((float(d.get("score", 0.0)) for d in exposed), default=0.0)
    hits = sorted({d["class"] for d in exposed if float(d.get("score", 0.0)) >= threshold})
    flagged = bool(hits)
    reason = (
        f"nudenet: {', '.join(hits)} (score {top:.2f} >= {threshold:.2f})"
        if flagged
        else f"nudenet: nothing exposed at or above {threshold:.2f} (top {top:.2f})"
    )
    return ImageVerdict(
        flagged=flagged,
        categories={CATEGORY: round(top, 4)},
        reason=reason,
        source="nudenet",
        labels=(CATEGORY,) if flagged else (),
    )


def _png(image: Image) -> bytes:
    # Encoded bytes take NudeNet's own decode path (the one it uses for files), so
    # its colour-order handling applies exactly as documented.
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


class NudeNetChecker:
    name = "nudenet"

    def __init__(self, threshold: float = 0.6, detector: Any = None) -> None:
        self.threshold = threshold
        self.detector = detector if detector is not None else load_detector()

    def check(self, images: list[Image]) -> list[ImageVerdict]:
        if not images:
            return []
        found = self.detector.detect_batch([_png(im) for im in images])
        if len(found) != len(images):
            raise RuntimeError(f"nudenet returned {len(found)} results for {len(images)} images")
        return [verdict(list(d), self.threshold) for d in found]
