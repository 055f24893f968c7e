"""Unit tests of pytest-featviz, one module per package module; :func:`snapshotter` builds the fixture's object
without pytest, writing goldens under a temporary directory, and :func:`noisy_weights` changes a model a little."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

    from pytest_featviz.fixture import FeatureSnapshot
    from pytest_featviz.records import SnapshotResult

NODE_ID = "tests/test_model.py::test_features"


def snapshotter(
    golden_dir: Path, *, update: bool = False, records: list[SnapshotResult] | None = None, **settings: object
) -> FeatureSnapshot:
    """A ``feature_snapshot`` as the fixture builds it for ``NODE_ID``, with ``settings`` applied as by a marker."""
    from pytest_featviz.config import Settings
    from pytest_featviz.fixture import FeatureSnapshot
    from pytest_featviz.snapshot import TestIdentity, update_command

    resolved = Settings(golden_dir=golden_dir, update=update).override(settings, "test")
    identity = TestIdentity(NODE_ID, "tests/test_model.py", "test_features", update_command(NODE_ID))
    return FeatureSnapshot(identity, resolved, (records if records is not None else []).append)


def noisy_weights(model: nn.Module, fraction: float) -> nn.Module:
    """``model`` with seeded Gaussian noise of ``fraction`` of each weight matrix's std added to it, in place."""
    import torch

    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * parameter.std() * fraction)
    return model
