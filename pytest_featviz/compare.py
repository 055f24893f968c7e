"""Comparison: golden tiles and statistics against current ones -> a :class:`LayerResult` (numpy only).

Three per-channel scores, each with its own tolerance, decide a channel's verdict:

* ``ssim``: the structural similarity of the golden tile and the current tile rendered in the golden's frame
  (scikit-image's definition: 7x7 uniform window, sample covariance, K1=0.01, K2=0.03). :func:`ssim_batch`
  computes every tile of a layer at once with summed-area tables and equals scikit-image within 1e-6.
* ``rms_error``: the root-mean-square difference of the two tiles, in units of the golden tile's spread. SSIM is
  quadratic in a small change; this score is linear, so it sees a few-percent change that SSIM smooths over.
* ``stat_delta``: the largest change of the channel's mean, std, min or max (computed from the float activation,
  not the 8-bit picture), in units of the golden channel's std. It sees changes the picture cannot show.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from pytest_featviz.records import DRIFT, MATCH, LayerResult
from pytest_featviz.render import SCALE_FLOOR, TileArray

WINDOW = 7
K1, K2 = 0.01, 0.03
# Spread floor of a golden tile for ``rms_error``, as a fraction of the full grey range: a flat tile would
# otherwise turn one flipped grey level into a huge relative error.
RMS_SPREAD_FLOOR = 0.02

FloatArray = npt.NDArray[np.float64]


def _window_sums(values: FloatArray, window: int) -> FloatArray:
    """Sum of each fully contained ``window`` x ``window`` patch of a (N, H, W) stack (summed-area table)."""
    table = np.zeros((values.shape[0], values.shape[1] + 1, values.shape[2] + 1), dtype=np.float64)
    np.cumsum(values, axis=1, out=table[:, 1:, 1:])
    np.cumsum(table[:, 1:, 1:], axis=2, out=table[:, 1:, 1:])
    return (
        table[:, window:, window:]
        - table[:, :-window, window:]
        - table[:, window:, :-window]
        + table[:, :-window, :-window]
    )


def upscale_to_window(tiles: npt.NDArray[np.generic], window: int = WINDOW) -> npt.NDArray[np.generic]:
    """Nearest-neighbour upscale a (N, H, W) stack by the smallest integer factor that fits the SSIM window."""
    height, width = tiles.shape[1:]
    factor = math.ceil(window / min(height, width)) if min(height, width) < window else 1
    if factor == 1:
        return tiles
    return np.repeat(np.repeat(tiles, factor, axis=1), factor, axis=2)


def ssim_batch(
    golden: npt.NDArray[np.generic], current: npt.NDArray[np.generic], data_range: float, window: int = WINDOW
) -> FloatArray:
    """Mean SSIM of each pair of tiles in two (N, H, W) stacks.

    Equal to ``skimage.metrics.structural_similarity(g, c, data_range=data_range, win_size=window)`` per pair.
    Tiles smaller than the window are first upscaled (nearest neighbour) by :func:`upscale_to_window`.
    """
    if golden.shape != current.shape:
        raise ValueError(f"tile stacks differ in shape: {golden.shape} and {current.shape}")
    x = upscale_to_window(golden, window).astype(np.float64)
    y = upscale_to_window(current, window).astype(np.float64)
    count = float(window * window)
    cov_norm = count / (count - 1.0)
    mean_x = _window_sums(x, window) / count
    mean_y = _window_sums(y, window) / count
    var_x = cov_norm * (_window_sums(x * x, window) / count - mean_x * mean_x)
    var_y = cov_norm * (_window_sums(y * y, window) / count - mean_y * mean_y)
    cov_xy = cov_norm * (_window_sums(x * y, window) / count - mean_x * mean_y)
    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2
    numerator = (2.0 * mean_x * mean_y + c1) * (2.0 * cov_xy + c2)
    denominator = (mean_x * mean_x + mean_y * mean_y + c1) * (var_x + var_y + c2)
    result: FloatArray = (numerator / denominator).mean(axis=(1, 2))
    return result


def rms_error(golden: TileArray, current: TileArray, data_range: float) -> FloatArray:
    """RMS difference of each pair of tiles in units of the golden tile's spread (floored, see module doc)."""
    g = golden.reshape(golden.shape[0], -1).astype(np.float64)
    c = current.reshape(current.shape[0], -1).astype(np.float64)
    spread = np.maximum(g.std(axis=1), RMS_SPREAD_FLOOR * data_range)
    result: FloatArray = np.sqrt(((c - g) ** 2).mean(axis=1)) / spread
    return result


def statistic_delta(golden: FloatArray, current: FloatArray) -> FloatArray:
    """Largest change of ``mean, std, min, max`` per channel in units of the golden std, from two (C, 4) arrays.

    The unit is floored at 2% of the layer's largest channel std, like the render frame, so a near-constant
    channel does not turn float noise into a large relative change.
    """
    std = golden[:, 1]
    unit = np.maximum(std, max(SCALE_FLOOR * float(std.max(initial=0.0)), 1e-12))
    result: FloatArray = (np.abs(current - golden) / unit[:, None]).max(axis=1)
    return result


def compare_layer(
    name: str,
    *,
    shape: tuple[int, ...],
    golden_shape: tuple[int, ...],
    channels: tuple[int, ...],
    golden_tiles: TileArray,
    current_tiles: TileArray,
    golden_stats: FloatArray,
    current_stats: FloatArray,
    data_range: float,
    threshold: float,
    stat_tolerance: float,
    rms_tolerance: float,
) -> LayerResult:
    """Score every channel of one layer and give the layer's verdict (drift if any channel breaks a tolerance)."""
    ssim = ssim_batch(golden_tiles, current_tiles, data_range)
    errors = rms_error(golden_tiles, current_tiles, data_range)
    deltas = statistic_delta(golden_stats, current_stats)
    failed = (ssim < threshold) | (errors > rms_tolerance) | (deltas > stat_tolerance)
    failed |= ~(np.isfinite(ssim) & np.isfinite(errors) & np.isfinite(deltas))
    return LayerResult(
        name=name,
        verdict=DRIFT if bool(failed.any()) else MATCH,
        shape=shape,
        golden_shape=golden_shape,
        channels=channels,
        ssim=tuple(float(v) for v in ssim),
        stat_delta=tuple(float(v) for v in deltas),
        rms_error=tuple(float(v) for v in errors),
        threshold=threshold,
        stat_tolerance=stat_tolerance,
        rms_tolerance=rms_tolerance,
    )
