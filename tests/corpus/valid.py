"""Tricky-but-valid inputs: every one must decode, to the size, mode and pixels given.

Expected values follow docs/images.md: alpha onto white (images) / black (masks),
16-bit scaled round(v*255/65535) (16-bit colour: Pillow keeps the high byte), EXIF
orientation applied, masks binarised at 128.
"""

from __future__ import annotations

import math
import struct

from PIL import Image

from tests.corpus import build as b
from tests.corpus.cases import ValidCase

RED, BLUE, GREEN, WHITE = (255, 0, 0), (0, 0, 255), (0, 255, 0), (255, 255, 255)
JPEG_TOLERANCE = 12


def valid_images(max_pixels: int = 2048 * 2048) -> list[ValidCase]:
    side = math.isqrt(max_pixels)
    edge = (side, max_pixels // side)  # as many pixels as the limit allows
    at_limit = ValidCase(
        "png_at_pixel_limit",
        b.encode(Image.new("L", edge, 9), "PNG"),
        edge,
        probes=(((edge[0] - 1, edge[1] - 1), (9, 9, 9)),),
    )
    cases = [*_png(), at_limit, *_jpeg(), *_webp(), *_masks()]
    names = [case.name for case in cases]
    assert len(names) == len(set(names)), "duplicate case names"
    return cases


def _png() -> list[ValidCase]:
    rgb = Image.new("RGB", (4, 3), (1, 2, 3))
    rgb.putpixel((1, 1), (10, 200, 30))
    rgba = Image.new("RGBA", (3, 1))
    for x, value in enumerate([(0, 0, 0, 128), (200, 100, 50, 255), (9, 9, 9, 0)]):
        rgba.putpixel((x, 0), value)
    plte = b.chunk(b"PLTE", bytes([255, 0, 0, 0, 255, 0, 0, 0, 255]))
    g16 = struct.pack(">4H", 0, 32768, 65535, 257 * 100 + 128)
    pixels = [[(x * 20 + y * 3) % 256 for x in range(9)] for y in range(9)]
    single = b.encode(Image.new("RGB", (4, 4), (7, 8, 9)), "PNG")
    actl = b.chunk(b"acTL", struct.pack(">II", 1, 0))
    fctl = b.chunk(b"fcTL", struct.pack(">IIIIIHHBB", 0, 4, 4, 0, 0, 1, 1, 0, 0))
    halves = b.halves((8, 4), RED, BLUE)
    return [
        ValidCase("png_rgb", b.encode(rgb, "PNG"), (4, 3), probes=(((1, 1), (10, 200, 30)),)),
        ValidCase(
            "png_rgba_flattened_on_white",
            b.encode(rgba, "PNG"),
            (3, 1),
            probes=(((0, 0), (127, 127, 127)), ((1, 0), (200, 100, 50)), ((2, 0), WHITE)),
            tolerance=1,
        ),
        ValidCase(
            "png_la",
            b.png(2, 1, 8, 4, [bytes([100, 0, 100, 255])]),
            (2, 1),
            probes=(((0, 0), WHITE), ((1, 0), (100, 100, 100))),
        ),
        ValidCase(
            "png_palette",
            b.png(3, 1, 8, 3, [b"\x00\x01\x02"], before_idat=plte),
            (3, 1),
            probes=(((0, 0), RED), ((1, 0), GREEN), ((2, 0), BLUE)),
        ),
        ValidCase(
            "png_palette_trns",
            b.png(2, 1, 8, 3, [b"\x00\x01"], before_idat=plte + b.chunk(b"tRNS", b"\x00\xff")),
            (2, 1),
            probes=(((0, 0), WHITE), ((1, 0), GREEN)),
        ),
        ValidCase(
            "png_palette_4bit",
            b.png(3, 1, 4, 3, [b"\x21\x00"], before_idat=plte),
            (3, 1),
            probes=(((0, 0), BLUE), ((1, 0), GREEN), ((2, 0), RED)),
        ),
        ValidCase(
            "png_gray_1bit",
            b.png(8, 1, 1, 0, [b"\xa0"]),
            (8, 1),
            probes=(((0, 0), WHITE), ((1, 0), (0, 0, 0)), ((2, 0), WHITE)),
        ),
        ValidCase(
            "png_gray_2bit",
            b.png(4, 1, 2, 0, [b"\x1b"]),
            (4, 1),
            probes=(((0, 0), (0, 0, 0)), ((1, 0), (85, 85, 85)), ((3, 0), WHITE)),
        ),
        ValidCase(
            "png_gray16_scaled",
            b.png(4, 1, 16, 0, [g16]),
            (4, 1),
            probes=(
                ((0, 0), (0, 0, 0)),
                ((1, 0), (128, 128, 128)),
                ((2, 0), WHITE),
                ((3, 0), (100, 100, 100)),
            ),
        ),
        ValidCase(
            "png_gray16_colour_key",
            b.png(
                2,
                1,
                16,
                0,
                [struct.pack(">2H", 0, 32768)],
                before_idat=b.chunk(b"tRNS", struct.pack(">H", 0)),
            ),
            (2, 1),
            probes=(((0, 0), WHITE), ((1, 0), (128, 128, 128))),
        ),
        ValidCase(
            "png_rgb16",
            b.png(1, 1, 16, 2, [struct.pack(">3H", 0x8000, 0xFFFF, 0x00FF)]),
            (1, 1),
            probes=(((0, 0), (128, 255, 0)),),
            tolerance=1,
        ),
        ValidCase(
            "png_rgba16",
            b.png(1, 1, 16, 6, [struct.pack(">4H", 0x8000, 0, 0, 0xFFFF)]),
            (1, 1),
            probes=(((0, 0), (128, 0, 0)),),
            tolerance=1,
        ),
        ValidCase(
            "png_la16",
            b.png(2, 1, 16, 4, [struct.pack(">4H", 0x6400, 0, 0x6400, 0xFFFF)]),
            (2, 1),
            probes=(((0, 0), WHITE), ((1, 0), (100, 100, 100))),
            tolerance=1,
        ),
        ValidCase(
            "png_gray_colour_key",
            b.png(2, 1, 8, 0, [b"\x05\x06"], before_idat=b.chunk(b"tRNS", struct.pack(">H", 5))),
            (2, 1),
            probes=(((0, 0), WHITE), ((1, 0), (6, 6, 6))),
        ),
        ValidCase(
            "png_rgb_colour_key",
            b.png(
                2,
                1,
                8,
                2,
                [b"\x05\x06\x07\x01\x02\x03"],
                before_idat=b.chunk(b"tRNS", struct.pack(">3H", 5, 6, 7)),
            ),
            (2, 1),
            probes=(((0, 0), WHITE), ((1, 0), (1, 2, 3))),
        ),
        ValidCase(
            "png_interlaced_adam7",
            b.adam7_png(pixels),
            (9, 9),
            probes=tuple(
                ((x, y), (pixels[y][x],) * 3) for x, y in ((0, 0), (8, 8), (3, 5), (7, 1), (4, 4))
            ),
        ),
        ValidCase(
            "apng_single_frame",
            single[:33] + actl + fctl + single[33:],
            (4, 4),
            probes=(((3, 3), (7, 8, 9)),),
        ),
        ValidCase(
            "png_trailing_data",
            b.encode(rgb, "PNG") + b"trailing junk",
            (4, 3),
            probes=(((1, 1), (10, 200, 30)),),
        ),
        ValidCase(
            "png_exif_orientation_6",
            b.encode(halves, "PNG", exif=b.exif_orientation(6)),
            (4, 8),
            probes=(((0, 0), RED), ((3, 7), BLUE)),
        ),
    ]


def _jpeg() -> list[ValidCase]:
    halves = b.halves((64, 32), RED, BLUE)
    plain = b.encode(halves, "JPEG", quality=95)
    cmyk = b.halves((32, 16), (0, 255, 255, 0), (255, 0, 0, 0), mode="CMYK")
    tol = JPEG_TOLERANCE

    def rotated(name: str, value: int, size: tuple[int, int], probes: tuple) -> ValidCase:  # type: ignore[type-arg]
        data = b.encode(halves, "JPEG", quality=95, exif=b.exif_orientation(value))
        return ValidCase(name, data, size, probes=probes, tolerance=tol)

    return [
        ValidCase(
            "jpeg_rgb", plain, (64, 32), probes=(((8, 16), RED), ((56, 16), BLUE)), tolerance=tol
        ),
        ValidCase(
            "jpeg_gray",
            b.encode(Image.new("L", (16, 16), 77), "JPEG"),
            (16, 16),
            probes=(((8, 8), (77, 77, 77)),),
            tolerance=2,
        ),
        ValidCase(
            "jpeg_cmyk_adobe",
            b.encode(cmyk, "JPEG", quality=95),
            (32, 16),
            probes=(((4, 8), RED), ((28, 8), (0, 255, 255))),
            tolerance=tol,
        ),
        ValidCase(
            "jpeg_progressive",
            b.encode(halves, "JPEG", quality=95, progressive=True),
            (64, 32),
            probes=(((8, 16), RED), ((56, 16), BLUE)),
            tolerance=tol,
        ),
        rotated("jpeg_exif_mirror_2", 2, (64, 32), (((8, 16), BLUE), ((56, 16), RED))),
        rotated("jpeg_exif_rotate_3", 3, (64, 32), (((8, 16), BLUE), ((56, 16), RED))),
        rotated("jpeg_exif_rotate_6", 6, (32, 64), (((16, 8), RED), ((16, 56), BLUE))),
        rotated("jpeg_exif_rotate_8", 8, (32, 64), (((16, 8), BLUE), ((16, 56), RED))),
        rotated("jpeg_exif_orientation_9_ignored", 9, (64, 32), (((8, 16), RED),)),
        ValidCase(
            "jpeg_exif_corrupt_ifd_ignored",
            b.jpeg_with_app1(plain, b.corrupt_exif_ifd()),
            (64, 32),
            probes=(((8, 16), RED), ((56, 16), BLUE)),
            tolerance=tol,
        ),
        ValidCase(
            "jpeg_exif_thumbnail",
            b.jpeg_with_app1(plain, b.exif_thumbnail_app1()),
            (64, 32),
            probes=(((8, 16), RED),),
            tolerance=tol,
        ),
        ValidCase(
            "jpeg_trailing_data",
            plain + b"\x00\xff\xd9 trailer",
            (64, 32),
            probes=(((8, 16), RED),),
            tolerance=tol,
        ),
        ValidCase(
            "jpeg_odd_size",
            b.encode(Image.new("RGB", (33, 17), GREEN), "JPEG"),
            (33, 17),
            probes=(((32, 16), GREEN),),
            tolerance=tol,
        ),
    ]


def _webp() -> list[ValidCase]:
    halves = b.halves((16, 8), RED, BLUE)
    alpha = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    alpha.putpixel((1, 1), (10, 20, 30, 255))
    frames = [Image.new("RGB", (8, 8), GREEN), Image.new("RGB", (8, 8), RED)]
    animated = b.encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    parts = b.webp_chunks(animated)
    first_frame_only = [parts[0], parts[1], parts[2]]  # VP8X, ANIM, the first ANMF
    return [
        ValidCase(
            "webp_lossy",
            b.encode(halves, "WEBP", quality=95),
            (16, 8),
            probes=(((2, 4), RED), ((13, 4), BLUE)),
            tolerance=20,
        ),
        ValidCase(
            "webp_lossless",
            b.encode(halves, "WEBP", lossless=True),
            (16, 8),
            probes=(((2, 4), RED), ((13, 4), BLUE)),
        ),
        ValidCase(
            "webp_alpha_on_white",
            b.encode(alpha, "WEBP", lossless=True),
            (4, 4),
            probes=(((0, 0), WHITE), ((1, 1), (10, 20, 30))),
        ),
        ValidCase(
            "webp_exif_rotate_6",
            b.encode(halves, "WEBP", lossless=True, exif=b.exif_orientation(6)),
            (8, 16),
            probes=(((4, 2), RED), ((4, 13), BLUE)),
        ),
        ValidCase(
            "webp_animation_of_one_frame",
            b.webp_rebuild(first_frame_only),
            (8, 8),
            probes=(((4, 4), GREEN),),
        ),
    ]


def _masks() -> list[ValidCase]:
    strokes = Image.new("RGBA", (8, 8), (255, 255, 255, 0))
    strokes.paste((255, 255, 255, 255), (2, 2, 6, 6))
    soft = Image.new("L", (4, 1))
    for x, value in enumerate([100, 127, 128, 200]):
        soft.putpixel((x, 0), value)
    square = Image.new("L", (32, 32), 0)
    square.paste(255, (8, 8, 24, 24))
    tall = b.halves((24, 32), 255, 0, mode="L")  # left half white, shown on top after 6
    colours = Image.new("RGB", (2, 1), (255, 0, 0))
    colours.putpixel((1, 0), (255, 255, 0))
    semi = Image.new("RGBA", (2, 1), (255, 255, 255, 200))
    semi.putpixel((1, 0), (255, 255, 255, 100))
    plte = b.chunk(b"PLTE", bytes([0, 0, 0, 255, 255, 255]))

    def mask(name: str, data: bytes, size: tuple[int, int], probes: tuple) -> ValidCase:  # type: ignore[type-arg]
        return ValidCase(name, data, size, kind="mask", probes=probes)

    return [
        mask(
            "mask_rgba_strokes",
            b.encode(strokes, "PNG"),
            (8, 8),
            (((0, 0), 0), ((3, 3), 255), ((7, 7), 0)),
        ),
        mask(
            "mask_soft_binarised",
            b.encode(soft, "PNG"),
            (4, 1),
            (((0, 0), 0), ((1, 0), 0), ((2, 0), 255), ((3, 0), 255)),
        ),
        mask("mask_1bit", b.png(8, 1, 1, 0, [b"\x0f"]), (8, 1), (((0, 0), 0), ((7, 0), 255))),
        mask(
            "mask_palette",
            b.png(2, 1, 8, 3, [b"\x01\x00"], before_idat=plte),
            (2, 1),
            (((0, 0), 255), ((1, 0), 0)),
        ),
        mask(
            "mask_jpeg_noise_binarised",
            b.encode(square, "JPEG", quality=60),
            (32, 32),
            (((0, 0), 0), ((16, 16), 255), ((4, 28), 0)),
        ),
        mask(
            "mask_exif_rotate_6",
            b.encode(tall, "PNG", exif=b.exif_orientation(6)),
            (32, 24),
            (((16, 2), 255), ((16, 21), 0)),
        ),
        mask(
            "mask_la",
            b.png(2, 1, 8, 4, [bytes([255, 0, 255, 255])]),
            (2, 1),
            (((0, 0), 0), ((1, 0), 255)),
        ),
        mask("mask_colour_luma", b.encode(colours, "PNG"), (2, 1), (((0, 0), 0), ((1, 0), 255))),
        mask("mask_semi_transparent", b.encode(semi, "PNG"), (2, 1), (((0, 0), 255), ((1, 0), 0))),
        mask(
            "mask_gray16",
            b.png(2, 1, 16, 0, [struct.pack(">2H", 0x7000, 0x9000)]),
            (2, 1),
            (((0, 0), 0), ((1, 0), 255)),
        ),
    ]
