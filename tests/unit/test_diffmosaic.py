"""Unit tests of pytest_featviz.diffmosaic: the geometry and the panels of a diff mosaic."""

from __future__ import annotations

import numpy as np

from pytest_featviz.diffmosaic import _VIRIDIS, BACKGROUND, GAP, LABEL_WIDTH, LINE, diff_mosaic, panel_scale


def test_diff_mosaic_upscales_a_7x7_map_and_draws_golden_current_difference() -> None:
    rng = np.random.default_rng(0)
    golden = rng.integers(0, 256, (3, 7, 7), dtype=np.uint8)
    current = golden.copy()
    current[1] = 255 - current[1]
    image = diff_mosaic("layer1", golden, current, [(1, 5, "SSIM 0.1200", True), (0, 2, "SSIM 0.9900", False)])
    scale = panel_scale((7, 7))
    assert scale == 10  # 7 px -> 70 px: a small map stays visible
    assert image.shape == (2 * LINE + GAP + 2 * (70 + GAP) + GAP, 110 + 3 * 70 + 16, 3)
    top, left = 2 * LINE + GAP, LABEL_WIDTH + GAP
    # Row 0 shows tile position 1 (the worst channel first): golden, then current, nearest-upscaled.
    golden_panel = image[top : top + 70, left : left + 70, 0]
    current_panel = image[top : top + 70, left + 74 : left + 144, 0]
    assert np.array_equal(golden_panel, np.kron(golden[1], np.ones((10, 10), dtype=np.uint8)))
    assert np.array_equal(current_panel, np.kron(current[1], np.ones((10, 10), dtype=np.uint8)))
    # Row 1 (an unchanged tile): the heatmap is the colormap's zero colour everywhere.
    row1 = top + 70 + GAP
    heat = image[row1 : row1 + 70, left + 148 : left + 218]
    assert (heat == np.array(_VIRIDIS[0], dtype=np.uint8)).all()


def test_the_smallest_maps_grow_to_the_panel_size_too() -> None:
    """A pooled 2x2 map was drawn 32 pixels wide (the factor stopped at 16), and its column headers were cut to
    "gold…", "curre…", "differ…"."""
    assert [panel_scale((size, size)) for size in (1, 2, 3, 7, 64, 65)] == [64, 32, 22, 10, 1, 1]
    image = diff_mosaic("pool", np.zeros((1, 2, 2), np.uint8), np.ones((1, 2, 2), np.uint8), [(0, 0, "x", True)])
    assert image.shape[1] == LABEL_WIDTH + 3 * 64 + 4 * GAP


def test_diff_mosaic_caps_rows_and_counts_the_rest() -> None:
    tiles = np.zeros((12, 32, 32), dtype=np.uint16)
    rows = [(i, i, "SSIM 0.5000", True) for i in range(12)]
    image = diff_mosaic("x", tiles, tiles + 1000, rows, bit_depth=16, max_rows=3)
    assert panel_scale((32, 32)) == 2
    assert image.shape[0] == 2 * LINE + GAP + 3 * (64 + GAP) + LINE + GAP
    footer = image[-LINE - GAP : -GAP]
    assert (footer != np.array(BACKGROUND, dtype=np.uint8)).any()  # the "... and 9 more" line is drawn


def test_a_strip_of_a_1d_layer_is_drawn_as_tall_as_its_row() -> None:
    """A Conv1d layer's 1 x 62 tile was drawn 2 pixels high: golden, current and difference could not be read."""
    golden = np.arange(3 * 62, dtype=np.uint8).reshape(3, 1, 62)
    current = golden[::-1].copy()
    image = diff_mosaic("conv1", golden, current, [(0, 0, "SSIM 0.1000", True)])
    assert panel_scale((1, 62)) == 2
    top, left = 2 * LINE + GAP, LABEL_WIDTH + GAP
    assert image.shape == (top + 2 * LINE + GAP + GAP, LABEL_WIDTH + 3 * 124 + 4 * GAP, 3)
    golden_panel = image[top : top + 2 * LINE, left : left + 124, 0]
    assert np.array_equal(golden_panel, np.kron(golden[0], np.ones((2 * LINE, 2), dtype=np.uint8)))


def test_a_column_map_is_drawn_as_wide_as_its_title() -> None:
    """A 62 x 1 map (a (B, C, H, 1) output) was drawn 2 pixels wide: a sliver, its column titles cut to nothing."""
    from pytest_featviz.diffmosaic import TITLE_WIDTH

    golden = np.arange(3 * 62, dtype=np.uint8).reshape(3, 62, 1)
    current = golden[::-1].copy()
    image = diff_mosaic("conv1", golden, current, [(0, 0, "SSIM 0.1000", True)])
    assert panel_scale((62, 1)) == 2
    top, left = 2 * LINE + GAP, LABEL_WIDTH + GAP
    assert image.shape == (top + 124 + 2 * GAP, LABEL_WIDTH + 3 * TITLE_WIDTH + 4 * GAP, 3)
    golden_panel = image[top : top + 124, left : left + TITLE_WIDTH, 0]
    assert np.array_equal(golden_panel, np.kron(golden[0], np.ones((2, TITLE_WIDTH), dtype=np.uint8)))
    titles = image[LINE : 2 * LINE, left : left + 3 * TITLE_WIDTH + 2 * GAP]
    assert (titles != np.array(BACKGROUND, dtype=np.uint8)).any(axis=2).sum() > 100  # golden, current, difference
