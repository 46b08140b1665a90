"""Byte-level builders for the image corpus: hand-made PNGs (any bit depth, colour
type, interlace, broken chunk), patched JPEG/WebP headers and raw EXIF blocks.

Everything is deterministic: the same bytes on every run and every machine that has the
same Pillow/libjpeg/libwebp (the cases never depend on exact encoder output).
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from collections.abc import Sequence
from typing import Any

from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Adam7 passes: (x start, y start, x step, y step).
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2))
_ADAM7 += ((0, 1, 1, 2),)


def chunk(kind: bytes, body: bytes, *, crc: int | None = None) -> bytes:
    value = zlib.crc32(kind + body) if crc is None else crc
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", value)


def ihdr(width: int, height: int, depth: int, color_type: int, interlace: int = 0) -> bytes:
    return chunk(
        b"IHDR", struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, interlace)
    )


def png(
    width: int,
    height: int,
    depth: int,
    color_type: int,
    rows: Sequence[bytes],
    *,
    before_idat: bytes = b"",
    after_iend: bytes = b"",
    idat: bytes | None = None,
) -> bytes:
    """A PNG from packed scanlines (filter type 0 added here)."""
    raw = b"".join(b"\x00" + row for row in rows)
    data = zlib.compress(raw, 9) if idat is None else idat
    return (
        PNG_SIGNATURE
        + ihdr(width, height, depth, color_type)
        + before_idat
        + chunk(b"IDAT", data)
        + chunk(b"IEND", b"")
        + after_iend
    )


def adam7_png(pixels: Sequence[Sequence[int]]) -> bytes:
    """An interlaced 8-bit greyscale PNG (Pillow cannot write interlaced PNGs)."""
    height, width = len(pixels), len(pixels[0])
    raw = bytearray()
    for x0, y0, dx, dy in _ADAM7:
        xs = range(x0, width, dx)
        if not xs:
            continue
        for y in range(y0, height, dy):
            raw += b"\x00" + bytes(pixels[y][x] for x in xs)
    return (
        PNG_SIGNATURE
        + ihdr(width, height, 8, 0, interlace=1)
        + chunk(b"IDAT", zlib.compress(bytes(raw), 9))
        + chunk(b"IEND", b"")
    )


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, body) of every chunk of a well-formed PNG."""
    out: list[tuple[bytes, bytes]] = []
    pos = 8
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        out.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return out


def rebuild(parts: Sequence[tuple[bytes, bytes]]) -> bytes:
    return PNG_SIGNATURE + b"".join(chunk(kind, body) for kind, body in parts)


def corrupt_crc(data: bytes, kind: bytes) -> bytes:
    """Flip the CRC of the first chunk of ``kind``."""
    pos = data.index(kind) - 4
    (length,) = struct.unpack_from(">I", data, pos)
    crc_at = pos + 8 + length
    out = bytearray(data)
    out[crc_at] ^= 0xFF
    return bytes(out)


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def noise(mode: str, size: tuple[int, int], seed: int = 1) -> Image.Image:
    """Incompressible pixels, so files are big enough to cut at many offsets."""
    bands = len(mode)
    data = random.Random(seed).randbytes(size[0] * size[1] * bands)
    return Image.frombytes(mode, size, data)


def halves(size: tuple[int, int], left: Any, right: Any, mode: str = "RGB") -> Image.Image:
    """Left half one colour, right half another: shows rotation and mirroring."""
    image = Image.new(mode, size, left)
    image.paste(right, (size[0] // 2, 0, size[0], size[1]))
    return image


def exif_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


def jpeg_with_app1(jpeg: bytes, payload: bytes) -> bytes:
    """Insert an APP1 segment right after SOI (for EXIF blocks Pillow would not write)."""
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def corrupt_exif_ifd() -> bytes:
    """An APP1 EXIF payload whose IFD claims 65535 entries and points past the end."""
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 0xFFFF) + b"\x12\x01\x03\x00"
    return b"Exif\x00\x00" + tiff + struct.pack("<I", 0xFFFFFF00)


def exif_thumbnail_app1() -> bytes:
    """An APP1 EXIF payload with a complete little JPEG inside (it has its own SOS/EOI)."""
    thumb = encode(Image.new("RGB", (8, 8), (0, 128, 0)), "JPEG")
    return b"Exif\x00\x00" + b"II*\x00" + struct.pack("<I", 8) + b"\x00\x00" + thumb


def patch_sof(jpeg: bytes, *, width: int | None = None, height: int | None = None) -> bytes:
    """Rewrite the frame header's size (baseline SOF0 or progressive SOF2)."""
    pos = _sof(jpeg)
    out = bytearray(jpeg)
    if height is not None:
        out[pos + 5 : pos + 7] = struct.pack(">H", height)
    if width is not None:
        out[pos + 7 : pos + 9] = struct.pack(">H", width)
    return bytes(out)


def patch_sof_components(jpeg: bytes, count: int) -> bytes:
    pos = _sof(jpeg)
    out = bytearray(jpeg)
    out[pos + 9] = count
    return bytes(out)


def _sof(jpeg: bytes) -> int:
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        pos = jpeg.find(marker, 2)
        if pos > 0:
            return pos
    raise ValueError("no SOF0/SOF2 marker")


def webp_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    pos = 12
    while pos + 8 <= len(data):
        kind = data[pos : pos + 4]
        (length,) = struct.unpack_from("<I", data, pos + 4)
        out.append((kind, data[pos + 8 : pos + 8 + length]))
        pos += 8 + length + (length & 1)
    return out


def webp_rebuild(parts: Sequence[tuple[bytes, bytes]]) -> bytes:
    body = b"WEBP" + b"".join(
        kind + struct.pack("<I", len(data)) + data + (b"\x00" if len(data) & 1 else b"")
        for kind, data in parts
    )
    return b"RIFF" + struct.pack("<I", len(body)) + body


def webp_canvas(data: bytes, width: int, height: int) -> bytes:
    """Rewrite a simple lossy (VP8) WebP's frame size, leaving the bitstream as is."""
    if data[12:16] != b"VP8 ":
        raise ValueError("not a simple lossy WebP")
    out = bytearray(data)
    out[26:28] = struct.pack("<H", width & 0x3FFF)
    out[28:30] = struct.pack("<H", height & 0x3FFF)
    return bytes(out)
