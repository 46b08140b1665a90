"""Image checkers that need no model: deterministic ones for tests and service tests.

- ``ColourRangeChecker`` flags images whose mean colour lies in a configured box
  (e.g. "mostly red"), so a test can make the real worker path flag or pass an image
  by choosing what the fake engine draws.
- ``FailingChecker`` raises on every call, to test the fail-closed paths.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image, ImageStat

from sdserve.safety.decisions import ImageVerdict

RGB = tuple[float, float, float]


@dataclass(frozen=True)
class ColourRangeChecker:
    """Flags an image when its mean (R, G, B) lies within [low, high] on every channel."""

    low: RGB
    high: RGB
    category: str = "adult"
    name: str = "colour-range"

    def mean(self, image: Image.Image) -> RGB:
        r, g, b = ImageStat.Stat(image.convert("RGB")).mean
        return (r, g, b)

    def check(self, images: list[Image.Image]) -> list[ImageVerdict]:
        out = []
        for image in images:
            mean = self.mean(image)
            box = zip(self.low, mean, self.high, strict=True)
            inside = all(lo <= m <= hi for lo, m, hi in box)
            shown = "(" + ", ".join(f"{m:.0f}" for m in mean) + ")"
            where = "inside" if inside else "outside"
            out.append(
                ImageVerdict(
                    flagged=inside,
                    categories={self.category: 1.0 if inside else 0.0},
                    reason=f"mean colour {shown} {where} the flagged range",
                    source=self.name,
                    labels=(self.category,) if inside else (),
                )
            )
        return out


class CheckerFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class FailingChecker:
    """Raises on every check: a checker that cannot decide."""

    message: str = "image checker failed"
    name: str = "failing"

    def check(self, images: list[Image.Image]) -> list[ImageVerdict]:
        raise CheckerFailed(self.message)
