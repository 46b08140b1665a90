"""The canonical stored form of an input: a metadata-free PNG, and its pixel hash."""

from __future__ import annotations

import hashlib
import io

from PIL import Image, PngImagePlugin

from sdserve.domain.errors import CorruptInput
from sdserve.imaging.problems import ImageProblem
from sdserve.imaging.sniff import PNG_SIGNATURE
from sdserve.imaging.structure import check_container

STORED_MODES = ("RGB", "L")
# As the worker's output PNGs: close to the default size at about half the CPU time.
PNG_COMPRESS_LEVEL = 4


def encode_png(image: Image.Image) -> bytes:
    """A normalised image (RGB or L) as PNG bytes with no metadata chunks at all.

    Nothing from ``image.info`` leaks in (ICC profile, transparency key, text, EXIF), so
    equal pixels give equal bytes with the same Pillow/zlib build.
    """
    if image.mode not in STORED_MODES:
        raise ValueError(f"encode_png takes RGB or L images, not {image.mode}")
    buf = io.BytesIO()
    image.save(
        buf,
        format="PNG",
        compress_level=PNG_COMPRESS_LEVEL,
        icc_profile=None,
        transparency=None,
        exif=b"",
    )
    return buf.getvalue()


def pixel_sha256(image: Image.Image) -> str:
    """sha256 over mode, size and raw pixels: equal iff the normalised pixels are equal
    (whatever format or metadata the client's file had)."""
    digest = hashlib.sha256(f"{image.mode} {image.width}x{image.height}\n".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def load_stored(data: bytes) -> Image.Image:
    """A PNG written by ``encode_png`` -> the image, fully loaded.

    The CRC walk still runs: a blob damaged at rest fails the job clearly instead of
    feeding altered pixels to the model.
    """
    if not data.startswith(PNG_SIGNATURE):
        raise CorruptInput("stored input image is not a PNG")
    try:
        check_container("PNG", data)
        image = PngImagePlugin.PngImageFile(io.BytesIO(data))
        image.load()
    except ImageProblem as problem:
        raise CorruptInput(f"stored input image is damaged: {problem.message}") from problem
    except Exception as exc:  # whatever Pillow raises on damaged bytes
        raise CorruptInput(f"stored input image is unreadable: {exc}") from exc
    if image.mode not in STORED_MODES:
        raise CorruptInput(f"stored input image has mode {image.mode}, not RGB or L")
    return image
