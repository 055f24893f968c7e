"""Comparison: golden tiles and statistics against current ones -> a :class:`LayerResult` (numpy only).

Three per-channel scores, each with its own tolerance, decide a channel's verdict:

* ``ssim``: the structural similarity of the golden tile and the current tile rendered in the golden's frame
  (scikit-image's definition: 7x7 uniform window, sample covariance, K1=0.01, K2=0.03). :func:`ssim_batch`
  computes every tile of a layer at once with summed-area tables and equals scikit-image within 1e-6.
* ``rms_error``: the root-mean-square difference of the two tiles, in units of the golden tile's spread. SSIM is
  quadratic in a small change; this score is linear, so it sees a few-percent change that SSIM smooths over.
* A golden tile without structure (a flat channel: one grey level) is compared for structure only: the current
  tile is moved by its uniform level shift first. Such a shift is a change of the channel's mean, which
  ``stat_delta`` judges in float units; in the picture it is a flip of one or two grey levels under float noise,
  which SSIM's luminance term (near black) and ``rms_error`` (against a floored spread) would magnify into drift.
* ``stat_delta``: the larger change of the channel's mean or std (computed from the float activation, not the
  8-bit picture), in units of the golden channel's std. It sees coherent changes the picture cannot show.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from pytest_featviz.records import DRIFT, MATCH, LayerResult, NoiseFloor
from pytest_featviz.render import TileArray, median, spread_floor

WINDOW = 7
K1, K2 = 0.01, 0.03
# Spread floor of a golden tile for ``rms_error``, as a fraction of the full grey range: a flat tile would
# otherwise turn one flipped grey level into a huge relative error.
RMS_SPREAD_FLOOR = 0.02
# Floor of the statistics unit, as a fraction of the layer's level (the largest ``|mean| + std`` of its channels):
# in a layer where every channel is flat, TF32 rounding moves a constant output by about 2e-4 of its level
# (measured with --featviz-calibrate on a random-init DeepLabV3 head), which must stay well inside the tolerance.
STAT_LEVEL_FLOOR = 0.05
# The noise floor: a layer whose scores are not clean is judged by tolerances fitted to how far emulated TF32
# rounding moves it, NOISE_FACTOR times that, never looser than configured and never tighter than NOISE_TIGHTEST of
# it (chosen with benchmarks/detection.py: every factor from 3 to 5 and limit from 0.3 to 0.5 gave the same table).
NOISE_FACTOR = 4.0
NOISE_TIGHTEST = 0.4

FloatArray = npt.NDArray[np.float64]


# Tiles per block of :func:`ssim_batch`: about this many pixels, so the five window-sum stacks of a block stay in
# the CPU cache (measured in benchmarks/ssim_speed.py; a whole 16 x 112 x 112 layer at once is about 2x slower).
SSIM_BLOCK_PIXELS = 1 << 15


def _sum_ahead(values: npt.NDArray[Any], count: int, stride: int, length: int) -> npt.NDArray[Any]:
    """``out[i] = values[i] + values[i + stride] + ... + values[i + (count - 1) * stride]`` for ``i < length``.

    On a flat array, by doubling (sums of 2, 4, 8, ... terms), so a window of 7 costs 4 vectorised additions.
    """
    pieces: list[tuple[npt.NDArray[Any], int]] = []
    partial, size, start, remaining = values, 1, 0, count
    while remaining:
        if remaining & 1:
            pieces.append((partial, start))
            start += size
        remaining >>= 1
        if remaining:
            reach = partial.size - size * stride
            partial = partial[:reach] + partial[size * stride : size * stride + reach]
            size *= 2
    first, offset = pieces[0]
    out: npt.NDArray[Any] = first[offset * stride : offset * stride + length].copy()
    for piece, offset in pieces[1:]:
        out += piece[offset * stride : offset * stride + length]
    return out


def _window_sums(values: npt.NDArray[Any], window: int) -> npt.NDArray[Any]:
    """Sum of each fully contained ``window`` x ``window`` patch of a C-contiguous (N, H, W) stack.

    Both passes run on the flat array (a shift by one row is a shift by W elements), so every addition is one long
    vectorised loop; sums that straddle two rows or two tiles land only in positions that are cut away at the end.
    """
    count, height, width = values.shape
    flat = values.reshape(-1)
    rows = _sum_ahead(flat, window, width, flat.size - (window - 1) * width)
    valid = rows.size - (window - 1)
    table = np.empty(flat.size, dtype=values.dtype)
    table[:valid] = _sum_ahead(rows, window, 1, valid)
    return table.reshape(count, height, width)[:, : height - window + 1, : width - window + 1]


def _sum_dtype(tiles: npt.NDArray[Any]) -> type[np.generic]:
    # Window sums of 8-bit tiles and every product below fit int32 exactly (49 * 255**2 * 49 < 2**31), of 16-bit
    # tiles int64; exact integer sums make the result at least as accurate as scikit-image's float filtering.
    if tiles.dtype.kind in "biu" and tiles.dtype.itemsize == 1:
        return np.int32
    if tiles.dtype.kind in "biu" and tiles.dtype.itemsize == 2:
        return np.int64
    return np.float64


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

    Equal to ``skimage.metrics.structural_similarity(g, c, data_range=data_range, win_size=window)`` per pair
    (within 1e-6, tested; about 4e-15 in practice). Tiles smaller than the window are first upscaled (nearest
    neighbour) by :func:`upscale_to_window`. The tiles are processed in cache-sized blocks, with exact integer
    window sums for 8- and 16-bit tiles: with ``n = window**2`` and sums ``Sx, Sy, Sxx, Syy, Sxy`` over a window,
    SSIM is ``(2 Sx Sy + C1 n^2)(2 (n Sxy - Sx Sy) + C2 n (n-1)) / ((Sx^2 + Sy^2 + C1 n^2)(n (Sxx + Syy) - Sx^2 - Sy^2 +
    C2 n (n-1)))``, scikit-image's formula multiplied out.
    """
    if golden.shape != current.shape:
        raise ValueError(f"tile stacks differ in shape: {golden.shape} and {current.shape}")
    x = upscale_to_window(golden, window)
    y = upscale_to_window(current, window)
    tiles, height, width = x.shape
    kind = _sum_dtype(x) if _sum_dtype(x) == _sum_dtype(y) else np.float64
    n = float(window * window)
    c1 = (K1 * data_range) ** 2 * n * n
    c2 = (K2 * data_range) ** 2 * n * (n - 1.0)
    result: FloatArray = np.empty(tiles, dtype=np.float64)
    step = max(1, SSIM_BLOCK_PIXELS // (height * width))
    for start in range(0, tiles, step):
        k = min(step, tiles - start)
        # Window sums of 8-bit values fit int16 (49 * 255), which halves their memory traffic; only Sxx + Syy
        # enters the formula, so x*x + y*y is summed as one stack: four window sums, not five.
        pair = np.empty((2 * k, height, width), dtype=np.int16 if kind is np.int32 else kind)
        pair[:k] = x[start : start + k]
        pair[k:] = y[start : start + k]
        gx, gy = pair[:k].astype(kind, copy=False), pair[k:].astype(kind, copy=False)
        moments = np.empty((2 * k, height, width), dtype=kind)
        np.multiply(gx, gx, out=moments[:k])
        moments[:k] += gy * gy
        np.multiply(gx, gy, out=moments[k:])
        first = _window_sums(pair, window).astype(kind, copy=False)
        second = _window_sums(moments, window)
        sx, sy, sxx_syy, sxy = first[:k], first[k:], second[:k], second[k:]
        product = sx * sy
        numerator = product * 2.0
        numerator += c1
        covariance = sxy * int(n) if kind is not np.float64 else sxy * n
        covariance -= product
        structure = covariance * 2.0
        structure += c2
        numerator *= structure
        squares = sx * sx
        squares += sy * sy
        denominator = squares + c1
        variance = sxx_syy * int(n) if kind is not np.float64 else sxx_syy * n
        variance -= squares
        contrast = variance + c2
        denominator *= contrast
        numerator /= denominator
        result[start : start + k] = numerator.mean(axis=(1, 2))
    return result


def rms_error(
    golden: TileArray, current: TileArray, data_range: float, reference: TileArray | None = None
) -> FloatArray:
    """RMS difference of each pair of tiles in units of the golden tile's spread (floored, see module doc).

    ``reference``, when given, is what ``current`` is measured against instead of ``golden`` (the noise floor).
    """
    count = golden.shape[0]
    g, c = golden.reshape(count, -1), current.reshape(count, -1)
    r = g if reference is None else reference.reshape(count, -1)
    floor = RMS_SPREAD_FLOOR * data_range
    exact = _exact_sums_dtype(g, c, r)
    if exact is None:
        g64, c64, r64 = g.astype(np.float64), c.astype(np.float64), r.astype(np.float64)
        result: FloatArray = np.sqrt(((c64 - r64) ** 2).mean(axis=1)) / np.maximum(g64.std(axis=1), floor)
        return result
    # Integer tiles: the sums of squares are exact integers, so the mean squared difference is what the float path
    # gives (its sum of exact squares was exact too), and the spread is the exact variance rounded once.
    pixels = g.shape[1]
    base = g.astype(exact)
    difference = c.astype(exact)
    difference -= base if reference is None else r
    squares = np.einsum("ij,ij->i", difference, difference)
    total = base.sum(axis=1, dtype=np.int64)
    variance = pixels * np.einsum("ij,ij->i", base, base).astype(np.int64) - total * total  # pixels**2 * var
    spread = np.maximum(np.sqrt(variance) / pixels, floor)
    result = np.sqrt(squares / pixels) / spread
    return result


def _exact_sums_dtype(*tiles: npt.NDArray[Any]) -> type[np.signedinteger[Any]] | None:
    """The integer type in which :func:`rms_error`'s sums over these (N, pixels) tiles are exact, or ``None`` (tiles
    that are not 8- or 16-bit grey levels, or so many pixels that ``pixels**2 * level**2`` would leave int64)."""
    if any(t.dtype.kind != "u" or t.dtype.itemsize > 2 for t in tiles):
        return None
    pixels = tiles[0].shape[1]
    top = (1 << 8 * max(t.dtype.itemsize for t in tiles)) - 1  # the largest level the tiles can hold
    if pixels * pixels * top * top >= 1 << 62:
        return None
    return np.int32 if pixels * top * top < 1 << 31 else np.int64


def statistic_delta(golden: FloatArray, current: FloatArray, reference: FloatArray | None = None) -> FloatArray:
    """Largest change of a channel's mean or std, in units of its golden std, from two (C, 4) statistics arrays.

    Mean and std average over the whole map, so they see a coherent change (a scale, an offset, a shifted
    distribution) far above per-pixel float noise; min and max are kept in the sidecar for people, not judged,
    because on small deep maps they are single noisy pixels. The unit is floored at the layer's median std: float
    noise scales with the layer, not the channel, so a quiet channel must not turn it into a large relative change.
    It is also floored at ``STAT_LEVEL_FLOOR`` of the layer's level, for layers whose channels are all flat.
    ``reference``, when given, is what ``current`` is measured against instead of ``golden`` (the noise floor).
    """
    std = golden[:, 1]
    level = float((np.abs(golden[:, 0]) + std).max(initial=0.0))
    floor = max(median(std) if std.size else 0.0, spread_floor(std), STAT_LEVEL_FLOOR * level)
    unit = np.maximum(std, floor)
    base = golden if reference is None else reference
    result: FloatArray = (np.abs(current[:, :2] - base[:, :2]) / unit[:, None]).max(axis=1)
    return result


def level_aligned(golden: TileArray, current: TileArray, data_range: float) -> TileArray:
    """``current`` with each tile whose golden is flat moved by the uniform level shift between the two tiles.

    A flat golden tile carries no structure, so structure is all its pictures are compared for (module doc); a
    current tile that is flat too then matches it exactly, one that grew structure still shows it.
    """
    g = golden.reshape(golden.shape[0], -1)
    flat = g.min(axis=1) == g.max(axis=1)
    if not flat.any():
        return current
    c = current.reshape(current.shape[0], -1).astype(np.int64)
    shift = np.rint(c[flat].mean(axis=1) - g[flat, 0]).astype(np.int64)
    c[flat] = np.clip(c[flat] - shift[:, None], 0, int(data_range))
    return cast(TileArray, c.astype(current.dtype).reshape(current.shape))


def tile_scores(golden: TileArray, current: TileArray, data_range: float) -> tuple[FloatArray, FloatArray]:
    """:func:`ssim_batch` and :func:`rms_error` of each pair of tiles.

    A byte-identical pair scores exactly 1 and 0 (what both formulas give for it, tested), so only the pairs that
    differ are computed: a re-run on the same kind of machine mostly compares identical tiles, and the window sums
    were most of a check's cost. Each pair's scores do not depend on the others in the batch.
    """
    count = golden.shape[0]
    same = (golden.reshape(count, -1) == current.reshape(count, -1)).all(axis=1)
    ssim: FloatArray = np.ones(count, dtype=np.float64)
    errors: FloatArray = np.zeros(count, dtype=np.float64)
    if not same.all():
        changed = ~same
        ssim[changed] = ssim_batch(golden[changed], current[changed], data_range)
        errors[changed] = rms_error(golden[changed], current[changed], data_range)
    return ssim, errors


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
    features: tuple[FloatArray, FloatArray] | None = None,
) -> LayerResult:
    """Score every channel of one layer and give the layer's verdict (drift if any channel breaks a tolerance).

    ``features``: a token image's golden and current per-feature statistics (``mean, std`` rows); its statistics
    change is then the largest of its whole picture's and of its features'.
    """
    current_tiles = level_aligned(golden_tiles, current_tiles, data_range)
    ssim, errors = tile_scores(golden_tiles, current_tiles, data_range)
    deltas = statistic_delta(golden_stats, current_stats)
    if features is not None:
        deltas = np.maximum(deltas, float(statistic_delta(*features).max(initial=0.0)))
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


def needs_noise_floor(layer: LayerResult) -> bool:
    """Whether a matching layer scored outside the band that its tightest fitted tolerances would still pass.

    Only such a layer is worth a second forward pass under TF32 rounding (``snapshot``): a clean re-run scores
    exactly 1 / 0 / 0 and costs nothing extra.
    """
    if layer.verdict != MATCH or not layer.ssim:
        return False
    return (
        1.0 - layer.min_ssim > NOISE_TIGHTEST * (1.0 - layer.threshold)
        or layer.max_rms_error > NOISE_TIGHTEST * layer.rms_tolerance
        or layer.max_stat_delta > NOISE_TIGHTEST * layer.stat_tolerance
    )


def drifted_by_scores(layer: LayerResult) -> bool:
    """Whether a layer drifted by its scores (not by a changed selection or layout, which compares no picture).

    Against a golden made with other float arithmetic its noise floor is measured too (``noisefloor.fit_noise_floor``),
    so that its message can say whether TF32 rounding alone moves it that far. Its verdict stands: fitted tolerances
    are never looser than the configured ones it failed.
    """
    return layer.verdict == DRIFT and bool(layer.ssim) and not layer.reason


def within_noise(layer: LayerResult, noise: NoiseFloor) -> bool:
    """Whether every score of ``layer`` stays within ``NOISE_FACTOR`` times how far TF32 rounding alone moves it: a
    drift that size may be that noise; a larger one is not (a 30% weight change beside a noise of 0.01)."""
    return (
        1.0 - layer.min_ssim <= NOISE_FACTOR * (1.0 - noise.ssim)
        and layer.max_rms_error <= NOISE_FACTOR * noise.rms_error
        and layer.max_stat_delta <= NOISE_FACTOR * noise.stat_delta
    )


def noise_floor(
    golden_tiles: TileArray,
    current_tiles: TileArray,
    noisy_tiles: TileArray,
    golden_stats: FloatArray,
    current_stats: FloatArray,
    noisy_stats: FloatArray,
    data_range: float,
    features: tuple[FloatArray, FloatArray, FloatArray] | None = None,
) -> NoiseFloor:
    """How far the TF32-rounded run moved a layer from the plain run, in the golden's units (worst channel).

    ``features``: a token image's golden, current and noisy per-feature statistics (as in :func:`compare_layer`).
    """
    plain = level_aligned(golden_tiles, current_tiles, data_range)
    noisy = level_aligned(golden_tiles, noisy_tiles, data_range)
    stat = float(statistic_delta(golden_stats, noisy_stats, reference=current_stats).max())
    if features is not None:
        golden_features, current_features, noisy_features = features
        moved = statistic_delta(golden_features, noisy_features, reference=current_features)
        stat = max(stat, float(moved.max(initial=0.0)))
    return NoiseFloor(
        ssim=float(ssim_batch(plain, noisy, data_range).min()),
        rms_error=float(rms_error(golden_tiles, noisy, data_range, reference=plain).max()),
        stat_delta=stat,
    )


def _fit(configured: float, measured: float) -> float:
    if not math.isfinite(measured):
        return configured
    return max(NOISE_TIGHTEST * configured, min(configured, NOISE_FACTOR * measured))


def noise_reaches_tolerances(layer: LayerResult) -> bool:
    """Whether the tolerances :func:`fitted` to the layer's noise floor hit their ceiling, the configured ones:
    ``NOISE_FACTOR`` times its TF32 noise is more than the configuration allows (:func:`_fit`), so that noise alone
    could fail the layer on other float arithmetic. ``False`` for a layer judged without a noise floor."""
    noise = layer.noise
    if noise is None:
        return False
    return (
        NOISE_FACTOR * (1.0 - noise.ssim) > 1.0 - layer.threshold
        or NOISE_FACTOR * noise.rms_error > layer.rms_tolerance
        or NOISE_FACTOR * noise.stat_delta > layer.stat_tolerance
    )


def fitted(layer: LayerResult, noise: NoiseFloor) -> LayerResult:
    """``layer`` judged again by tolerances fitted to its ``noise`` floor (tighter or equal, never looser)."""
    deficit = 1.0 - layer.threshold
    fitted_deficit = _fit(deficit, 1.0 - noise.ssim)
    tuned = dataclasses.replace(
        layer,
        threshold=layer.threshold if fitted_deficit == deficit else 1.0 - fitted_deficit,
        stat_tolerance=_fit(layer.stat_tolerance, noise.stat_delta),
        rms_tolerance=_fit(layer.rms_tolerance, noise.rms_error),
        noise=noise,
    )
    failed = any(tuned.channel_failed(i) for i in range(len(tuned.ssim)))
    return dataclasses.replace(tuned, verdict=DRIFT if failed else layer.verdict)
