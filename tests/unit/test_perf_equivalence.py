"""The fast paths give the same numbers as the straightforward ones (issue #6): batched SSIM == scikit-image.

No timing is asserted here; ``benchmarks/`` measures speed. These tests pin the values the verdict is made of.
"""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image
from skimage.metrics import structural_similarity

from pytest_featviz import compare, png, render
from pytest_featviz.compare import WINDOW, ssim_batch, upscale_to_window

TOLERANCE = 1e-6


def _skimage_loop(g: npt.NDArray[np.generic], c: npt.NDArray[np.generic], data_range: float) -> npt.NDArray[np.float64]:
    g, c = upscale_to_window(g), upscale_to_window(c)
    return np.array(
        [
            structural_similarity(g[i].astype(np.float64), c[i].astype(np.float64), data_range=data_range, win_size=7)
            for i in range(len(g))
        ]
    )


def _pair(shape: tuple[int, int, int], dtype: type[np.generic], seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max
    golden_tiles = rng.integers(0, top, size=shape, endpoint=True).astype(dtype)
    noise = rng.normal(0.0, 0.05 * top, size=shape)
    current = np.clip(golden_tiles + noise, 0, top).astype(dtype)
    return golden_tiles, current


@pytest.mark.parametrize(
    "shape",
    [(16, 112, 112), (16, 56, 56), (3, 7, 7), (5, 1, 9), (2, 3, 3), (4, 1, 1), (1, 9, 40), (70, 13, 11)],
    ids=lambda s: "x".join(map(str, s)),
)
def test_batched_ssim_equals_skimage_for_8_bit_tiles(shape: tuple[int, int, int]) -> None:
    golden_tiles, current = _pair(shape, np.uint8, seed=sum(shape))
    fast = ssim_batch(golden_tiles, current, 255.0)
    assert fast.shape == (shape[0],)
    np.testing.assert_allclose(fast, _skimage_loop(golden_tiles, current, 255.0), rtol=0, atol=TOLERANCE)


def test_batched_ssim_equals_skimage_for_16_bit_tiles_at_the_top_of_the_range() -> None:
    # 65535**2 * 49 overflows int32: the 16-bit path must sum in int64.
    golden_tiles, current = _pair((6, 30, 30), np.uint16, seed=3)
    golden_tiles[0] = 65535
    current[0, :15] = 65535
    fast = ssim_batch(golden_tiles, current, 65535.0)
    np.testing.assert_allclose(fast, _skimage_loop(golden_tiles, current, 65535.0), rtol=0, atol=TOLERANCE)


def test_batched_ssim_of_float_and_mixed_tiles_equals_skimage() -> None:
    rng = np.random.default_rng(4)
    golden_tiles = rng.random((3, 20, 20))
    current = golden_tiles + rng.normal(0.0, 0.1, golden_tiles.shape)
    np.testing.assert_allclose(
        ssim_batch(golden_tiles, current, 1.0), _skimage_loop(golden_tiles, current, 1.0), rtol=0, atol=TOLERANCE
    )
    mixed_golden = (golden_tiles * 255).astype(np.uint8)
    mixed_current = (np.clip(current, 0, 1) * 65535).astype(np.uint16) // 257
    np.testing.assert_allclose(
        ssim_batch(mixed_golden, mixed_current, 255.0),
        _skimage_loop(mixed_golden, mixed_current, 255.0),
        rtol=0,
        atol=TOLERANCE,
    )


def test_batched_ssim_of_identical_and_constant_tiles() -> None:
    tiles = np.zeros((3, 12, 12), dtype=np.uint8)
    tiles[1] = 255
    tiles[2, ::2] = 200
    assert ssim_batch(tiles, tiles, 255.0).tolist() == pytest.approx([1.0, 1.0, 1.0], abs=1e-12)
    flipped = 255 - tiles
    np.testing.assert_allclose(
        ssim_batch(tiles, flipped, 255.0), _skimage_loop(tiles, flipped, 255.0), rtol=0, atol=TOLERANCE
    )


def test_batched_ssim_does_not_depend_on_the_block_size(monkeypatch: pytest.MonkeyPatch) -> None:
    golden_tiles, current = _pair((23, 17, 19), np.uint8, seed=5)
    whole = ssim_batch(golden_tiles, current, 255.0)
    for block in (1, 17 * 19, 3 * 17 * 19 + 5, 1 << 30):
        monkeypatch.setattr(compare, "SSIM_BLOCK_PIXELS", block)
        np.testing.assert_allclose(ssim_batch(golden_tiles, current, 255.0), whole, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("shape", "dtype"), [((16, 56, 56), np.uint8), ((9, 5, 5), np.uint8), ((6, 14, 14), np.uint16)], ids=str
)
@pytest.mark.parametrize("identical", ["none", "every-third", "all-but-one", "all"])
def test_scores_that_skip_identical_tiles_are_the_full_computation_s(
    shape: tuple[int, int, int], dtype: type[np.generic], identical: str
) -> None:
    golden_tiles, current = _pair(shape, dtype, seed=3)
    same = {"none": [], "every-third": list(range(0, shape[0], 3)), "all-but-one": list(range(1, shape[0]))}
    picked = same.get(identical, list(range(shape[0])))
    current[-1, 0, :] = golden_tiles[-1, 0, 0]  # a changed tile with a flat first row, where it stays changed
    current[picked] = golden_tiles[picked]
    ssim, errors = compare.tile_scores(golden_tiles, current, float(np.iinfo(dtype).max))
    assert np.array_equal(ssim, ssim_batch(golden_tiles, current, float(np.iinfo(dtype).max)))
    assert np.array_equal(errors, compare.rms_error(golden_tiles, current, float(np.iinfo(dtype).max)))
    assert (ssim[picked] == 1.0).all() and (errors[picked] == 0.0).all()


def _render_plainly(maps: np.ndarray, frames: np.ndarray, mode: str, bit_depth: int) -> np.ndarray:
    """render.render_tiles as plain expressions, one temporary array per step (how it was first written)."""
    values = np.asarray(maps, dtype=np.float64)
    first, second = frames[:, 0, None, None], frames[:, 1, None, None]
    if mode == "sigmoid":
        unit = 0.5 * (1.0 + np.tanh(0.5 * (values - first) / second))
    else:
        unit = np.clip((values - first) / (second - first), 0.0, 1.0)
    return np.rint(unit * (2**bit_depth - 1)).astype(np.uint8 if bit_depth == 8 else np.uint16)


@pytest.mark.parametrize("mode", ["minmax", "sigmoid", "percentile"])
@pytest.mark.parametrize("bit_depth", [8, 16])
def test_in_place_rendering_gives_the_plain_expressions_bits(mode: str, bit_depth: int) -> None:
    # Goldens store these tiles: a faster rendering must not move a single pixel of an existing golden.
    rng = np.random.default_rng(7)
    for scale in (1e-6, 1.0, 1e4):
        maps = (rng.normal(0.0, scale, (16, 23, 31)) + rng.normal(0.0, 3.0)).astype(np.float32)
        maps[0] = 1.5  # a flat channel
        frames = render.channel_frames(maps, mode)
        assert np.array_equal(
            render.render_tiles(maps, frames, mode, bit_depth), _render_plainly(maps, frames, mode, bit_depth)
        )
    wide = np.tile([[-1.0, 1.0]], (16, 1))  # values outside the frame are clipped, or squashed by the sigmoid
    assert np.array_equal(
        render.render_tiles(maps, wide, mode, bit_depth), _render_plainly(maps, wide, mode, bit_depth)
    )


def test_batched_ssim_rejects_stacks_of_different_shapes() -> None:
    with pytest.raises(ValueError, match="tile stacks differ in shape"):
        ssim_batch(np.zeros((2, 8, 8), np.uint8), np.zeros((3, 8, 8), np.uint8), 255.0)


def test_window_is_scikit_image_default() -> None:
    assert WINDOW == 7


def test_encoded_golden_png_is_lossless_and_byte_identical_for_the_same_tiles() -> None:
    rng = np.random.default_rng(6)
    mosaic = rng.integers(0, 255, size=(227, 227), endpoint=True).astype(np.uint8)
    mosaic[:100] = 0  # a dead ReLU region, as in real layers
    first, second = png.encode(mosaic), png.encode(mosaic.copy())
    assert first == second
    with Image.open(io.BytesIO(first)) as image:
        assert image.mode == "L"
        assert image.size == (227, 227)
        assert np.array_equal(np.array(image), mosaic)
    wide = (rng.integers(0, 65535, size=(31, 40), endpoint=True)).astype(np.uint16)
    with Image.open(io.BytesIO(png.encode(wide))) as image:
        assert np.array_equal(np.array(image).astype(np.uint16), wide)


def _rms_in_floats(
    golden_tiles: np.ndarray, current: np.ndarray, data_range: float, reference: np.ndarray
) -> np.ndarray:
    """compare.rms_error as plain float64 expressions (how it was first written)."""
    g = golden_tiles.reshape(len(golden_tiles), -1).astype(np.float64)
    c = current.reshape(len(current), -1).astype(np.float64)
    r = reference.reshape(len(reference), -1).astype(np.float64)
    spread = np.maximum(g.std(axis=1), compare.RMS_SPREAD_FLOOR * data_range)
    return np.sqrt(((c - r) ** 2).mean(axis=1)) / spread


@pytest.mark.parametrize(
    ("shape", "dtype"), [((16, 56, 56), np.uint8), ((5, 64, 64), np.uint16), ((3, 1, 7), np.uint8)]
)
def test_picture_change_in_integers_is_the_float_expressions(
    shape: tuple[int, int, int], dtype: type[np.generic]
) -> None:
    golden_tiles, current = _pair(shape, dtype, seed=11)
    golden_tiles[0] = 7  # a flat golden tile: the spread floor
    top = float(np.iinfo(dtype).max)
    reference = np.clip(current.astype(np.int64) + 1, 0, int(top)).astype(dtype)
    for against in (None, reference):
        exact = compare.rms_error(golden_tiles, current, top, reference=against)
        plain = _rms_in_floats(golden_tiles, current, top, golden_tiles if against is None else against)
        np.testing.assert_allclose(exact, plain, rtol=1e-12, atol=0)
        # Float tiles (no exact integer sums) take the float expressions themselves.
        floats = compare.rms_error(
            golden_tiles.astype(np.float64), current.astype(np.float64), top, None if against is None else against * 1.0
        )
        assert np.array_equal(floats, plain)
    assert (compare.rms_error(current, current, top) == 0.0).all()


def test_median_is_numpys_bit_for_bit() -> None:
    rng = np.random.default_rng(12)
    for size in [*range(1, 41), 257, 2048]:
        for values in (
            rng.normal(size=size) * 10.0 ** rng.integers(-30, 30),
            rng.integers(0, 3, size=size).astype(np.float64),  # ties, zeros
            np.abs(rng.normal(size=size)),
        ):
            assert render.median(values) == float(np.median(values))
    holed = rng.normal(size=9)
    holed[4] = np.nan
    assert np.isnan(render.median(holed)) and np.isnan(render.median(np.array([])))


def test_stored_rounding_is_nine_significant_digits_of_each_value() -> None:
    rng = np.random.default_rng(13)
    values = rng.normal(size=(64, 4)) * 10.0 ** rng.integers(-40, 40, size=(64, 4))
    rounded = render.round_stored(values)
    assert rounded.shape == values.shape
    assert [float(f"{v:.9g}") for v in values.ravel()] == rounded.ravel().tolist()
