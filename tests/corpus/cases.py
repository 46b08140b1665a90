"""The two record types of the image corpus (plain data, replayable over HTTP)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MASK_IMAGE_SIZE = (32, 24)  # the image every malformed-mask case goes with

Payload = bytes | str


@dataclass(frozen=True)
class Case:
    name: str
    image: Payload
    fragment: str
    field: Literal["image", "mask"] = "image"
    mask: Payload | None = None


Pixel = int | tuple[int, int, int]


@dataclass(frozen=True)
class ValidCase:
    name: str
    data: bytes
    size: tuple[int, int]  # after EXIF rotation
    kind: Literal["image", "mask"] = "image"
    probes: tuple[tuple[tuple[int, int], Pixel], ...] = ()
    tolerance: int = 0  # per channel, for lossy formats

    @property
    def mode(self) -> str:
        return "RGB" if self.kind == "image" else "L"
