"""Container checks that run on the raw bytes before Pillow sees them.

Pillow is lenient where we must be strict: it ignores CRCs after IHDR, decodes a PNG
without IEND, paints a palette PNG without PLTE black, and (if anything ever sets
``ImageFile.LOAD_TRUNCATED_IMAGES``) fills a cut JPEG with grey. These walks are cheap
(no pixel data is decompressed) and give precise messages. They also read PNG and WebP
dimensions, so the pixel limit holds before any decoder allocates a canvas (libwebp
allocates it when the file is opened).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from sdserve.imaging.problems import ImageProblem
from sdserve.imaging.sniff import Format

# PNG colour type -> allowed bit depths (PNG spec, table 11.1).
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
_JPEG_STANDALONE = {0x01, 0xD8, *range(0xD0, 0xD8)}
# Work caps against files built to be slow rather than big (each chunk or segment costs
# Python-level work here and in Pillow; each progressive scan is a pass over the whole
# image in libjpeg). Real files stay far below them: an encoder writes IDAT chunks of
# 8-64 KB, a JPEG has a few dozen segments and at most ~20 scans.
MIN_PNG_CHUNK_CAP = 4096
PNG_BYTES_PER_CHUNK = 1024  # the cap grows with the file: one chunk per KB on average
MAX_JPEG_SEGMENTS = 1024  # before the first scan
MAX_JPEG_SCANS = 256
# Start-of-frame markers (all coding processes); DHT C4, JPG C8 and DAC CC are not frames.
_JPEG_SOF = {*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC}


@dataclass(frozen=True)
class Container:
    """What the container says, before any pixel is decoded."""

    size: tuple[int, int] | None = None  # None: Pillow reads it (JPEG)
    frames: int = 1
    palette_entries: int = 0  # PNG colour type 3 only


def check_container(fmt: Format, data: bytes) -> Container:
    if fmt == "PNG":
        return _check_png(data)
    if fmt == "JPEG":
        return Container(size=_check_jpeg(data))
    return _check_webp(data)


def _check_png(data: bytes) -> Container:
    view = memoryview(data)
    n = len(data)
    pos = 8
    size: tuple[int, int] | None = None
    color_type = -1
    palette = 0
    frames = 1
    idat = False
    cap = max(MIN_PNG_CHUNK_CAP, n // PNG_BYTES_PER_CHUNK)
    for _ in range(cap):
        if pos + 8 > n:
            where = "before the IEND chunk" if pos == n else f"inside a chunk header at byte {pos}"
            raise ImageProblem(f"truncated PNG: the data ends {where}")
        length, kind = struct.unpack_from(">I4s", data, pos)
        name = kind.decode("latin-1")
        if not kind.isalpha():  # bytes.isalpha: ASCII letters only
            raise ImageProblem(f"corrupt PNG: invalid chunk type {name!r} at byte {pos}")
        if length > 0x7FFFFFFF:
            raise ImageProblem(f"corrupt PNG: invalid length for chunk {name} at byte {pos}")
        end = pos + 12 + length
        if end > n:
            raise ImageProblem(f"truncated PNG: the data ends inside chunk {name}")
        crc = int.from_bytes(view[end - 4 : end], "big")
        if zlib.crc32(view[pos + 4 : end - 4]) != crc:
            raise ImageProblem(f"corrupt PNG: bad CRC in chunk {name} (damaged data)")
        body = view[pos + 8 : end - 4]
        if size is None and kind != b"IHDR":
            raise ImageProblem(f"corrupt PNG: the first chunk is {name}, not IHDR")
        if kind == b"IHDR":
            if size is not None:
                raise ImageProblem("corrupt PNG: more than one IHDR chunk")
            size, color_type = _png_header(body)
        elif kind == b"PLTE":
            if length % 3 or not 1 <= length // 3 <= 256:
                raise ImageProblem(f"corrupt PNG: PLTE chunk of {length} bytes")
            palette = length // 3
        elif kind == b"acTL" and length >= 4:
            frames = int.from_bytes(body[:4], "big")
        elif kind == b"IDAT":
            if color_type == 3 and not palette:
                raise ImageProblem("corrupt PNG: palette image without a PLTE chunk")
            idat = True
        elif kind == b"IEND":
            break  # anything after IEND is ignored, as every decoder does
        pos = end
    else:
        raise ImageProblem(f"corrupt PNG: more than {cap} chunks for {n} bytes")
    if not idat:
        raise ImageProblem("corrupt PNG: no image data (IDAT chunk)")
    return Container(size=size, frames=frames, palette_entries=palette)


def _png_header(body: memoryview) -> tuple[tuple[int, int], int]:
    if len(body) != 13:
        raise ImageProblem(f"corrupt PNG: IHDR chunk of {len(body)} bytes")
    width, height, depth, color_type, compression, filtering, interlace = struct.unpack(
        ">IIBBBBB", body
    )
    if depth not in _PNG_DEPTHS.get(color_type, ()):
        raise ImageProblem(
            f"corrupt PNG: bit depth {depth} with colour type {color_type} is not valid"
        )
    if compression or filtering or interlace > 1:
        raise ImageProblem("corrupt PNG: unknown compression, filter or interlace method")
    return (width, height), color_type


def _check_jpeg(data: bytes) -> tuple[int, int]:
    """Walk the markers to the first scan, then require an end-of-image after it.

    Entropy-coded data escapes 0xFF as FF 00, so an FF D9 after the scan header can only
    be a marker: if there is none the file was cut (an EXIF thumbnail's own EOI sits
    before the scan and does not count).
    """
    n = len(data)
    pos = 2
    size: tuple[int, int] | None = None
    for _ in range(MAX_JPEG_SEGMENTS):
        if pos + 2 > n:
            raise ImageProblem("truncated JPEG: the data ends inside the header")
        if data[pos] != 0xFF:
            raise ImageProblem(f"corrupt JPEG: expected a marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if marker == 0xD9:
            raise ImageProblem("corrupt JPEG: end-of-image marker before any image data")
        if marker < 0xC0:
            raise ImageProblem(f"corrupt JPEG: invalid marker 0x{marker:02X} at byte {pos}")
        if pos + 4 > n:
            raise ImageProblem("truncated JPEG: the data ends inside the header")
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if length < 2:
            raise ImageProblem(f"corrupt JPEG: invalid segment length at byte {pos}")
        if marker in _JPEG_SOF and length >= 8 and pos + 9 <= n:
            if size is not None:  # the limit must hold for the frame libjpeg would use
                raise ImageProblem("corrupt JPEG: more than one frame header (SOF)")
            height = int.from_bytes(data[pos + 5 : pos + 7], "big")
            size = (int.from_bytes(data[pos + 7 : pos + 9], "big"), height)
        if marker == 0xDA:
            break
        pos += 2 + length
    else:
        raise ImageProblem(f"corrupt JPEG: more than {MAX_JPEG_SEGMENTS} header segments")
    if size is None:
        raise ImageProblem("corrupt JPEG: no frame header (SOF) before the image data")
    if data.rfind(b"\xff\xd9", pos) < 0:
        raise ImageProblem("truncated JPEG: no end-of-image marker (the data was cut)")
    scans = data.count(b"\xff\xda", pos)
    if scans > MAX_JPEG_SCANS:
        raise ImageProblem(
            f"has {scans} progressive scans; the limit is {MAX_JPEG_SCANS}", MAX_JPEG_SCANS
        )
    return size


def _check_webp(data: bytes) -> Container:
    n = len(data)
    declared = int.from_bytes(data[4:8], "little") + 8
    if declared > n:
        raise ImageProblem(f"truncated WebP: the header declares {declared} bytes, got {n}")
    if n < 30:
        raise ImageProblem(f"truncated WebP: only {n} bytes")
    kind = data[12:16]
    if kind == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
    elif kind == b"VP8L":
        if data[20] != 0x2F:
            raise ImageProblem("corrupt WebP: bad lossless (VP8L) signature")
        bits = int.from_bytes(data[21:25], "little")
        width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    elif kind == b"VP8 ":
        if data[23:26] != b"\x9d\x01\x2a":
            raise ImageProblem("corrupt WebP: bad lossy (VP8) frame header")
        width = int.from_bytes(data[26:28], "little") & 0x3FFF
        height = int.from_bytes(data[28:30], "little") & 0x3FFF
    else:
        raise ImageProblem(f"corrupt WebP: unknown first chunk {kind.decode('latin-1')!r}")
    return Container(size=(width, height))
