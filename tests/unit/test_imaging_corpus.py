"""Replay the image corpus through the decoding layer: every malformed input is an
InvalidRequest naming its field (never another exception), every tricky valid input
decodes to the expected size, mode and pixels."""

from __future__ import annotations

import pytest
from PIL import Image, ImageFile

from sdserve.domain.errors import InvalidRequest
from sdserve.imaging import ImageLimits, decode_base64, decode_image, decode_mask
from tests.corpus.cases import Case, Payload, ValidCase
from tests.corpus.images import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    malformed_images,
    valid_images,
)

# Pillow warns (once) about the deliberately corrupt EXIF block; we ignore that EXIF.
pytestmark = pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")

LIMITS = ImageLimits(max_bytes=DEFAULT_MAX_BYTES, max_pixels=DEFAULT_MAX_PIXELS)
MALFORMED = malformed_images()
VALID = valid_images()


def _bytes(payload: Payload, field: str) -> bytes:
    if isinstance(payload, str):
        return decode_base64(payload, field=field, max_bytes=LIMITS.max_bytes)
    return payload


def _submit(case: Case) -> None:
    """What the API does with one request's image (and mask)."""
    image = decode_image(_bytes(case.image, "image"), field="image", limits=LIMITS)
    if case.mask is not None:
        decode_mask(_bytes(case.mask, "mask"), field="mask", limits=LIMITS, image_size=image.size)


def test_the_corpus_is_big_and_covers_every_kind() -> None:
    assert len(MALFORMED) >= 50
    names = " ".join(case.name for case in MALFORMED)
    for kind in (
        "png_cut",
        "jpeg_cut",
        "webp_cut",
        "bomb",
        "apng",
        "webp_animated",
        "gif",
        "bmp",
        "tiff",
        "crc",
        "palette",
        "png16",
        "cmyk",
        "zero",
        "b64",
        "mask",
    ):
        assert kind in names, kind
    assert any(isinstance(case.image, str) for case in MALFORMED)
    assert sum(case.field == "mask" for case in MALFORMED) >= 5


@pytest.mark.parametrize("case", MALFORMED, ids=lambda c: c.name)
def test_malformed_input_is_a_422_naming_the_field(case: Case) -> None:
    with pytest.raises(InvalidRequest) as caught:  # any other exception type fails here
        _submit(case)
    error = caught.value
    assert error.status == 422
    assert [p.field for p in error.problems] == [case.field]
    assert case.fragment in error.problems[0].message
    assert error.as_dict()["fields"][0]["field"] == case.field


@pytest.mark.parametrize("case", VALID, ids=lambda c: c.name)
def test_valid_input_decodes_to_the_documented_pixels(case: ValidCase) -> None:
    if case.kind == "image":
        out = decode_image(case.data, field="image", limits=LIMITS)
    else:
        out = decode_mask(case.data, field="mask", limits=LIMITS, image_size=case.size)
    assert isinstance(out, Image.Image)
    assert (out.size, out.mode) == (case.size, case.mode)
    assert out.info == {}
    for xy, want in case.probes:
        got = out.getpixel(xy)
        got_t = got if isinstance(got, tuple) else (got,)
        want_t = want if isinstance(want, tuple) else (want,)
        assert len(got_t) == len(want_t)
        assert all(abs(g - w) <= case.tolerance for g, w in zip(got_t, want_t, strict=True)), (
            f"{xy}: got {got}, want {want} ±{case.tolerance}"
        )


@pytest.mark.parametrize("case", VALID, ids=lambda c: c.name)
def test_valid_input_also_decodes_from_base64(case: ValidCase) -> None:
    import base64

    text = "data:image/whatever;base64," + base64.b64encode(case.data).decode()
    data = decode_base64(text, field="init_images[0]", max_bytes=LIMITS.max_bytes)
    assert data == case.data


TRUNCATIONS = [c for c in MALFORMED if "truncated" in c.fragment and isinstance(c.image, bytes)]


@pytest.mark.parametrize("case", TRUNCATIONS, ids=lambda c: c.name)
def test_truncation_is_caught_even_if_someone_sets_load_truncated_images(
    case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    # We never set the flag; but a library in the same process might. Our container
    # checks must not depend on it.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(InvalidRequest) as caught:
        _submit(case)
    assert case.fragment in caught.value.problems[0].message


def test_decoding_leaves_pillow_globals_alone() -> None:
    before = (ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS)
    for case in MALFORMED[:40]:
        with pytest.raises(InvalidRequest):
            _submit(case)
    assert before == (ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS)
    assert before[0] is False
