"""Strict decoding of client images (provisional: replaced by the full decoder)."""

from __future__ import annotations

import io

from PIL import Image, ImageOps

from sdserve.domain.errors import InvalidRequest

_FORMATS = {"PNG", "JPEG", "WEBP"}


def decode_image(data: bytes, *, field: str, max_pixels: int) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format not in _FORMATS:
                raise InvalidRequest.single(field, f"unsupported image format {im.format}")
            if im.width * im.height > max_pixels:
                raise InvalidRequest.single(field, "too many pixels", max_pixels)
            im.load()
            out = ImageOps.exif_transpose(im).convert("RGB")
    except InvalidRequest:
        raise
    except Exception as exc:
        raise InvalidRequest.single(field, f"not a readable image: {exc}") from exc
    return out


def decode_mask(data: bytes, *, field: str, max_pixels: int) -> Image.Image:
    return decode_image(data, field=field, max_pixels=max_pixels).convert("L")


def encode_png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def load_stored(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im.copy()
