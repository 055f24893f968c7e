"""render: frames per normalization mode, tiles, mosaics (numpy only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pytest_featviz.render import (
    SCALE_FLOOR,
    SEPARATOR_LEVEL,
    build_mosaic,
    channel_frames,
    channel_statistics,
    feature_columns,
    feature_statistics,
    grid_shape,
    mosaic_size,
    render_tiles,
    split_mosaic,
)


def _maps(seed: int = 0, shape: tuple[int, int, int] = (3, 8, 10)) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_minmax_spans_the_full_grey_range_per_channel() -> None:
    maps = _maps()
    maps[1] *= 10.0  # a channel ten times brighter than the others: each still gets its own full range
    frames = channel_frames(maps, "minmax")
    np.testing.assert_allclose(frames[:, 0], maps.reshape(3, -1).min(axis=1), rtol=1e-6)
    np.testing.assert_allclose(frames[:, 1], maps.reshape(3, -1).max(axis=1), rtol=1e-6)
    tiles = render_tiles(maps, frames, "minmax")
    assert tiles.dtype == np.uint8 and tiles.shape == (3, 8, 10)
    for tile in tiles:
        assert tile.min() == 0 and tile.max() == 255


def test_a_nearly_flat_channel_is_not_stretched_to_full_contrast() -> None:
    maps = _maps(shape=(2, 6, 6))
    maps[1] = 1e-6 * maps[1] + 3.0  # float noise around a constant
    frames = channel_frames(maps, "minmax")
    widest = float(maps[0].max() - maps[0].min())
    assert frames[1, 1] - frames[1, 0] >= SCALE_FLOOR * widest * (1 - 1e-9)
    assert render_tiles(maps, frames, "minmax")[1].max() <= 1


def test_sigmoid_maps_the_mean_to_mid_grey_and_never_overflows() -> None:
    maps = _maps()
    maps[0, 0, 0] = 1e30
    frames = channel_frames(maps, "sigmoid")
    tiles = render_tiles(maps, frames, "sigmoid")
    centered = render_tiles(frames[:, 0, None, None] * np.ones((3, 1, 1)), frames, "sigmoid")
    assert set(np.unique(centered)) == {128}
    assert tiles[0, 0, 0] == 255
    assert tiles.dtype == np.uint8


def test_percentile_ignores_outliers_that_minmax_lets_dominate() -> None:
    maps = _maps(shape=(1, 40, 40))
    maps[0, 0, 0] = 1000.0
    minmax = render_tiles(maps, channel_frames(maps, "minmax"), "minmax")
    robust = render_tiles(maps, channel_frames(maps, "percentile"), "percentile")
    # Under min-max one hot pixel squeezes everything else into a few grey levels; percentile keeps contrast.
    assert len(np.unique(minmax[0])) < 10
    assert len(np.unique(robust[0])) > 100
    assert robust[0, 0, 0] == 255
    high = channel_frames(maps, "percentile")[0, 1]
    assert high < 10.0


@pytest.mark.parametrize("mode", ["minmax", "sigmoid", "percentile"])
@pytest.mark.parametrize("level", [0.0, 3.5, -1e6])
def test_constant_channel_renders_without_division_by_zero(mode: str, level: float) -> None:
    maps = np.stack([np.full((5, 6), level, np.float32), _maps(shape=(1, 5, 6))[0]])
    with np.errstate(all="raise"):
        frames = channel_frames(maps, mode)
        tiles = render_tiles(maps, frames, mode)
    assert np.isfinite(frames).all()
    assert len(np.unique(tiles[0])) == 1  # flat stays flat
    if mode != "sigmoid":
        assert tiles[0, 0, 0] == 0  # a dead channel renders black


@pytest.mark.parametrize("mode", ["minmax", "sigmoid", "percentile"])
def test_all_zero_layer_renders(mode: str) -> None:
    maps = np.zeros((2, 3, 3), np.float32)
    with np.errstate(all="raise"):
        tiles = render_tiles(maps, channel_frames(maps, mode), mode)
    assert tiles.shape == (2, 3, 3)


def test_rendering_in_a_stored_frame_shows_a_change_of_scale() -> None:
    maps = _maps()
    frames = channel_frames(maps, "minmax")
    golden = render_tiles(maps, frames, "minmax")
    doubled = maps * 2.0
    assert np.array_equal(render_tiles(doubled, channel_frames(doubled, "minmax"), "minmax"), golden)
    in_golden_frame = render_tiles(doubled, frames, "minmax")
    assert not np.array_equal(in_golden_frame, golden)
    assert (in_golden_frame == 255).sum() > (golden == 255).sum()  # values beyond the stored range saturate


def test_rendering_in_the_own_frame_is_reproducible_through_rounding() -> None:
    maps = _maps(seed=4)
    frames = channel_frames(maps, "minmax")
    assert np.array_equal(render_tiles(maps, frames, "minmax"), render_tiles(maps.copy(), frames.copy(), "minmax"))


def test_sixteen_bit_tiles() -> None:
    maps = _maps()
    tiles = render_tiles(maps, channel_frames(maps, "minmax"), "minmax", bit_depth=16)
    assert tiles.dtype == np.uint16 and tiles.max() == 65535
    with pytest.raises(ValueError, match="bit depth must be 8 or 16"):
        render_tiles(maps, channel_frames(maps, "minmax"), "minmax", bit_depth=12)


def test_unknown_mode_is_an_error() -> None:
    with pytest.raises(ValueError, match="normalize must be one of minmax, sigmoid, percentile"):
        channel_frames(_maps(), "zscore")


def test_channel_statistics_are_mean_std_min_max() -> None:
    maps = _maps()
    stats = channel_statistics(maps)
    flat = maps.reshape(3, -1).astype(np.float64)
    expected = np.stack([flat.mean(1), flat.std(1), flat.min(1), flat.max(1)], axis=1)
    np.testing.assert_allclose(stats, expected, rtol=1e-8)


@pytest.mark.parametrize(
    ("count", "grid"), [(1, (1, 1)), (2, (1, 2)), (3, (2, 2)), (4, (2, 2)), (5, (2, 3)), (16, (4, 4)), (17, (4, 5))]
)
def test_grid_is_as_square_as_possible(count: int, grid: tuple[int, int]) -> None:
    assert grid_shape(count) == grid


def test_mosaic_geometry_and_round_trip() -> None:
    tiles = np.random.default_rng(0).integers(0, 256, size=(5, 4, 7), dtype=np.uint8)
    mosaic = build_mosaic(tiles)
    # 2 rows x 3 columns of 4x7 tiles with one separator pixel between them.
    assert mosaic.shape == mosaic_size(5, (4, 7)) == (2 * 5 - 1, 3 * 8 - 1)
    assert (mosaic[4, :] == SEPARATOR_LEVEL).all() and (mosaic[:, 7] == SEPARATOR_LEVEL).all()
    assert (mosaic[5:, 16:] == SEPARATOR_LEVEL).all()  # the unused sixth cell
    assert np.array_equal(mosaic[5:9, 8:15], tiles[4])
    assert np.array_equal(split_mosaic(mosaic, 5, (4, 7)), tiles)
    with pytest.raises(ValueError, match="expected 9x23"):
        split_mosaic(mosaic[:-1], 5, (4, 7))


def test_sixteen_bit_mosaic_round_trip() -> None:
    tiles = np.random.default_rng(0).integers(0, 65536, size=(3, 2, 2), dtype=np.uint16)
    mosaic = build_mosaic(tiles)
    assert mosaic.dtype == np.uint16
    assert np.array_equal(split_mosaic(mosaic, 3, (2, 2)), tiles)


def test_maps_over_64_px_are_pooled_into_their_tiles() -> None:
    from pytest_featviz.render import MAX_TILE_SIDE, pool_maps, tile_pool

    assert tile_pool(56, 56) == (1, 1)
    assert tile_pool(112, 112) == (2, 2)
    assert tile_pool(1, 4096) == (1, 64)
    assert tile_pool(65, 7) == (2, 1)
    maps = np.arange(2 * 5 * 4, dtype=np.float32).reshape(2, 5, 4)
    pooled = pool_maps(maps, (2, 2))
    assert pooled.shape == (2, 2, 2)  # the fifth row is dropped
    assert pooled[0, 0, 0] == maps[0, :2, :2].mean()
    assert max(pool_maps(np.zeros((1, 224, 100)), tile_pool(224, 100)).shape[1:]) <= MAX_TILE_SIDE


def test_a_large_layer_is_stored_pooled_and_compared_in_the_same_frame(tmp_path: Path) -> None:
    import torch
    from torch import nn

    from pytest_featviz import golden
    from pytest_featviz.config import Settings
    from pytest_featviz.snapshot import TestIdentity, check_snapshot

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1))
    x = torch.randn(1, 3, 112, 112)
    identity = TestIdentity("t.py::t", "t.py", "t", "pytest --featviz-update t.py::t")
    directory = tmp_path / "snap"
    check_snapshot(model, x, ["0"], Settings(golden_dir=tmp_path, update=True), directory, identity, "0")
    stored = golden.read_sidecar(directory)
    assert stored is not None
    assert stored.layers[0].tile_shape == (56, 56) and stored.layers[0].pool == (2, 2)
    assert '"pool": [2, 2]' in (directory / golden.SIDECAR).read_text()
    same = check_snapshot(model, x, ["0"], Settings(golden_dir=tmp_path), directory, identity, "0")
    assert same.result.outcome == "matched"
    with torch.no_grad():
        model[0].weight.mul_(-1)
    flipped = check_snapshot(model, x, ["0"], Settings(golden_dir=tmp_path), directory, identity, "0")
    assert flipped.result.outcome == "drifted"


def test_a_token_image_keeps_every_feature_or_256_spread_from_first_to_last() -> None:
    assert feature_columns(5) == (0, 1, 2, 3, 4)
    wide = feature_columns(4096)
    assert len(wide) == 256 and wide[0] == 0 and wide[-1] == 4095 and list(wide) == sorted(set(wide))
    assert max(np.diff(wide)) - min(np.diff(wide)) <= 1


def test_feature_statistics_are_each_feature_s_mean_and_std_over_the_tokens() -> None:
    maps = _maps(shape=(1, 48, 10))
    stats = feature_statistics(maps, (0, 3, 9))
    expected = np.stack([maps[0].astype(np.float64).mean(axis=0), maps[0].astype(np.float64).std(axis=0)], axis=1)
    np.testing.assert_allclose(stats, expected[[0, 3, 9]], rtol=1e-8)
    assert stats.tolist() == feature_statistics(maps.copy(), (0, 3, 9)).tolist()  # rounded as stored: exact
