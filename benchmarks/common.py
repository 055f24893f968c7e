"""Shared pieces of the benchmarks: seeded models, a photo input, a direct snapshot call and a fair timer.

The benchmarks call :func:`pytest_featviz.snapshot.check_snapshot` directly (no pytest run around it), so what they
time is the plugin's work per ``feature_snapshot`` call. Timings are interleaved (A, B, A, B, ...) and reported as
medians, because this is a small, shared, noisy machine: a slow spell then hits both sides of a ratio alike.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pytest_featviz.config import Settings
from pytest_featviz.layers import LayerSpec
from pytest_featviz.snapshot import TestIdentity, check_snapshot

RESNET18_LAYERS = ["relu", "layer1", "layer2", "layer3", "layer4"]
RESNET50_LAYERS = [
    "relu",
    "layer1",
    "layer2.1",
    "layer2",
    "layer3.2",
    "layer3",
    "layer4.1",
    "layer4",
]
IDENTITY = TestIdentity("bench.py::test_bench", "bench.py", "test_bench", "pytest --featviz-update bench.py")


def resnet(depth: int) -> nn.Module:
    """A seeded, randomly initialised torchvision ResNet-18 or -50 in eval mode (no downloaded weights)."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18() if depth == 18 else torchvision.models.resnet50()
    return model.eval()


def photo(size: int = 224) -> torch.Tensor:
    """scikit-image's astronaut, resized to ``size`` x ``size`` and standardised: a (1, 3, size, size) tensor."""
    from skimage import data

    image = torch.from_numpy(data.astronaut().astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    image = torch.nn.functional.interpolate(image, size=(size, size), mode="bilinear", align_corners=False)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return ((image - mean) / std).contiguous()


def settings(golden_dir: Path, *, update: bool = False, channels: int = 16) -> Settings:
    return Settings(golden_dir=golden_dir, update=update, channels=channels)


def snapshot_call(model: nn.Module, inputs: Any, layers: LayerSpec, directory: Path, *, update: bool) -> str:
    """One ``feature_snapshot`` call's work (capture, render, compare, write on update); returns the outcome."""
    evidence = check_snapshot(
        model, inputs, layers, settings(directory.parent, update=update), directory, IDENTITY, directory.name
    )
    return evidence.result.outcome


def bare_forward(model: nn.Module, inputs: torch.Tensor) -> None:
    """The forward pass a test would run anyway, under the same modes the plugin uses (eval, inference mode)."""
    with torch.inference_mode():
        model(inputs)


def interleaved(cases: dict[str, Callable[[], object]], repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median seconds per call of each case, timing the cases in turn so that noise hits them alike."""
    return interleaved_wall_cpu(cases, repeats, warmup)[0]


def interleaved_wall_cpu(
    cases: dict[str, Callable[[], object]], repeats: int, warmup: int = 2
) -> tuple[dict[str, float], dict[str, float]]:
    """Median wall seconds and median process CPU seconds (all threads) per call of each case, interleaved.

    On a shared machine the wall clock also counts time the process waited for a core; CPU time does not, so the
    two together bracket what a quiet machine would show.
    """
    for _ in range(warmup):
        for run in cases.values():
            run()
    wall: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, run in cases.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            run()
            cpu[name].append(time.process_time() - start_cpu)
            wall[name].append(time.perf_counter() - start)
    return (
        {name: statistics.median(values) for name, values in wall.items()},
        {name: statistics.median(values) for name, values in cpu.items()},
    )


def fresh_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"featviz-bench-{prefix}-"))


def directory_bytes(directory: Path) -> dict[str, int]:
    """Bytes on disk (file sizes) of every file in ``directory``."""
    return {p.name: p.stat().st_size for p in sorted(directory.iterdir()) if p.is_file()}


def table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    """A plain-text table for the benchmark output (also pasted into docs/performance.md)."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
