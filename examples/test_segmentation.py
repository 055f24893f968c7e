"""A segmentation model (DeepLabV3 with a MobileNetV3 backbone, seeded random weights) on a photo.

The model returns a dict; each selected layer is hooked by name, so the snapshot does not care about the output
type. ``layers=None`` takes the documented default choice: the output of each resolution stage.
"""

from __future__ import annotations

import pytest
from torch import nn
from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large


@pytest.fixture(scope="module")
def model(seed) -> nn.Module:
    return seed(lambda: deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None))


def test_deeplabv3_default_layers(feature_snapshot, model, photo):
    result = feature_snapshot(model, photo("coffee"), channels=8)
    assert result.layers[-1].name == "classifier"


def test_deeplabv3_backbone_outputs(feature_snapshot, model, photo):
    # The backbone returns a dict {"out": ...}: a tensor in it is selected as "backbone+out". Here with the 8
    # channels of highest energy (the choice is kept in the golden). The class-score head of a random-init DeepLabV3
    # is not snapshotted: its inputs are about 1e-9, so it outputs its bias, the same for any photo.
    result = feature_snapshot(model, photo("coffee"), layers=["backbone.4", "backbone+out"], channels="top:8")
    assert [layer.name for layer in result.layers] == ["backbone.4", "backbone+out"]  # forward order
