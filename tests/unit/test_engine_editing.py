"""The torch-free editing rules: tile plans, seam blending, padding, mask compositing."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from sdserve.engine.editing import (
    Blender,
    TilePlan,
    blur_mask,
    keep_unmasked,
    pad_to,
    tile_starts,
)


@given(
    multiple=st.sampled_from([1, 2, 8, 16, 32]),
    units=st.integers(1, 80),
    tile_units=st.integers(2, 24),
)
def test_tile_starts_cover_overlap_and_align(multiple: int, units: int, tile_units: int) -> None:
    length, tile = units * multiple, tile_units * multiple
    overlap = max(multiple, tile // 4 // multiple * multiple)
    starts = tile_starts(length, min(tile, length), overlap, multiple)
    size = min(tile, length)
    assert starts[0] == 0 and starts[-1] + size == length
    assert all(s % multiple == 0 for s in starts)
    assert all(b > a for a, b in pairwise(starts))
    # Neighbours overlap by at least `overlap`, so every pixel is covered.
    assert all(a + size - b >= overlap for a, b in pairwise(starts))
    if length > tile:  # no more tiles than needed
        assert len(starts) == -(-(length - overlap) // (tile - overlap))


def test_plan_is_one_tile_when_the_input_fits() -> None:
    plan = TilePlan.make(48, 40, 64, 8)
    (tile,) = plan
    assert (tile.x, tile.y, tile.width, tile.height) == (0, 0, 48, 40)


def test_plan_bounds_every_tile() -> None:
    plan = TilePlan.make(100, 36, 32, 2)  # overlap 8: four columns, two rows
    tiles = list(plan)
    assert (plan.xs, plan.ys) == ((0, 22, 44, 68), (0, 4))
    assert len(tiles) == len(plan) == 4 * 2
    assert all(t.width <= 32 and t.height <= 32 for t in tiles)
    assert [t.index for t in tiles] == list(range(len(tiles)))


def _tile_pixels(full: np.ndarray, plan: TilePlan, scale: int) -> Blender:
    blender = Blender(plan, scale)
    for t in plan:
        ys = slice(t.y * scale, (t.y + t.height) * scale)
        xs = slice(t.x * scale, (t.x + t.width) * scale)
        blender.add(t, full[ys, xs])
    return blender


def test_blending_tiles_that_agree_gives_the_image_back() -> None:
    """Seamless: where tiles agree on their overlaps the blend is exactly the image
    (weights are complementary ramps that sum to one)."""
    rng = np.random.default_rng(0)
    plan = TilePlan.make(40, 24, 16, 2)
    assert len(plan) > 1
    full = rng.random((24 * 4, 40 * 4, 3), dtype=np.float32)
    out = np.asarray(_tile_pixels(full, plan, 4).image())
    expected = (full * 255).round().astype(np.uint8)
    assert np.abs(out.astype(int) - expected).max() <= 1  # float32 division rounding


def test_blending_feathers_disagreeing_tiles() -> None:
    """Two tiles that disagree (0 vs 1) meet in a monotone ramp, not a hard edge."""
    plan = TilePlan.make(32, 8, 16, 2)  # overlap 4: columns at 0, 8, 16
    blender = Blender(plan, 1)
    for t in plan:
        value = 0.0 if t.x == 0 else 1.0
        blender.add(t, np.full((t.height, t.width, 3), value, dtype=np.float32))
    row = np.asarray(blender.image())[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255
    assert all(b >= a for a, b in pairwise(row))
    assert max(b - a for a, b in pairwise(row)) < 128  # no hard seam


def test_single_tile_is_quantised_like_diffusers() -> None:
    pixels = np.linspace(0, 1, 8 * 8 * 3, dtype=np.float32).reshape(8, 8, 3)
    plan = TilePlan.make(8, 8, 64, 8)
    blender = Blender(plan, 1)
    blender.add(next(iter(plan)), pixels)
    assert np.array_equal(np.asarray(blender.image()), (pixels * 255).round().astype("uint8"))


def test_pad_to_repeats_edges() -> None:
    arr = np.arange(5 * 3 * 3, dtype=np.uint8).reshape(5, 3, 3)
    out = np.asarray(pad_to(Image.fromarray(arr), 4, 8))
    assert out.shape == (8, 4, 3)
    assert np.array_equal(out[:5, :3], arr)
    assert np.array_equal(out[7, :3], arr[4]) and np.array_equal(out[:5, 3], arr[:, 2])
    same = Image.fromarray(arr)
    assert pad_to(same, 3, 5) is same


def test_keep_unmasked_is_exact_outside_the_blurred_mask() -> None:
    rng = np.random.default_rng(1)
    original = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    generated = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (8, 8, 24, 24))
    soft = blur_mask(mask, 3)
    out = np.asarray(keep_unmasked(generated, original, soft))
    m = np.asarray(soft)
    assert 0 < (m == 0).sum() < m.size
    assert np.array_equal(out[m == 0], np.asarray(original)[m == 0])
    assert np.array_equal(out[m == 255], np.asarray(generated)[m == 255])
    # The blur widens the repainted area: some pixels outside the hard mask now mix.
    assert ((m > 0) & (np.asarray(mask) == 0)).any()
    assert blur_mask(mask, 0) is mask
