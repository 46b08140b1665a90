"""The stored form of inputs (canonical PNG, pixel hash, loading it back) and a fuzz of
the decoder: mutated real files either decode or are a 422, nothing else."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from sdserve.domain.errors import CorruptInput, InvalidRequest
from sdserve.imaging import (
    ImageLimits,
    decode_image,
    decode_mask,
    encode_png,
    load_stored,
    pixel_sha256,
)
from tests.corpus import build as b
from tests.corpus.images import valid_images

LIMITS = ImageLimits(max_bytes=1 << 20, max_pixels=256 * 256)


def test_encode_png_writes_pixels_and_nothing_else() -> None:
    image = b.noise("RGB", (20, 10))
    image.info.update(
        {
            "icc_profile": b"\x00" * 200,
            "transparency": (1, 2, 3),
            "dpi": (300, 300),
            "exif": b.exif_orientation(6),
            "comment": b"hi",
        }
    )
    data = encode_png(image)
    assert [kind for kind, _ in b.chunks(data)] == [b"IHDR", b"IDAT", b"IEND"]
    assert encode_png(image) == data  # deterministic
    back = load_stored(data)
    assert (back.mode, back.size, back.tobytes()) == ("RGB", (20, 10), image.tobytes())
    mask = Image.new("L", (5, 5), 255)
    assert load_stored(encode_png(mask)).mode == "L"


def test_encode_png_takes_only_normalised_modes() -> None:
    with pytest.raises(ValueError, match="RGBA"):
        encode_png(Image.new("RGBA", (2, 2)))


def test_pixel_hash_follows_the_pixels_not_the_file() -> None:
    image = b.noise("RGB", (16, 16))
    as_png = decode_image(b.encode(image, "PNG"), field="image", limits=LIMITS)
    as_webp = decode_image(b.encode(image, "WEBP", lossless=True), field="image", limits=LIMITS)
    with_meta = decode_image(
        b.encode(image, "PNG", exif=b.exif_orientation(1), icc_profile=b"x" * 64),
        field="image",
        limits=LIMITS,
    )
    assert pixel_sha256(as_png) == pixel_sha256(as_webp) == pixel_sha256(with_meta)
    changed = as_png.copy()
    changed.putpixel((0, 0), (0, 0, 1) if as_png.getpixel((0, 0)) != (0, 0, 1) else (0, 0, 2))
    assert pixel_sha256(changed) != pixel_sha256(as_png)
    # The same bytes under another shape or mode are other pixels.
    raw = bytes(48)
    shapes = {
        pixel_sha256(Image.frombytes(m, s, raw))
        for m, s in (("RGB", (4, 4)), ("RGB", (2, 8)), ("L", (8, 6)))
    }
    assert len(shapes) == 3


def test_load_stored_refuses_damaged_or_foreign_blobs() -> None:
    good = encode_png(b.noise("RGB", (8, 8)))
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x01
    cases = {
        "not a PNG": b.encode(Image.new("RGB", (4, 4)), "JPEG"),
        "damaged": bytes(flipped),
        "cut": good[:-20],
        "mode RGBA": b.encode(Image.new("RGBA", (4, 4)), "PNG"),
    }
    for expected, blob in cases.items():
        with pytest.raises(CorruptInput) as caught:
            load_stored(blob)
        assert expected.split()[-1] in caught.value.message or "damaged" in caught.value.message
        assert caught.value.type == "corrupt_input" and caught.value.retryable is False


# --- fuzz: real files with random damage ---

SEEDS = [c.data for c in valid_images(max_pixels=64 * 64) if len(c.data) < 50_000] + [
    b.encode(b.noise("RGB", (24, 16)), fmt, **opts)
    for fmt, opts in (
        ("PNG", {}),
        ("JPEG", {}),
        ("JPEG", {"progressive": True}),
        ("WEBP", {}),
        ("WEBP", {"lossless": True}),
    )
]


def _mutate(data: bytes, seed: int) -> bytes:
    rng = random.Random(seed)
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(4)
        pos = rng.randrange(len(out)) if out else 0
        if op == 0 and out:
            out[pos] = rng.randrange(256)
        elif op == 1:
            del out[pos:]
        elif op == 2:
            out[pos:pos] = rng.randbytes(rng.randint(1, 12))
        else:
            out[pos : pos + 4] = rng.randbytes(4)
    if rng.random() < 0.5:  # keep CRCs and RIFF size right so Pillow gets to decode
        out = bytearray(_fix_container(bytes(out)))
    return bytes(out)


def _fix_container(data: bytes) -> bytes:
    import struct
    import zlib

    if data[:4] == b"RIFF" and len(data) >= 8:
        return data[:4] + struct.pack("<I", len(data) - 8) + data[8:]
    if not data.startswith(b.PNG_SIGNATURE):
        return data
    out = bytearray(data)
    pos = 8
    while pos + 12 <= len(out):
        (length,) = struct.unpack_from(">I", out, pos)
        if pos + 12 + length > len(out):
            break
        struct.pack_into(">I", out, pos + 8 + length, zlib.crc32(out[pos + 4 : pos + 8 + length]))
        pos += 12 + length
    return bytes(out)


@settings(
    max_examples=400, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.integers(0, len(SEEDS) - 1), st.integers(0, 2**32), st.booleans())
def test_damaged_files_decode_or_are_a_422_and_nothing_else(
    which: int, seed: int, as_mask: bool
) -> None:
    data = _mutate(SEEDS[which], seed)
    field = "mask" if as_mask else "image"
    try:
        if as_mask:
            out = decode_mask(data, field=field, limits=LIMITS)
            assert out.mode == "L"
        else:
            out = decode_image(data, field=field, limits=LIMITS)
            assert out.mode == "RGB"
        assert out.width * out.height <= LIMITS.max_pixels
    except InvalidRequest as exc:
        assert [p.field for p in exc.problems] == [field]
