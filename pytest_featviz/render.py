"""Rendering: activation maps -> normalized channel tiles -> one mosaic image per layer (numpy only).

A layer arrives as float maps of shape ``(channels, height, width)``. Each channel gets a *frame*, the two numbers
that map its values to grey levels (``[low, high]`` for ``minmax`` and ``percentile``, ``[center, scale]`` for
``sigmoid``). Frames are stored in the golden's sidecar, so the current activation can be rendered in the golden's
frame and a change of scale shows instead of being normalized away. Tiles are laid out row by row in a mosaic
with a one-pixel separator, which is what the golden PNG holds.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from pytest_featviz.records import NORMALIZE_MODES

PERCENTILES = (0.5, 99.5)
# A channel whose spread is tiny next to the layer's other channels is rendered with a widened frame: float noise
# (TF32, another CPU) is proportional to the layer's scale, not the channel's, and would otherwise be stretched to
# full contrast and fail the check. The floor is the larger of 2% of the widest and 25% of the median channel, and
# of a share of the layer's largest absolute value: in a layer where every channel is flat (a constant head on a
# random-init model) or sits on a large offset, TF32 rounding moves values by about 1e-3 of their magnitude.
SCALE_FLOOR = 0.02
MEDIAN_FLOOR = 0.25
MAGNITUDE_FLOOR = 0.01
SEPARATOR_LEVEL = 128
STATISTICS = ("mean", "std", "min", "max")

FloatArray = npt.NDArray[np.float64]
TileArray = npt.NDArray[np.uint8] | npt.NDArray[np.uint16]


def max_level(bit_depth: int) -> int:
    """The brightest grey level of a tile of ``bit_depth`` bits (8 or 16)."""
    if bit_depth not in (8, 16):
        raise ValueError(f"bit depth must be 8 or 16, not {bit_depth}")
    return (1 << bit_depth) - 1


def round_stored(values: FloatArray) -> FloatArray:
    # Frames are stored as JSON; rounding them to 9 significant digits before use keeps the rendered golden and a
    # later rendering in the stored frame bit-identical, and the JSON free of float noise.
    # (Python floats format a third faster than numpy scalars, to the same text.)
    return np.array([float(f"{v:.9g}") for v in values.ravel().tolist()], dtype=np.float64).reshape(values.shape)


# Maps longer than this on a side are average-pooled into their tile by an integer factor per axis: the stem of a
# CNN (112 x 112) would otherwise be two thirds of a golden's bytes, and noise-like feature maps do not compress.
MAX_TILE_SIDE = 64


def tile_pool(height: int, width: int) -> tuple[int, int]:
    """Pooling factors (rows, columns) that bring a ``height`` x ``width`` map to at most MAX_TILE_SIDE a side."""
    return max(1, math.ceil(height / MAX_TILE_SIDE)), max(1, math.ceil(width / MAX_TILE_SIDE))


def pool_maps(maps: npt.NDArray[np.floating], pool: tuple[int, int]) -> npt.NDArray[np.floating]:
    """Average ``maps`` (C, H, W) over ``pool`` blocks; rows and columns left over at the far edges are dropped."""
    rows, columns = pool
    if rows == columns == 1:
        return maps
    count, height, width = maps.shape
    kept = maps[:, : height // rows * rows, : width // columns * columns]
    blocks = kept.reshape(count, height // rows, rows, width // columns, columns)
    # One strided addition per block position: about 15x faster than ``mean(axis=(2, 4))`` on a 112 x 112 stem.
    pooled: npt.NDArray[np.floating] = blocks[:, :, 0, :, 0].copy()
    for row in range(rows):
        for column in range(columns):
            if row or column:
                pooled += blocks[:, :, row, :, column]
    pooled *= pooled.dtype.type(1.0 / (rows * columns))
    return pooled


def median(values: FloatArray) -> float:
    """``float(np.median(values))``, bit for bit (NaN if any value is NaN), without its overhead: about 2 us instead
    of 11 on a layer's 16 channels, where it is called a few times per check."""
    ordered = np.sort(values, axis=None)
    if ordered.size == 0 or np.isnan(ordered[-1]):  # np.sort puts NaN last
        return math.nan
    middle = ordered.size // 2
    if ordered.size % 2:
        return float(ordered[middle])
    return float((ordered[middle - 1] + ordered[middle]) / 2)  # np.median's mean of the two middle values


def spread_floor(spreads: FloatArray, magnitude: float = 0.0) -> float:
    """The smallest spread a channel is measured with, given the spreads of all kept channels of its layer.

    ``magnitude`` (the largest absolute value in the layer) adds a floor of ``MAGNITUDE_FLOOR`` of it, so an
    all-flat layer, or one at a large offset, is not stretched either.
    """
    if spreads.size == 0:
        return 1e-12
    return max(SCALE_FLOOR * float(spreads.max()), MEDIAN_FLOOR * median(spreads), MAGNITUDE_FLOOR * magnitude, 1e-12)


def channel_statistics(maps: npt.NDArray[np.floating]) -> FloatArray:
    """Per-channel ``mean, std, min, max`` of ``maps`` (C, H, W) as a float64 array of shape (C, 4)."""
    flat = np.asarray(maps).reshape(maps.shape[0], -1)
    # float64 accumulation without a float64 copy of the maps (a third of the time); a NaN or Inf anywhere still
    # makes the channel's mean or std non-finite, which is how a check detects them.
    mean = flat.mean(axis=1, dtype=np.float64)
    centred = flat - mean[:, None]
    std = np.sqrt(np.einsum("ij,ij->i", centred, centred) / max(flat.shape[1], 1))
    low, high = flat.min(axis=1).astype(np.float64), flat.max(axis=1).astype(np.float64)
    # Rounded as they are stored, so an identical re-run scores a statistics change of exactly 0.
    return round_stored(np.stack([mean, std, low, high], axis=1))


# Features of a token image whose statistics a golden keeps (evenly spaced over the features when there are more).
FEATURE_STATISTICS = 256


def feature_columns(count: int) -> tuple[int, ...]:
    """The features of a token image of ``count`` features whose statistics a new golden keeps: all of them, or
    :data:`FEATURE_STATISTICS` evenly spaced from the first to the last."""
    if count <= FEATURE_STATISTICS:
        return tuple(range(count))
    return tuple(int(i) for i in np.rint(np.linspace(0, count - 1, FEATURE_STATISTICS)))


def feature_statistics(maps: npt.NDArray[np.floating], columns: tuple[int, ...]) -> FloatArray:
    """Per-feature ``mean, std`` over the tokens of a token image ``maps`` (1, N, F), for the features ``columns``:
    a float64 array of shape (len(columns), 2), rounded as stored.

    A token image is one picture, so its channel statistics are one mean and std for the whole layer, and a
    normalized layer (LayerNorm) keeps those fixed whatever its weights do; each feature's own mean and std over the
    tokens moves with them (a 1% weight change moves them about 50 times as far as TF32 rounding does).
    """
    flat = np.asarray(maps)[0][:, list(columns)]
    mean = flat.mean(axis=0, dtype=np.float64)
    centred = flat - mean[None, :]
    std = np.sqrt(np.einsum("ij,ij->j", centred, centred) / max(flat.shape[0], 1))
    return round_stored(np.stack([mean, std], axis=1))


def channel_frames(maps: npt.NDArray[np.floating], mode: str) -> FloatArray:
    """The frame of each channel of ``maps`` (C, H, W) for normalization ``mode``: float64 array (C, 2)."""
    flat = np.asarray(maps, dtype=np.float64).reshape(maps.shape[0], -1)
    if mode == "minmax":
        low, high = flat.min(axis=1), flat.max(axis=1)
    elif mode == "percentile":
        low, high = np.percentile(flat, PERCENTILES, axis=1)
    elif mode == "sigmoid":
        center, scale = flat.mean(axis=1), flat.std(axis=1)
        floor = spread_floor(scale, float(np.abs(flat).max(initial=0.0)))
        return round_stored(np.stack([center, np.maximum(scale, floor)], axis=1))
    else:
        raise ValueError(f"normalize must be one of {', '.join(NORMALIZE_MODES)}; got {mode!r}")
    span = high - low
    floor = spread_floor(span, float(np.abs(flat).max(initial=0.0)))
    # A flat channel keeps its level at the bottom of the frame: a dead ReLU channel renders black.
    return round_stored(np.stack([low, low + np.maximum(span, floor)], axis=1))


def render_tiles(maps: npt.NDArray[np.floating], frames: FloatArray, mode: str, bit_depth: int = 8) -> TileArray:
    """Render ``maps`` (C, H, W) through ``frames`` (C, 2) into integer tiles of ``bit_depth`` bits."""
    first = frames[:, 0, None, None]
    second = frames[:, 1, None, None]
    if mode not in NORMALIZE_MODES:
        raise ValueError(f"normalize must be one of {', '.join(NORMALIZE_MODES)}; got {mode!r}")
    # One float64 buffer, each step written in place: the same operations in the same order as the plain
    # expressions (so the same bits), without a temporary array per step.
    unit = np.array(maps, dtype=np.float64)
    np.subtract(unit, first, out=unit)
    if mode == "sigmoid":  # 0.5 * (1 + tanh(0.5 * (v - first) / second)): a sigmoid that never overflows
        np.multiply(unit, 0.5, out=unit)
        np.divide(unit, second, out=unit)
        np.tanh(unit, out=unit)
        np.add(unit, 1.0, out=unit)
        np.multiply(unit, 0.5, out=unit)
    else:  # minmax, percentile: clip((v - first) / (second - first), 0, 1)
        np.divide(unit, second - first, out=unit)
        np.clip(unit, 0.0, 1.0, out=unit)
    np.multiply(unit, max_level(bit_depth), out=unit)
    np.rint(unit, out=unit)
    return unit.astype(np.uint8 if bit_depth == 8 else np.uint16)


def grid_shape(count: int) -> tuple[int, int]:
    """Rows and columns of the mosaic of ``count`` tiles: as square as possible, filled row by row."""
    if count <= 0:
        raise ValueError("a mosaic needs at least one tile")
    columns = math.ceil(math.sqrt(count))
    return math.ceil(count / columns), columns


def mosaic_size(count: int, tile_shape: tuple[int, int]) -> tuple[int, int]:
    """Height and width in pixels of the mosaic of ``count`` tiles of ``tile_shape``."""
    rows, columns = grid_shape(count)
    height, width = tile_shape
    return rows * (height + 1) - 1, columns * (width + 1) - 1


def build_mosaic(tiles: TileArray) -> TileArray:
    """Lay ``tiles`` (C, H, W) out on the grid of :func:`grid_shape` with one separator pixel between tiles."""
    count, height, width = tiles.shape
    _, columns = grid_shape(count)
    separator = SEPARATOR_LEVEL * 257 if tiles.dtype == np.uint16 else SEPARATOR_LEVEL
    out = np.full(mosaic_size(count, (height, width)), separator, dtype=tiles.dtype)
    for index in range(count):
        row, column = divmod(index, columns)
        top, left = row * (height + 1), column * (width + 1)
        out[top : top + height, left : left + width] = tiles[index]
    return out


def split_mosaic(mosaic: TileArray, count: int, tile_shape: tuple[int, int]) -> TileArray:
    """Cut the ``count`` tiles of ``tile_shape`` back out of a mosaic made by :func:`build_mosaic`."""
    expected = mosaic_size(count, tile_shape)
    if mosaic.shape != expected:
        raise ValueError(f"mosaic is {mosaic.shape[0]}x{mosaic.shape[1]} pixels, expected {expected[0]}x{expected[1]}")
    _, columns = grid_shape(count)
    height, width = tile_shape
    tiles = np.empty((count, height, width), dtype=mosaic.dtype)
    for index in range(count):
        row, column = divmod(index, columns)
        top, left = row * (height + 1), column * (width + 1)
        tiles[index] = mosaic[top : top + height, left : left + width]
    return tiles
