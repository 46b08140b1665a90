"""The malformed-image corpus and the tricky-but-valid list, built in code.

``malformed_images()`` -> every input that must be refused with a 422 naming ``field``
and containing ``fragment``; ``valid_images()`` -> inputs that must decode, with the
normalised size, mode and some pixel values. Both are plain data so the HTTP tests can
replay them: a ``bytes`` payload may travel as a multipart file or base64 in JSON; a
``str`` payload is the exact JSON string a client sent (base64 cases, JSON only).
For ``field == "mask"`` cases, ``image`` is a valid image the mask goes with.
"""

from __future__ import annotations

import base64
import gzip
import io
import math
import random
import struct
import zipfile
import zlib

from PIL import Image

from tests.corpus import build as b
from tests.corpus.cases import MASK_IMAGE_SIZE, Case, ValidCase
from tests.corpus.valid import valid_images

__all__ = ["Case", "ValidCase", "malformed_images", "mask_image", "valid_images"]

DEFAULT_MAX_PIXELS = 2048 * 2048
DEFAULT_MAX_BYTES = 2 * 1024 * 1024


def mask_image() -> bytes:
    """The image every mask case goes with."""
    return b.encode(Image.new("RGB", MASK_IMAGE_SIZE, (90, 120, 150)), "PNG")


def malformed_images(
    max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_BYTES
) -> list[Case]:
    cases = [
        *_not_images(),
        *_truncated(),
        *_broken_png(),
        *_broken_jpeg_webp(),
        *_limits(max_pixels, max_bytes),
        *_animated(),
        *_masks(),
        *_base64_cases(max_bytes),
    ]
    names = [case.name for case in cases]
    assert len(names) == len(set(names)), "duplicate case names"
    return cases


def _unsupported(name: str, data: bytes, what: str) -> Case:
    return Case(name, data, f"unsupported image format {what}; use PNG, JPEG or WebP")


def _not_images() -> list[Case]:
    rgb = Image.new("RGB", (16, 16), (10, 20, 30))
    rng = random.Random(7)
    png = b.encode(rgb, "PNG")
    gif_frames = [Image.new("P", (8, 8), i) for i in range(3)]
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("image.png", png)
    return [
        Case("empty", b"", "is empty (0 bytes)"),
        Case("one_byte", b"\x89", "too short to be an image (1 byte)"),
        Case("one_byte_text", b"x", "too short to be an image (1 byte)"),
        Case("png_signature_prefix", b.PNG_SIGNATURE[:6], "truncated PNG"),
        Case("jpeg_soi_only", b"\xff\xd8", "truncated JPEG"),
        Case("random_1k", rng.randbytes(1024), "(unrecognised data)"),
        Case("random_64k", rng.randbytes(65536), "(unrecognised data)"),
        Case("zeros", bytes(4096), "(unrecognised data)"),
        _unsupported("html_page", b"<!DOCTYPE html><html><body>502</body></html>", "HTML"),
        _unsupported("json_body", b'{"error": "not found"}', "JSON"),
        _unsupported("plain_text", b"hello, this is not an image\n", "(text, not an image)"),
        _unsupported(
            "svg", b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', "SVG"
        ),
        _unsupported("xml", b'<?xml version="1.0"?><note>hi</note>', "XML"),
        Case("base64_text_upload", base64.b64encode(png), "unsupported image format (base64 text"),
        Case(
            "data_url_upload",
            b"data:image/png;base64," + base64.b64encode(png),
            "unsupported image format (a data: URL",
        ),
        _unsupported("gif", b.encode(rgb, "GIF"), "GIF"),
        _unsupported(
            "gif_animated",
            b.encode(gif_frames[0], "GIF", save_all=True, append_images=gif_frames[1:]),
            "GIF",
        ),
        _unsupported("bmp", b.encode(rgb, "BMP"), "BMP"),
        _unsupported("tiff_le", b.encode(rgb, "TIFF"), "TIFF"),
        _unsupported("tiff_be", b"MM\x00*" + b.encode(rgb, "TIFF")[4:], "TIFF"),
        _unsupported("ico", b.encode(rgb, "ICO"), "ICO"),
        _unsupported("avif", b.encode(rgb, "AVIF"), "AVIF"),
        _unsupported("heic_header", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "HEIC"),
        _unsupported("jpeg2000", b.encode(rgb, "JPEG2000"), "JPEG 2000"),
        _unsupported("qoi", b.encode(rgb, "QOI"), "QOI"),
        _unsupported("psd_header", b"8BPS\x00\x01" + bytes(64), "PSD"),
        _unsupported("pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "PDF"),
        _unsupported("gzip_png", gzip.compress(png, mtime=0), "gzip"),
        _unsupported("zip_png", zipped.getvalue(), "ZIP"),
        _unsupported("riff_wave", b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(28), "RIFF/WAVE"),
    ]


def _truncated() -> list[Case]:
    png = b.encode(b.noise("RGB", (64, 48)), "PNG")
    jpeg = b.encode(b.noise("RGB", (64, 48)), "JPEG", quality=90)
    progressive = b.encode(b.noise("RGB", (64, 48)), "JPEG", progressive=True)
    cmyk = b.encode(b.noise("CMYK", (32, 32)), "JPEG")
    webp = b.encode(b.noise("RGB", (64, 48)), "WEBP", quality=80)
    thumb = b.jpeg_with_app1(jpeg, b.exif_thumbnail_app1())
    gray16 = b.png(8, 8, 16, 0, [bytes(range(16))] * 8)
    cases = [Case(f"png_cut_{cut}", png[:cut], "truncated PNG") for cut in (8, 16, 33, 40)]
    cases += [
        Case("png_cut_half", png[: len(png) // 2], "truncated PNG: the data ends inside chunk"),
        Case("png_no_iend", png[:-12], "truncated PNG: the data ends before the IEND chunk"),
        Case("png_cut_last_byte", png[:-1], "truncated PNG"),
        Case("png16_cut", gray16[: len(gray16) - 20], "truncated PNG"),
        Case("jpeg_cut_3", jpeg[:3], "truncated JPEG"),
        Case("jpeg_cut_20", jpeg[:20], "truncated JPEG: the data ends inside the header"),
        Case("jpeg_cut_200", jpeg[:200], "truncated JPEG"),
        Case("jpeg_cut_half", jpeg[: len(jpeg) // 2], "truncated JPEG: no end-of-image marker"),
        Case("jpeg_missing_eoi", jpeg[:-2], "truncated JPEG: no end-of-image marker"),
        Case("jpeg_progressive_cut", progressive[: len(progressive) * 2 // 3], "truncated JPEG"),
        Case("jpeg_cmyk_cut", cmyk[: len(cmyk) - 100], "truncated JPEG"),
        Case("jpeg_cut_after_exif_thumbnail", thumb[: len(thumb) - 300], "truncated JPEG"),
        Case("webp_cut_8", webp[:8], "truncated WebP"),
        Case("webp_cut_20", webp[:20], "truncated WebP"),
        Case("webp_cut_half", webp[: len(webp) // 2], "truncated WebP"),
        Case("webp_cut_last_byte", webp[:-1], "truncated WebP"),
    ]
    return cases


def _broken_png() -> list[Case]:
    rgb = b.encode(b.noise("RGB", (16, 16)), "PNG")
    palette = b.chunk(b"PLTE", bytes([255, 0, 0, 0, 255, 0]))
    text = b.chunk(b"tEXt", b"Comment\x00hello")
    with_text = rgb[:33] + text + rgb[33:]
    parts = b.chunks(rgb)
    idat = b"".join(body for kind, body in parts if kind == b"IDAT")
    broken_zlib = bytearray(idat)
    broken_zlib[len(broken_zlib) // 2 : len(broken_zlib) // 2 + 8] = b"\xff" * 8
    gray16 = [bytes(range(16))] * 8
    return [
        Case("png_bad_crc_ihdr", b.corrupt_crc(rgb, b"IHDR"), "corrupt PNG: bad CRC in chunk IHDR"),
        Case("png_bad_crc_idat", b.corrupt_crc(rgb, b"IDAT"), "corrupt PNG: bad CRC in chunk IDAT"),
        Case("png_bad_crc_text", b.corrupt_crc(with_text, b"tEXt"), "bad CRC in chunk tEXt"),
        Case(
            "png_then_jpeg_body",
            b.PNG_SIGNATURE + b.encode(Image.new("RGB", (8, 8)), "JPEG"),
            "corrupt PNG",
        ),
        Case(
            "png_first_chunk_not_ihdr",
            b.PNG_SIGNATURE + text + rgb[8:],
            "the first chunk is tEXt, not IHDR",
        ),
        Case(
            "png_no_idat",
            b.PNG_SIGNATURE + b.ihdr(4, 4, 8, 0) + b.chunk(b"IEND", b""),
            "no image data (IDAT chunk)",
        ),
        Case("png_zero_width", b.png(0, 4, 8, 0, [b""] * 4), "has zero width or height (0x4)"),
        Case("png_zero_height", b.png(4, 0, 8, 0, []), "has zero width or height (4x0)"),
        Case("png_bad_colour_type", b.png(2, 1, 8, 5, [b"\x01\x02"]), "colour type 5"),
        Case(
            "png_palette_16bit",
            b.png(2, 1, 16, 3, [bytes(4)], before_idat=palette),
            "bit depth 16 with colour type 3",
        ),
        Case("png_rgb_bad_depth", b.png(2, 1, 4, 2, [bytes(3)]), "bit depth 4 with colour type 2"),
        Case(
            "png_palette_missing_plte",
            b.png(2, 1, 8, 3, [b"\x00\x01"]),
            "palette image without a PLTE chunk",
        ),
        Case(
            "png_palette_index_out_of_range",
            b.png(2, 1, 8, 3, [b"\x00\xc8"], before_idat=palette),
            "palette index 200 is out of range (the palette has 2 colours)",
        ),
        Case(
            "png_palette_bad_plte_length",
            b.png(2, 1, 8, 3, [b"\x00\x01"], before_idat=b.chunk(b"PLTE", bytes(7))),
            "PLTE chunk of 7 bytes",
        ),
        Case(
            "png_broken_zlib",
            b.rebuild([(k, bytes(broken_zlib) if k == b"IDAT" else v) for k, v in parts]),
            "corrupt PNG",
        ),
        Case(
            "png16_broken_zlib",
            b.png(8, 8, 16, 0, gray16, idat=b"\x78\x9c" + bytes(40)),
            "corrupt PNG",
        ),
    ]


def _broken_jpeg_webp() -> list[Case]:
    jpeg = b.encode(b.noise("RGB", (32, 32)), "JPEG")
    cmyk = b.encode(b.noise("CMYK", (32, 32)), "JPEG")
    webp_lossless = b.encode(b.noise("RGB", (32, 32)), "WEBP", lossless=True)
    scrambled = bytearray(webp_lossless)
    scrambled[40:] = random.Random(3).randbytes(len(scrambled) - 40)
    png = b.encode(Image.new("RGB", (8, 8)), "PNG")
    riff_png = b"RIFF" + struct.pack("<I", len(png) + 4) + b"WEBP" + png
    return [
        Case("jpeg_then_png_body", b"\xff\xd8\xff" + png, "corrupt JPEG: invalid marker 0x89"),
        Case("jpeg_eoi_first", b"\xff\xd8\xff\xd9" + jpeg[2:], "end-of-image marker before"),
        Case("jpeg_zero_height", b.patch_sof(jpeg, height=0), "has zero width or height (32x0)"),
        Case("jpeg_cmyk_two_components", b.patch_sof_components(cmyk, 2), "corrupt JPEG"),
        Case(
            "jpeg_bad_segment_length", jpeg[:4] + b"\x00\x01" + jpeg[6:], "invalid segment length"
        ),
        Case("jpeg_two_frame_headers", _second_sof(jpeg), "more than one frame header"),
        Case(
            "jpeg_segment_flood",
            jpeg[:2] + b"\xff\xfe\x00\x02" * 1100 + jpeg[2:],
            "more than 1024 header segments",
        ),
        Case(
            "jpeg_scan_flood",
            jpeg[:-2] + b"\xff\xda\x00\x02" * 300 + jpeg[-2:],
            "progressive scans; the limit is 256",
        ),
        Case("png_chunk_flood", _chunk_flood(), "more than 4096 chunks"),
        Case("webp_riff_then_png", riff_png, "corrupt WebP"),
        Case(
            "webp_unknown_chunk",
            webp_lossless[:12] + b"VP8Z" + webp_lossless[16:],
            "corrupt WebP: unknown first chunk",
        ),
        Case("webp_lossless_scrambled", bytes(scrambled), "corrupt WebP"),
    ]


def _second_sof(jpeg: bytes) -> bytes:
    """A small frame header followed by a huge one: the limit must see both."""
    sof = jpeg.index(b"\xff\xc0")
    length = int.from_bytes(jpeg[sof + 2 : sof + 4], "big")
    huge = bytearray(jpeg[sof : sof + 2 + length])
    huge[5:9] = (60000).to_bytes(2, "big") * 2
    return jpeg[: sof + 2 + length] + bytes(huge) + jpeg[sof + 2 + length :]


def _chunk_flood() -> bytes:
    """A valid-looking PNG made of thousands of empty chunks: slow, not big."""
    small = b.encode(Image.new("L", (8, 8)), "PNG")
    return small[:33] + b.chunk(b"abCd", b"") * 5000 + small[33:]


def _limits(max_pixels: int, max_bytes: int) -> list[Case]:
    side = math.isqrt(max_pixels) + 1  # side*side is just over the limit
    rows = b"\x00" * (side + 1)
    bomb = (
        b.PNG_SIGNATURE
        + b.ihdr(side, side, 8, 0)
        + b.chunk(b"IDAT", _zeros_zlib(len(rows) * side))
        + b.chunk(b"IEND", b"")
    )
    jpeg = b.encode(Image.new("RGB", (16, 16)), "JPEG")
    webp = b.encode(Image.new("RGB", (16, 16)), "WEBP")
    big = b.encode(Image.new("RGB", (8, 8)), "PNG")
    padding = b.chunk(b"zzZz", bytes(max_bytes))  # an ancillary chunk past the byte limit
    oversized = big[:33] + padding + big[33:]
    limit = f"the limit is {max_pixels} pixels"
    return [
        Case(
            "png_bomb_header_100000",
            b.png(100_000, 100_000, 8, 0, [b""], idat=_zeros_zlib(1)),
            "is 100000x100000 = 10000000000 pixels; " + limit,
        ),
        Case("png_bomb_real_just_over", bomb, f"is {side}x{side}"),
        Case(
            "png_one_row_too_long",
            b.png(max_pixels + 1, 1, 1, 0, [b""], idat=_zeros_zlib(1)),
            limit,
        ),
        Case("jpeg_header_65000", b.patch_sof(jpeg, width=65000, height=65000), limit),
        Case("webp_header_16383", b.webp_canvas(webp, 16383, 16383), limit),
        Case("bytes_over_limit", oversized, f"the limit is {max_bytes} bytes"),
    ]


def _zeros_zlib(n: int) -> bytes:
    compressor = zlib.compressobj(9)
    block = bytes(min(n, 1 << 20))
    out = []
    while n > 0:
        step = min(n, len(block))
        out.append(compressor.compress(block[:step]))
        n -= step
    out.append(compressor.flush())
    return b"".join(out)


def _animated() -> list[Case]:
    frames = [Image.new("RGB", (16, 16), (i * 80, 0, 0)) for i in range(3)]
    apng = b.encode(frames[0], "PNG", save_all=True, append_images=frames[1:])
    webp = b.encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    return [
        Case("apng_3_frames", apng, "is an animated PNG (3 frames)"),
        Case("webp_animated_3_frames", webp, "is an animated WebP (3 frames)"),
    ]


def _masks() -> list[Case]:
    image = mask_image()
    width, height = MASK_IMAGE_SIZE
    white = Image.new("L", (width, height), 255)
    return [
        Case(
            "mask_size_mismatch",
            image,
            "must be the same size as image: image is 32x24, mask is 24x32",
            "mask",
            b.encode(Image.new("L", (24, 32), 255), "PNG"),
        ),
        Case("mask_garbage", image, "(unrecognised data)", "mask", random.Random(5).randbytes(300)),
        Case("mask_truncated", image, "truncated PNG", "mask", b.encode(white, "PNG")[:-20]),
        Case("mask_gif", image, "unsupported image format GIF", "mask", b.encode(white, "GIF")),
        Case(
            "mask_all_black",
            image,
            "is entirely black",
            "mask",
            b.encode(Image.new("L", (width, height), 0), "PNG"),
        ),
        Case(
            "mask_all_transparent",
            image,
            "is entirely black",
            "mask",
            b.encode(Image.new("RGBA", (width, height), (255, 255, 255, 0)), "PNG"),
        ),
    ]


def _base64_cases(max_bytes: int) -> list[Case]:
    png = b.encode(Image.new("RGB", (8, 8)), "PNG")
    good = base64.b64encode(png).decode()
    too_big = "A" * (((max_bytes + 3) // 3) * 4 + 4)
    return [
        Case("b64_invalid_character", good[:20] + "!" + good[20:], "unexpected character '!'"),
        Case("b64_non_ascii", good[:20] + "é" + good[20:], "unexpected character 'é'"),
        Case("b64_bad_length", "QUJD" * 5 + "Q", "the length is wrong"),
        Case("b64_bad_padding", good.rstrip("=") + "===", "wrong '=' padding"),
        Case("b64_padding_in_middle", good[:8] + "==" + good[10:], "not valid base64"),
        Case("b64_mixed_alphabets", "ab+c-d_" + good, "mixes the standard and URL-safe"),
        Case("b64_empty", "", "is empty"),
        Case("b64_whitespace_only", "  \n\t ", "is empty"),
        Case("b64_data_url_not_base64", "data:image/png,%89PNG", "not base64-encoded"),
        Case("b64_data_url_no_comma", "data:image/png;base64" + good, "no ',' before the data"),
        Case("b64_over_limit", too_big, f"the limit is {max_bytes} bytes"),
        Case(
            "b64_of_garbage",
            base64.b64encode(b"garbage bytes \x00\x01").decode(),
            "unsupported image format",
        ),
        Case("b64_of_truncated_png", base64.b64encode(png[:-30]).decode(), "truncated PNG"),
        Case(
            "b64_data_url_of_gif",
            "data:image/png;base64,"
            + base64.b64encode(b.encode(Image.new("P", (4, 4)), "GIF")).decode(),
            "unsupported image format GIF",
        ),
    ]
