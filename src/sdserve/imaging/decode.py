"""Strict decoding of client images and masks: every failure is an InvalidRequest.

The order matters: size in bytes, format from the magic bytes, a container walk on the
raw bytes (truncation, CRCs, PNG/WebP dimensions), the header through Pillow, the pixel
limit and frame count, and only then the one decode of the pixel data.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from PIL import ExifTags, Image, ImageFile, JpegImagePlugin, PngImagePlugin, WebPImagePlugin

from sdserve.domain.errors import InvalidRequest
from sdserve.imaging.normalize import to_mask, to_rgb
from sdserve.imaging.problems import ImageProblem
from sdserve.imaging.sniff import Format, sniff
from sdserve.imaging.structure import check_container

# The plugin classes themselves, not Image.open: Image.open runs Pillow's global
# decompression-bomb check, which only warns below 2x its own limit and raises above;
# we enforce our own limit as an error instead and leave Pillow's globals alone.
_OPENERS: dict[Format, Callable[[io.BytesIO], ImageFile.ImageFile]] = {
    "PNG": PngImagePlugin.PngImageFile,
    "JPEG": JpegImagePlugin.JpegImageFile,
    "WEBP": WebPImagePlugin.WebPImageFile,
}
_NAMES: dict[Format, str] = {"PNG": "PNG", "JPEG": "JPEG", "WEBP": "WebP"}
_DECODED_MODES: dict[Format, frozenset[str]] = {
    "PNG": frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", "I", "I;16", "I;16B"}),
    "JPEG": frozenset({"L", "RGB", "CMYK"}),
    "WEBP": frozenset({"RGB", "RGBA"}),
}
# EXIF orientation -> the transpose that shows the image upright (as ImageOps.exif_transpose).
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass(frozen=True)
class ImageLimits:
    """Per-input limits (from Settings): decoded bytes and width*height."""

    max_bytes: int
    max_pixels: int


def decode_image(data: bytes, *, field: str, limits: ImageLimits) -> Image.Image:
    """Client bytes -> an upright 8-bit RGB image with alpha flattened onto white."""
    try:
        return _decode(data, limits, to_rgb)
    except ImageProblem as problem:
        raise invalid(field, problem) from problem


def decode_mask(
    data: bytes,
    *,
    field: str,
    limits: ImageLimits,
    image_size: tuple[int, int] | None = None,
    image_field: str = "image",
    binarize: bool = True,
) -> Image.Image:
    """Client bytes -> an upright 8-bit L mask (white = repaint, black = keep).

    With ``image_size`` the mask must match it (sizes compared after EXIF rotation).
    """
    try:
        mask = _decode(data, limits, lambda image: to_mask(image, binarize=binarize))
        if image_size is not None and mask.size != tuple(image_size):
            raise ImageProblem(
                f"must be the same size as {image_field}: {image_field} is "
                f"{_wh(tuple(image_size))}, {field} is {_wh(mask.size)}",
                list(image_size),
            )
        if mask.getextrema()[1] == 0:
            raise ImageProblem(
                "is entirely black, so nothing would be repainted "
                "(white = repaint, black = keep; transparent counts as black)"
            )
        return mask
    except ImageProblem as problem:
        raise invalid(field, problem) from problem


def decode_transparency(data: bytes, *, field: str, limits: ImageLimits) -> Image.Image | None:
    """Client bytes -> where the image is fully transparent (white) and where not
    (black), as an upright L image; None when the image has no alpha at all. OpenAI's
    edit masks mark the area to repaint by transparency (ours by white)."""

    def transparent(image: Image.Image) -> Image.Image:
        if not (image.mode in ("LA", "PA", "RGBA") or "transparency" in image.info):
            return Image.new("1", image.size)  # a marker: no alpha band
        alpha = image.convert("RGBA").getchannel("A")
        return alpha.point(lambda a: 255 if a == 0 else 0)

    try:
        out = _decode(data, limits, transparent)
    except ImageProblem as problem:
        raise invalid(field, problem) from problem
    return None if out.mode == "1" else out


def invalid(field: str, problem: ImageProblem) -> InvalidRequest:
    return InvalidRequest.single(field, problem.message, problem.limit)


def _decode(
    data: bytes, limits: ImageLimits, normalise: Callable[[Image.Image], Image.Image]
) -> Image.Image:
    if len(data) > limits.max_bytes:
        raise ImageProblem(
            f"is {len(data)} bytes; the limit is {limits.max_bytes} bytes", limits.max_bytes
        )
    fmt = sniff(data)
    name = _NAMES[fmt]
    container = check_container(fmt, data)
    if container.size is not None:
        _check_size(container.size, limits)
    with _pillow_errors(name):
        image = _OPENERS[fmt](io.BytesIO(data))
    _check_size(image.size, limits)
    frames = max(container.frames, getattr(image, "n_frames", 1))
    if frames > 1:
        raise ImageProblem(f"is an animated {name} ({frames} frames); send a single still image", 1)
    if image.mode not in _DECODED_MODES[fmt]:
        raise ImageProblem(f"unsupported {name} pixel format {image.mode}")
    with _pillow_errors(name):  # conversions too: a MemoryError there is no 500 either
        image.load()
        if image.mode == "P" and container.palette_entries:
            highest = image.getextrema()[1]
            if not isinstance(highest, int) or highest >= container.palette_entries:
                raise ImageProblem(
                    f"corrupt PNG: palette index {highest} is out of range "
                    f"(the palette has {container.palette_entries} colours)"
                )
        return _finish(normalise(image), image)


def _check_size(size: tuple[int, int], limits: ImageLimits) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageProblem(f"has zero width or height ({_wh(size)})")
    if width * height > limits.max_pixels:
        raise ImageProblem(
            f"is {_wh(size)} = {width * height} pixels; the limit is "
            f"{limits.max_pixels} pixels (width x height)",
            limits.max_pixels,
        )


def _finish(image: Image.Image, decoded: ImageFile.ImageFile) -> Image.Image:
    method = _ORIENTATION.get(_orientation(decoded))
    if method is not None:
        image = image.transpose(method)
    # Metadata (EXIF, ICC, text chunks) is dropped: the pixels are what count. When no
    # conversion was needed this is the decoded ImageFile itself (load() has already
    # released its file object); copying 12 MB just to change its class is not worth it.
    image.info.clear()
    return image


def _orientation(image: ImageFile.ImageFile) -> int:
    # A corrupt EXIF block only loses the orientation: the pixels decoded fine, and
    # phone photos with odd maker notes are too common to refuse.
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
        return int(value)
    except Exception:
        return 1


@contextmanager
def _pillow_errors(name: str) -> Iterator[None]:
    """Whatever Pillow raises on client bytes becomes an ImageProblem.

    Deliberately broad: Pillow's decoders raise OSError, SyntaxError, ValueError,
    struct.error, EOFError, IndexError, KeyError, TypeError, ZeroDivisionError,
    DecompressionBombError, MemoryError... and the set changes between releases.
    Only the opening, the decode and the thin conversions over them are wrapped (not
    the sniffing or container checks), so few bugs of ours could hide behind a 422.
    """
    try:
        yield
    except ImageProblem:
        raise
    except MemoryError as exc:
        raise ImageProblem(f"{name} too large to decode now (out of memory)") from exc
    except Exception as exc:
        text = str(exc).strip() or type(exc).__name__
        if "truncated" in text.lower():
            raise ImageProblem(f"corrupt {name}: the data was cut short ({text})") from exc
        raise ImageProblem(f"corrupt {name}: could not decode it ({text})") from exc


def _wh(size: tuple[int, ...]) -> str:
    return f"{size[0]}x{size[1]}"
