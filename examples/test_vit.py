"""A vision transformer (torchvision's VisionTransformer class, a small seeded configuration) on a photo.

The patch embedding is a (B, D, 14, 14) map; the encoder blocks return (B, tokens, D) sequences, which
pytest-featviz renders with the layout rules documented in "Writing snapshot tests".
"""

from __future__ import annotations

import pytest
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer

LAYERS = ["conv_proj", "encoder.layers.encoder_layer_0", "encoder.layers.encoder_layer_3", "encoder.ln"]


@pytest.fixture(scope="module")
def model(seed) -> nn.Module:
    # A ViT-Tiny-like configuration with four blocks: the architecture of vit_b_16 at a fraction of its cost.
    return seed(
        lambda: VisionTransformer(image_size=224, patch_size=16, num_layers=4, num_heads=3, hidden_dim=192, mlp_dim=768)
    )


def test_vit_tokens(feature_snapshot, model, photo):
    result = feature_snapshot(model, photo("chelsea"), layers=LAYERS, channels=8)
    assert result.layers[0].shape == (1, 192, 14, 14)
