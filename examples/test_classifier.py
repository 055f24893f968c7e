"""A torchvision classifier (ResNet-18, seeded random weights) snapshotted on three scikit-image photos.

Shows the everyday shape of a snapshot test, a parametrized test (one golden per photo), several snapshots in one
test (named, so each has its own golden directory) and a marker-level threshold with a call-level override.
"""

from __future__ import annotations

import pytest
from torch import nn
from torchvision.models import resnet18

SIZE = 160


@pytest.fixture(scope="module")
def model(seed) -> nn.Module:
    return seed(lambda: resnet18(weights=None))


@pytest.mark.parametrize("photo_name", ["astronaut", "coffee", "chelsea"])
def test_resnet18_stages(feature_snapshot, model, photo, photo_name):
    # The output of every stage: stem (relu) and the four residual stages, 8 channels of each.
    result = feature_snapshot(
        model, photo(photo_name, SIZE), layers=["relu", "layer1", "layer2", "layer3", "layer4"], channels=8
    )
    assert [layer.name for layer in result.layers] == ["relu", "layer1", "layer2", "layer3", "layer4"]


@pytest.mark.featviz(threshold=0.97)
def test_resnet18_blocks(feature_snapshot, model, photo):
    # Several snapshots in one test. The marker sets the SSIM threshold for every call of this test; a keyword of
    # the call wins over the marker.
    x = photo("astronaut", SIZE)
    feature_snapshot(model, x, layers="layer1.?", channels=[0, 5, 10, 15], name="layer1-blocks")
    feature_snapshot(model, x, layers=nn.BatchNorm2d, channels=4, name="all-batchnorms")
    feature_snapshot(model, x, layers=["layer4.1.conv2"], channels="all", name="deepest-conv", threshold=0.95)
