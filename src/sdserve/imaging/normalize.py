"""Bring any decoded mode to the two the engine takes: 8-bit RGB images, 8-bit L masks.

Rules (docs/images.md):
- 16-bit samples are scaled, not clipped: round(v * 255 / 65535). Pillow's own
  ``convert("L")`` clips I;16 to 255, which turns a 16-bit grey PNG white.
- Alpha (an alpha channel, a palette tRNS or a colour key) is flattened: images are
  composited onto white; masks take the luminance composited onto black, so a
  transparent mask pixel means "keep".
- Masks are binarised at 128 unless asked not to (white = repaint, black = keep).
"""

from __future__ import annotations

from PIL import Image, ImageMath

IMAGE_BACKGROUND = 255  # white, for images
MASK_BACKGROUND = 0  # black ("keep"), for masks
MASK_THRESHOLD = 128

_WIDE_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_GREY_MODES = frozenset({"1", "L", "LA", "La"})
_BINARY_LUT = [0] * MASK_THRESHOLD + [255] * (256 - MASK_THRESHOLD)


def to_rgb(image: Image.Image) -> Image.Image:
    image = _eight_bit(image)
    if _has_alpha(image):
        return _flatten(image, IMAGE_BACKGROUND, "RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def to_mask(image: Image.Image, *, binarize: bool = True) -> Image.Image:
    image = _eight_bit(image)
    if _has_alpha(image):
        image = _flatten(image, MASK_BACKGROUND, "L")
    elif image.mode != "L":
        image = image.convert("L")  # ITU-R 601-2 luma for colour masks
    if binarize:
        image = image.point(_BINARY_LUT)
    return image


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in _ALPHA_MODES or "transparency" in image.info


def _flatten(image: Image.Image, background: int, out_mode: str) -> Image.Image:
    if image.mode not in _ALPHA_MODES:
        # A palette tRNS or a colour key becomes a real alpha band on the way.
        image = image.convert("LA" if image.mode in _GREY_MODES else "RGBA")
    # Blend in L when the source is grey or the result is a mask: a third of the work,
    # and luminance commutes with compositing onto a grey background.
    grey = out_mode == "L" or image.mode in _GREY_MODES
    work = "LA" if grey else "RGBA"
    source = image if image.mode == work else image.convert(work)
    fill = background if grey else (background, background, background)
    flat = Image.new("L" if grey else "RGB", source.size, fill)
    flat.paste(source, mask=source)  # one blending pass: c*a + bg*(1-a), alpha from source
    return flat if flat.mode == out_mode else flat.convert(out_mode)


def _eight_bit(image: Image.Image) -> Image.Image:
    if image.mode not in _WIDE_MODES:
        return image
    wide = image if image.mode == "I" else image.convert("I")
    grey = wide.point(lambda v: v * (255 / 65535) + 0.5).convert("L")
    key = image.info.get("transparency")
    if not isinstance(key, int):
        return grey
    # A 16-bit colour key: the pixels equal to it are transparent. Compared before
    # scaling, since many 16-bit values share one 8-bit value.
    opaque = ImageMath.lambda_eval(lambda a: (a["a"] != key) * 255, a=wide)
    assert isinstance(opaque, Image.Image)
    return Image.merge("LA", (grey, opaque.convert("L")))
