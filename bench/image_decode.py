"""Input-image decoding cost next to plain Pillow (issue 6): prints ratios, asserts nothing.

    PYTHONPATH=src .venv/bin/python -m bench.image_decode [--size 2048] [--repeat 15]

"Pillow" is the least a server must do anyway: open, load, convert to RGB (for RGBA
that drops alpha, cheaper than flattening it onto white as we do). "strict" is
``decode_image`` (magic sniff, container walk with CRCs, header limits, one decode,
EXIF orientation, normalisation). Also timed: ``encode_png`` (the stored input blob),
``pixel_sha256`` and ``decode_base64`` for the same bytes.
"""

from __future__ import annotations

import argparse
import base64
import io
import random
import statistics
import time
from collections.abc import Callable

from PIL import Image

from sdserve.imaging import (
    ImageLimits,
    decode_base64,
    decode_image,
    encode_png,
    pixel_sha256,
)


def photo_like(size: int) -> Image.Image:
    """Smooth gradients plus grain: compresses like a photo, not like a flat fill."""
    base = Image.radial_gradient("L").resize((size, size)).convert("RGB")
    tint = Image.linear_gradient("L").resize((size, size))
    colour = Image.merge(
        "RGB", (base.getchannel(0), tint, tint.transpose(Image.Transpose.ROTATE_90))
    )
    grain = Image.frombytes("RGB", (size, size), random.Random(0).randbytes(size * size * 3))
    return Image.blend(colour, grain, 0.08)


def timed(fn: Callable[[], object], repeat: int) -> float:
    return paired([fn], repeat)[0]


def paired(fns: list[Callable[[], object]], repeat: int) -> list[float]:
    """Median seconds of each, run alternately so load from elsewhere hits all alike."""
    samples: list[list[float]] = [[] for _ in fns]
    for fn in fns:
        fn()  # warm
    for _ in range(repeat):
        for fn, out in zip(fns, samples, strict=True):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return [statistics.median(out) for out in samples]


def pillow(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image.convert("RGB") if image.mode != "RGB" else image


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    size = args.size
    limits = ImageLimits(max_bytes=64 * 1024 * 1024, max_pixels=size * size)
    image = photo_like(size)
    rgba = image.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((size, size)))
    inputs: dict[str, bytes] = {}
    for name, source, fmt, options in (
        ("jpeg q90", image, "JPEG", {"quality": 90}),
        ("png rgb", image, "PNG", {}),
        ("png rgba", rgba, "PNG", {}),
        ("webp q90", image, "WEBP", {"quality": 90}),
    ):
        buf = io.BytesIO()
        source.save(buf, format=fmt, **options)
        inputs[name] = buf.getvalue()

    print(f"{size}x{size}, median of {args.repeat}")
    print(f"{'input':<10} {'bytes':>10} {'pillow ms':>10} {'strict ms':>10} {'ratio':>6}")
    for name, data in inputs.items():
        plain, strict = paired(
            [
                lambda d=data: pillow(d),  # type: ignore[misc]
                lambda d=data: decode_image(d, field="image", limits=limits),  # type: ignore[misc]
            ],
            args.repeat,
        )
        print(
            f"{name:<10} {len(data):>10} {plain * 1000:>10.1f} {strict * 1000:>10.1f} "
            f"{strict / plain:>6.2f}"
        )
    decoded = decode_image(inputs["jpeg q90"], field="image", limits=limits)
    text = base64.b64encode(inputs["jpeg q90"]).decode()
    print(f"encode_png     {timed(lambda: encode_png(decoded), args.repeat) * 1000:8.1f} ms")
    print(f"pixel_sha256   {timed(lambda: pixel_sha256(decoded), args.repeat) * 1000:8.1f} ms")
    b64 = timed(lambda: decode_base64(text, field="image", max_bytes=limits.max_bytes), args.repeat)
    print(f"decode_base64  {b64 * 1000:8.1f} ms ({len(text)} chars)")


if __name__ == "__main__":
    main()
