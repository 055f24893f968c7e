"""Golden size: bytes on disk of the ResNet-18 snapshot (``relu, layer1..layer4``, 16 channels, 224 px).

Writes the golden with the plugin (what ``--featviz-update`` writes), lists its files, and then measures the
alternatives on the same tiles: zlib strategy and level, mosaic layout (square grid or one column), and bit depth.
Bit depths below 8 are listed only to show what they would save: they change the tiles the comparison sees.

Usage: ``python benchmarks/golden_size.py``. Target (issue #6): <= 100 KiB for this snapshot.
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

from pytest_featviz import png  # noqa: E402
from pytest_featviz.capture import capture  # noqa: E402
from pytest_featviz.layers import resolve_layers  # noqa: E402
from pytest_featviz.render import build_mosaic, channel_frames  # noqa: E402

TARGET = 100 * 1024
ENCODERS: dict[str, dict[str, Any]] = {
    "Pillow filters, level 9, default strategy (first)": {"compress_level": 9},
    "Pillow filters, level 6 (Pillow default)": {"compress_level": 6},
    "Pillow filters, level 1": {"compress_level": 1},
    "Pillow filters, level 9, Z_FILTERED": {"compress_level": 9, "compress_type": zlib.Z_FILTERED},
    "Pillow filters, level 9, Z_HUFFMAN_ONLY": {"compress_level": 9, "compress_type": zlib.Z_HUFFMAN_ONLY},
    "Pillow filters, level 9, Z_RLE (before)": {"compress_level": 9, "compress_type": zlib.Z_RLE},
    "unfiltered rows, level 9, Z_RLE (now)": {"own": True},
}
NOW = "unfiltered rows, level 9, Z_RLE (now)"


def encode(image: np.ndarray[Any, Any], options: dict[str, Any]) -> bytes:
    if options.get("own"):
        return png.encode(np.ascontiguousarray(image))  # what the plugin writes
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG", **options)
    return buffer.getvalue()


def quantize(maps: np.ndarray[Any, Any], bits: int) -> np.ndarray[Any, Any]:
    frames = channel_frames(maps, "minmax")
    unit = np.clip((maps - frames[:, 0, None, None]) / (frames[:, 1, None, None] - frames[:, 0, None, None]), 0, 1)
    return np.rint(unit * ((1 << bits) - 1)).astype(np.uint8)


def residual_entropy(tiles: np.ndarray[Any, Any]) -> float:
    """Bytes of the order-0 entropy of the LOCO-I (median edge detector) prediction residuals of (C, H, W) tiles."""
    t = tiles.astype(np.int32)
    left, up, corner = np.zeros_like(t), np.zeros_like(t), np.zeros_like(t)
    left[:, :, 1:], up[:, 1:, :], corner[:, 1:, 1:] = t[:, :, :-1], t[:, :-1, :], t[:, :-1, :-1]
    low, high = np.minimum(left, up), np.maximum(left, up)
    guess = np.where(corner >= high, low, np.where(corner <= low, high, left + up - corner))
    _, counts = np.unique((t - guess) % 256, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum()) * t.size / 8


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    model, inputs = common.resnet(18), common.photo()
    root = common.fresh_dir("size")
    directory = root / "snapshot"
    assert common.snapshot_call(model, inputs, None, directory, update=True) == "created"
    files = common.directory_bytes(directory)
    blocks = sum(p.stat().st_blocks * 512 for p in directory.iterdir())
    total = sum(files.values())
    print("the golden as written (layers=None: the default choice)")
    print(common.table([[name, size] for name, size in files.items()] + [["total", total]], ["file", "bytes"]))
    print(
        f"total {total} bytes = {total / 1024:.1f} KiB (target <= 100 KiB: {'met' if total <= TARGET else 'NOT met'});"
        f" {blocks / 1024:.0f} KiB in file-system blocks"
    )
    sidecar = files.get("snapshot.json", 0)

    maps = [item.maps.numpy() for item in capture(model, inputs, resolve_layers(model, common.RESNET18_LAYERS), 16)]
    tiles8 = [quantize(m, 8) for m in maps]
    rows = []
    for label, options in ENCODERS.items():
        times = []
        for _ in range(5):
            start = time.thread_time()
            size = sum(len(encode(build_mosaic(t), options)) for t in tiles8)
            times.append(time.thread_time() - start)
        column = sum(len(encode(t.reshape(-1, t.shape[2]), options)) for t in tiles8)
        rows.append([label, size, column, f"{(size + sidecar) / 1024:.1f}", f"{statistics.median(times) * 1000:.1f}"])
    print()
    print(
        "8-bit pictures at full map resolution (before tile pooling), by encoder and layout; CPU ms to encode all five"
    )
    print(common.table(rows, ["encoder", "grid bytes", "column bytes", "KiB with sidecar", "encode ms"]))

    rows = []
    relu_only = []
    for bits in (8, 7, 6, 5, 4):
        size = sum(len(encode(build_mosaic(quantize(m, bits)), ENCODERS[NOW])) for m in maps)
        relu_only.append(len(encode(build_mosaic(quantize(maps[0], bits)), ENCODERS[NOW])))
        rows.append([bits, size, f"{(size + sidecar) / 1024:.1f}", relu_only[-1]])
    print()
    print("bit depth (not adopted below 8: it changes the tiles, SSIM and picture-change scores)")
    print(common.table(rows, ["bits", "picture bytes", "KiB with sidecar", "of which relu"]))

    bound = sum(residual_entropy(t) for t in tiles8)
    print()
    print(
        f"entropy of the 8-bit tiles after the LOCO-I (JPEG-LS) predictor, per layer,"
        f" summed: {bound / 1024:.1f} KiB. The maps of a randomly initialised ResNet are noise-like, so no lossless"
        " 8-bit encoding gets much below the PNG sizes above."
    )
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
