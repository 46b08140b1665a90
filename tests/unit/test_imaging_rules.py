"""The documented decoding rules (docs/images.md), one by one, with exact expectations."""

from __future__ import annotations

import base64
import io
import struct
import warnings
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image, ImageOps

from sdserve.domain.errors import InvalidRequest
from sdserve.imaging import ImageLimits, decode_base64, decode_image, decode_mask
from tests.corpus import build as b
from tests.corpus.images import valid_images

# Pillow warns (once) about the deliberately corrupt EXIF block; we ignore that EXIF.
pytestmark = pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")

LIMITS = ImageLimits(max_bytes=1 << 20, max_pixels=1 << 20)


def _image(data: bytes, limits: ImageLimits = LIMITS, field: str = "image") -> Image.Image:
    return decode_image(data, field=field, limits=limits)


def _problem(exc: pytest.ExceptionInfo[InvalidRequest]) -> tuple[str, str, object]:
    [problem] = exc.value.problems
    return problem.field, problem.message, problem.limit


# --- orientation ---


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillows_exif_transpose(orientation: int) -> None:
    source = b.noise("RGB", (5, 3), seed=orientation)
    data = b.encode(source, "PNG", exif=b.exif_orientation(orientation))
    expected = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    out = _image(data)
    assert out.size == expected.size == ((5, 3) if orientation <= 4 else (3, 5))
    assert out.tobytes() == expected.tobytes()
    if orientation > 1:
        assert out.tobytes() != source.tobytes() or out.size != source.size


def test_xmp_orientation_is_applied_too() -> None:
    xmp = (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/'
        b'02/22-rdf-syntax-ns#"><rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" '
        b'tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>'
    )
    source = b.halves((16, 8), (255, 0, 0), (0, 0, 255))
    out = _image(b.encode(source, "WEBP", lossless=True, xmp=xmp))
    assert out.size == (8, 16)
    assert out.getpixel((4, 2)) == (255, 0, 0)


# --- alpha ---


@pytest.mark.parametrize("alpha", [0, 1, 64, 127, 128, 200, 254, 255])
def test_alpha_is_composited_onto_white(alpha: int) -> None:
    colour = (200, 40, 0)
    data = b.encode(Image.new("RGBA", (2, 2), (*colour, alpha)), "PNG")
    got = _image(data).getpixel((1, 1))
    assert isinstance(got, tuple)
    want = [round(c * alpha / 255 + 255 * (1 - alpha / 255)) for c in colour]
    assert all(abs(g - w) <= 1 for g, w in zip(got, want, strict=True)), (got, want)


@pytest.mark.parametrize("alpha", [0, 50, 127, 128, 255])
def test_mask_alpha_means_keep_and_soft_masks_survive_without_binarising(alpha: int) -> None:
    data = b.encode(Image.new("RGBA", (2, 2), (255, 255, 255, alpha)), "PNG")
    soft = decode_mask(data, field="mask", limits=LIMITS, binarize=False) if alpha else None
    if soft is not None:
        value = soft.getpixel((0, 0))
        assert isinstance(value, int) and abs(value - alpha) <= 1
    if alpha >= 128:
        assert decode_mask(data, field="mask", limits=LIMITS).getpixel((0, 0)) == 255
    else:  # binarised to all black: refused, nothing to repaint
        with pytest.raises(InvalidRequest, match="entirely black"):
            decode_mask(data, field="mask", limits=LIMITS)


# --- bit depths and colour spaces ---


def test_every_16_bit_grey_value_is_scaled_with_rounding() -> None:
    values = struct.pack(">65536H", *range(65536))
    rows = [values[i : i + 512] for i in range(0, len(values), 512)]
    out = _image(b.png(256, 256, 16, 0, rows))
    got = out.getchannel(0).tobytes()
    want = bytes(round(v * 255 / 65535) for v in range(65536))
    assert got == want


def test_cmyk_jpeg_colours_are_roughly_right() -> None:
    inks = {
        (0, 0, 0, 0): (255, 255, 255),
        (0, 255, 255, 0): (255, 0, 0),
        (255, 0, 255, 0): (0, 255, 0),
        (255, 255, 0, 0): (0, 0, 255),
        (0, 0, 0, 255): (0, 0, 0),
        (0, 0, 0, 128): (127, 127, 127),
    }
    for ink, rgb in inks.items():
        out = _image(b.encode(Image.new("CMYK", (16, 16), ink), "JPEG", quality=100))
        got = out.getpixel((8, 8))
        assert isinstance(got, tuple)
        assert all(abs(g - w) <= 4 for g, w in zip(got, rgb, strict=True)), (ink, got)


# --- limits ---


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_pixel_limit_is_inclusive_and_checked_per_format(fmt: str) -> None:
    limits = ImageLimits(max_bytes=1 << 20, max_pixels=100)
    assert _image(b.encode(Image.new("RGB", (10, 10)), fmt), limits).size == (10, 10)
    assert _image(b.encode(Image.new("RGB", (100, 1)), fmt), limits).size == (100, 1)
    with pytest.raises(InvalidRequest) as caught:
        _image(b.encode(Image.new("RGB", (101, 1)), fmt), limits)
    assert _problem(caught) == (
        "image",
        "is 101x1 = 101 pixels; the limit is 100 pixels (width x height)",
        100,
    )


def test_byte_limit_is_inclusive() -> None:
    data = b.encode(Image.new("RGB", (4, 4)), "PNG")
    assert _image(data, ImageLimits(max_bytes=len(data), max_pixels=100)).size == (4, 4)
    with pytest.raises(InvalidRequest) as caught:
        _image(data, ImageLimits(max_bytes=len(data) - 1, max_pixels=100))
    assert _problem(caught)[2] == len(data) - 1


def test_huge_headers_are_refused_without_pillows_bomb_warning() -> None:
    bomb = b.png(100_000, 100_000, 8, 0, [b""], idat=b"\x78\x9c\x03\x00\x00\x00\x00\x01")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(InvalidRequest, match="10000000000 pixels"):
            _image(bomb)
    assert not [w for w in seen if issubclass(w.category, Image.DecompressionBombWarning)]


# --- masks ---


def test_mask_size_is_compared_after_its_own_exif_rotation() -> None:
    stored = b.halves((24, 32), 255, 0, mode="L")
    rotated = b.encode(stored, "PNG", exif=b.exif_orientation(6))
    mask = decode_mask(rotated, field="mask", limits=LIMITS, image_size=(32, 24))
    assert mask.size == (32, 24)
    with pytest.raises(InvalidRequest) as caught:
        decode_mask(b.encode(stored, "PNG"), field="mask", limits=LIMITS, image_size=(32, 24))
    assert _problem(caught) == (
        "mask",
        "must be the same size as image: image is 32x24, mask is 24x32",
        [32, 24],
    )


def test_mask_is_named_by_the_field_the_client_used() -> None:
    data = b.encode(Image.new("L", (8, 8), 255), "PNG")
    with pytest.raises(InvalidRequest) as caught:
        decode_mask(
            data, field="mask_image", limits=LIMITS, image_size=(4, 4), image_field="init_images[0]"
        )
    assert _problem(caught)[:2] == (
        "mask_image",
        "must be the same size as init_images[0]: init_images[0] is 4x4, mask_image is 8x8",
    )


# --- base64 ---


def test_base64_forms_clients_send_all_decode_to_the_same_bytes() -> None:
    data = b.encode(b.noise("RGB", (9, 7)), "PNG")
    plain = base64.b64encode(data).decode()
    wrapped = "\n".join(plain[i : i + 76] for i in range(0, len(plain), 76))
    forms = [
        plain,
        "  " + plain + "\r\n",
        wrapped,
        plain.rstrip("="),
        base64.urlsafe_b64encode(data).decode(),
        "data:image/png;base64," + plain,
        "DATA:image/gif;name=x.png;BASE64," + wrapped,  # declared type is ignored
    ]
    for text in forms:
        assert decode_base64(text, field="image", max_bytes=1 << 20) == data


def test_base64_size_limit_is_checked_before_decoding() -> None:
    data = bytes(range(255)) * 4  # a multiple of 3: no padding
    text = base64.b64encode(data).decode()
    assert decode_base64(text, field="image", max_bytes=len(data)) == data
    # An invalid character at the end is never reached: the size is refused first.
    with pytest.raises(InvalidRequest) as caught:
        decode_base64(text + "AAAA!", field="init_images[0]", max_bytes=len(data))  # +3 bytes
    assert _problem(caught) == (
        "init_images[0]",
        f"is {len(data) + 3} bytes after base64 decoding; the limit is {len(data)} bytes",
        len(data),
    )


def test_format_comes_from_the_bytes_not_the_declared_type() -> None:
    png = b.encode(Image.new("RGB", (3, 3), (1, 2, 3)), "PNG")
    text = "data:image/jpeg;base64," + base64.b64encode(png).decode()
    assert _image(decode_base64(text, field="image", max_bytes=1 << 20)).getpixel((1, 1)) == (
        1,
        2,
        3,
    )


# --- the Pillow boundary ---

PILLOW_ERRORS = [
    OSError("broken data stream"),
    SyntaxError("not a PNG file"),
    ValueError("bad value"),
    struct.error("unpack requires a buffer"),
    EOFError(),
    Image.DecompressionBombError("too big"),
    MemoryError(),
    ZeroDivisionError("division by zero"),
    IndexError("index out of range"),
    KeyError("x"),
    TypeError("bad type"),
    RuntimeError("libwebp failed"),
]


@pytest.mark.parametrize("error", PILLOW_ERRORS, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("stage", ["_open", "load"])
def test_anything_pillow_raises_becomes_a_422(
    error: Exception, stage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import PngImagePlugin

    def fail(*_: object) -> None:
        raise error

    monkeypatch.setattr(PngImagePlugin.PngImageFile, stage, fail)
    with pytest.raises(InvalidRequest) as caught:
        _image(b.encode(Image.new("RGB", (4, 4)), "PNG"), field="init_images[0]")
    field, message, _ = _problem(caught)
    assert field == "init_images[0]"
    assert message.startswith(
        "PNG too large" if isinstance(error, MemoryError) else "corrupt PNG: "
    )


def test_running_out_of_memory_while_converting_is_a_422_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_memory(*_: object, **__: object) -> None:
        raise MemoryError

    grey = b.encode(Image.new("L", (4, 4), 9), "PNG")
    monkeypatch.setattr(Image.Image, "convert", no_memory)
    with pytest.raises(InvalidRequest) as caught:
        _image(grey)
    assert _problem(caught)[1] == "PNG too large to decode now (out of memory)"


# --- misc ---


def test_field_name_is_passed_through_untouched() -> None:
    with pytest.raises(InvalidRequest) as caught:
        _image(b"GIF89a" + bytes(20), field="init_images[3]")
    assert caught.value.as_dict()["fields"] == [
        {
            "field": "init_images[3]",
            "message": "unsupported image format GIF; use PNG, JPEG or WebP",
            "limit": ["png", "jpeg", "webp"],
        }
    ]


def test_decoding_from_many_threads_gives_the_same_pixels() -> None:
    cases = [c for c in valid_images(max_pixels=64 * 64) if c.kind == "image"]
    limits = ImageLimits(max_bytes=1 << 20, max_pixels=64 * 64)
    expected = [decode_image(c.data, field="image", limits=limits).tobytes() for c in cases]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            got = list(
                pool.map(
                    lambda c: decode_image(c.data, field="image", limits=limits).tobytes(), cases
                )
            )
            assert got == expected
