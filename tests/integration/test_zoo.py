"""The zoo sweep (slow): torchvision architectures with seeded random weights, no downloads.

For each model: ``layers=None`` snapshot written (update), a clean re-check matches, and a 10% change to the first
weight tensor (each weight times ``1 + 0.1 z``) is caught as drift. Run it with ``pytest -m slow
tests/integration/test_zoo.py``; ``python tests/integration/test_zoo.py`` prints the table in docs/architectures.md.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional

from pytest_featviz.config import Settings
from pytest_featviz.records import CREATED, DRIFTED, MATCHED
from pytest_featviz.snapshot import TestIdentity, check_snapshot

pytestmark = pytest.mark.slow


def photo(size: int) -> torch.Tensor:
    """skimage's astronaut, (3, size, size), ImageNet-normalized."""
    from skimage import data

    image = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float().div(255).unsqueeze(0)
    image = functional.interpolate(image, size=(size, size), mode="bilinear", align_corners=False)[0]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    return (image - mean) / std


def clip(frames: int, size: int) -> torch.Tensor:
    """A (1, 3, T, H, W) clip: the photo drifting one pixel per frame."""
    image = photo(size + frames)
    return torch.stack([image[:, t : t + size, t : t + size] for t in range(frames)], dim=1).unsqueeze(0)


@dataclass(frozen=True)
class Case:
    build: Callable[[], nn.Module]
    inputs: Callable[[], Any]


def _cases() -> dict[str, Case]:
    from torchvision.models import (
        detection,
        maxvit_t,
        mobilenet_v3_small,
        optical_flow,
        resnet18,
        segmentation,
        swin_t,
        video,
        vit_b_16,
    )

    return {
        "resnet18": Case(resnet18, lambda: photo(64).unsqueeze(0)),
        "mobilenet_v3_small": Case(mobilenet_v3_small, lambda: photo(64).unsqueeze(0)),
        "vit_b_16": Case(lambda: vit_b_16(image_size=64), lambda: photo(64).unsqueeze(0)),
        "swin_t": Case(swin_t, lambda: photo(64).unsqueeze(0)),
        "maxvit_t": Case(maxvit_t, lambda: photo(224).unsqueeze(0)),  # its partitions need 224 px
        "deeplabv3_mobilenet_v3_large": Case(
            lambda: segmentation.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None),
            lambda: photo(64).unsqueeze(0),
        ),
        "r3d_18": Case(video.r3d_18, lambda: clip(4, 32)),
        "fasterrcnn_mobilenet_v3_large_fpn": Case(
            lambda: detection.fasterrcnn_mobilenet_v3_large_fpn(
                weights=None, weights_backbone=None, min_size=128, max_size=128
            ),
            lambda: [photo(128)],
        ),
        "raft_small": Case(
            optical_flow.raft_small,
            lambda: {"image1": photo(128).unsqueeze(0), "image2": clip(2, 128)[:, :, 1], "num_flow_updates": 4},
        ),
    }


MODELS = [
    "resnet18",
    "mobilenet_v3_small",
    "vit_b_16",
    "swin_t",
    "maxvit_t",
    "deeplabv3_mobilenet_v3_large",
    "r3d_18",
    "fasterrcnn_mobilenet_v3_large_fpn",
    "raft_small",
]


@dataclass(frozen=True)
class Sweep:
    layers: list[str]
    outcomes: tuple[str, str, str]
    seconds: float


def sweep(name: str, golden_dir: Path) -> Sweep:
    """Update, re-check, then change the first weight tensor by 10% and check again.

    The change multiplies each weight by ``1 + 0.1 * z`` (z seeded standard normal): a pure 1.1 scale would be
    undone exactly by a norm layer that follows (RAFT's first convolution feeds an InstanceNorm), and a snapshot that
    matches a model computing the same thing is right, not blind.
    """
    start = time.perf_counter()
    case = _cases()[name]
    torch.manual_seed(0)
    model = case.build().eval()
    inputs = case.inputs()
    identity = TestIdentity(f"test_zoo.py::{name}", "test_zoo.py", name, f"pytest --featviz-update {name}")
    directory = golden_dir / name

    def check(update: bool) -> str:
        settings = Settings(golden_dir=golden_dir, update=update)
        return check_snapshot(model, inputs, None, settings, directory, identity, "0").result.outcome

    created, clean = check(True), check(False)
    first = next(p for n, p in model.named_parameters() if n.endswith("weight"))
    noise = torch.randn(first.shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        first.mul_(1 + 0.1 * noise)
    changed = check(False)
    layers = [layer["name"] for layer in json.loads((directory / "snapshot.json").read_text())["layers"]]
    return Sweep(layers, (created, clean, changed), time.perf_counter() - start)


@pytest.mark.parametrize("name", MODELS)
def test_default_snapshot_matches_itself_and_catches_a_weight_change(name: str, tmp_path: Path) -> None:
    result = sweep(name, tmp_path)
    assert result.outcomes == (CREATED, MATCHED, DRIFTED)
    assert 2 <= len(result.layers) <= 8


if __name__ == "__main__":
    import tempfile

    print("| model | layers chosen (layers=None) | update / re-check / 10% weight change | seconds |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for model_name in sys.argv[1:] or MODELS:
            got = sweep(model_name, Path(folder))
            verdict = "pass" if got.outcomes == (CREATED, MATCHED, DRIFTED) else "FAIL"
            print(
                f"| {model_name} | {', '.join(got.layers)} | {' / '.join(got.outcomes)} ({verdict}) |"
                f" {got.seconds:.1f} |",
                flush=True,
            )
