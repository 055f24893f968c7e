"""Batched SSIM (``compare.ssim_batch``, all tiles of a layer at once) against scikit-image's per-channel loop.

The tiles are those of a real check: the ResNet-18 snapshot (``relu, layer1..layer4``, 16 channels, 224 px; the
112 x 112 stem pooled into 56 x 56 tiles as a check does), the current tiles being the activation with 1%
multiplicative noise rendered in the golden's frame. Both sides are
timed interleaved, in CPU time of this thread (both are single-threaded numpy/scipy, so CPU time is what a quiet
machine's wall clock would show), and the values are compared (target: >= 5x faster, equal within 1e-6).

Usage: ``python benchmarks/ssim_speed.py [--repeats N]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

from pytest_featviz.capture import capture  # noqa: E402
from pytest_featviz.compare import ssim_batch, upscale_to_window  # noqa: E402
from pytest_featviz.layers import resolve_layers  # noqa: E402
from pytest_featviz.render import channel_frames, pool_maps, render_tiles, tile_pool  # noqa: E402

Tiles = list[tuple[str, np.ndarray[Any, Any], np.ndarray[Any, Any]]]


def layer_tiles() -> Tiles:
    model, inputs = common.resnet(18), common.photo()
    rng = np.random.default_rng(0)
    out = []
    for item in capture(model, inputs, resolve_layers(model, common.RESNET18_LAYERS), 16):
        maps = pool_maps(item.maps.numpy(), tile_pool(*item.maps.shape[1:]))  # the tiles as a check renders them
        frames = channel_frames(maps, "minmax")
        noisy = (maps * (1.0 + 0.01 * rng.standard_normal(maps.shape))).astype(np.float32)
        out.append((item.name, render_tiles(maps, frames, "minmax"), render_tiles(noisy, frames, "minmax")))
    return out


def skimage_loop(golden: np.ndarray[Any, Any], current: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    from skimage.metrics import structural_similarity

    g, c = upscale_to_window(golden), upscale_to_window(current)
    return np.array([structural_similarity(g[i], c[i], data_range=255.0, win_size=7) for i in range(len(g))])


def cpu_times(cases: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for run in cases.values():
        run()
    for _ in range(repeats):
        for name, run in cases.items():
            start = time.thread_time()
            run()
            samples[name].append(time.thread_time() - start)
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=25)
    args = parser.parse_args(argv)
    tiles = layer_tiles()
    rows = []
    worst_error = 0.0
    all_cases: dict[str, Callable[[], object]] = {}
    for name, golden, current in tiles:
        error = float(np.abs(ssim_batch(golden, current, 255.0) - skimage_loop(golden, current)).max())
        worst_error = max(worst_error, error)
        all_cases[f"{name} skimage"] = lambda g=golden, c=current: skimage_loop(g, c)
        all_cases[f"{name} batch"] = lambda g=golden, c=current: ssim_batch(g, c, 255.0)
    samples = cpu_times(all_cases, args.repeats)
    total = {"skimage": 0.0, "batch": 0.0}
    for name, golden, _ in tiles:
        loop = statistics.median(samples[f"{name} skimage"])
        batch = statistics.median(samples[f"{name} batch"])
        total["skimage"] += loop
        total["batch"] += batch
        shape = "x".join(map(str, golden.shape))
        rows.append([name, shape, f"{loop * 1000:.2f}", f"{batch * 1000:.2f}", f"{loop / batch:.1f}x"])
    speedup = total["skimage"] / total["batch"]
    rows.append(["all", "", f"{total['skimage'] * 1000:.2f}", f"{total['batch'] * 1000:.2f}", f"{speedup:.1f}x"])
    print(f"SSIM of the ResNet-18 snapshot's tiles, median CPU ms of {args.repeats} interleaved runs")
    print(common.table(rows, ["layer", "tiles", "skimage loop ms", "ssim_batch ms", "speed-up"]))
    print(f"speed-up {speedup:.1f}x (target >= 5x: {'met' if speedup >= 5 else 'NOT met'});")
    print(
        f"largest |ssim_batch - skimage| {worst_error:.1e}"
        f" (target <= 1e-6: {'met' if worst_error <= 1e-6 else 'NOT met'})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
