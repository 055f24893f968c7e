"""stages across architectures: the default choice for a ResNet, a ViT, a Swin, U-Nets, parallel branches, a
backbone's dict, video, an MLP, a module called repeatedly and small transformers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import SwinTransformer, VisionTransformer, resnet18

from pytest_featviz.capture import capture
from pytest_featviz.layers import resolve_layers
from pytest_featviz.records import MATCHED, FeatureDriftError
from pytest_featviz.stages import default_selection
from unit import snapshotter

IMAGE = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def test_default_choice_for_a_resnet_is_its_stage_outputs() -> None:
    torch.manual_seed(0)
    assert default_selection(resnet18(), torch.randn(1, 3, 64, 64)) == ["relu", "layer1", "layer2", "layer3", "layer4"]


def test_default_choice_for_a_vit_is_spread_over_its_blocks() -> None:
    torch.manual_seed(0)
    vit = VisionTransformer(image_size=32, patch_size=8, num_layers=6, num_heads=2, hidden_dim=16, mlp_dim=32)
    chosen = default_selection(vit, torch.randn(1, 3, 32, 32))
    blocks = [f"encoder.layers.encoder_layer_{i}" for i in (0, 2, 3, 5)]
    assert chosen == [*blocks, "encoder"]
    layers = capture(vit, torch.randn(1, 3, 32, 32), resolve_layers(vit, chosen), 4)
    assert {(item.layout, tuple(item.maps.shape)) for item in layers} == {("tokens:1+4x4", (4, 4, 4))}


def test_default_choice_for_a_swin_takes_its_nhwc_stages() -> None:
    torch.manual_seed(0)
    swin = SwinTransformer([4, 4], 8, [1, 1, 1, 1], [1, 1, 1, 1], [2, 2])
    image = torch.randn(1, 3, 64, 64)
    chosen = default_selection(swin, image)
    assert chosen == ["features.1", "features.3", "features.5", "permute"]
    layers = capture(swin, image, resolve_layers(swin, chosen), 2)
    assert [(item.layout, tuple(item.maps.shape)) for item in layers] == [
        ("nhwc", (2, 16, 16)),
        ("nhwc", (2, 8, 8)),
        ("nhwc", (2, 4, 4)),
        ("nchw", (2, 2, 2)),
    ]


def _unit(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inputs, outputs, 3, padding=1), nn.ReLU())


class UNet(nn.Module):
    """Down 16 -> 8 -> 4, up 8 -> 16 with skip connections: the decoder returns through the encoder's grids."""

    def __init__(self) -> None:
        super().__init__()
        self.enc1, self.enc2, self.bottom = _unit(3, 4), _unit(4, 4), _unit(4, 4)
        self.pool = nn.MaxPool2d(2)
        self.up2, self.dec2 = nn.ConvTranspose2d(4, 4, 2, stride=2), _unit(8, 4)
        self.up1, self.dec1 = nn.ConvTranspose2d(4, 4, 2, stride=2), _unit(8, 4)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        bottom = self.bottom(self.pool(e2))
        d2 = self.dec2(torch.cat([self.up2(bottom), e2], 1))
        return self.head(self.dec1(torch.cat([self.up1(d2), e1], 1)))


class Branches(nn.Module):
    """An Inception reduction block: each branch starts again from the block's input and ends at half its size."""

    def __init__(self) -> None:
        super().__init__()
        self.branch1 = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.branch2a, self.branch2b = _unit(4, 4), nn.Conv2d(4, 4, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2b(self.branch2a(x))], 1)


class Backbone(nn.Module):
    """Ends by returning an earlier, larger map as well (torchvision's IntermediateLayerGetter's dict)."""

    def __init__(self) -> None:
        super().__init__()
        self.early, self.late = _unit(3, 4), nn.Conv2d(4, 4, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        early = self.early(x)
        return {"low": early, "high": self.late(early)}


class Tapped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone, self.head = Backbone(), nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x)["high"])


def test_default_choice_of_a_u_net_takes_its_encoder_and_its_decoder() -> None:
    """Each grid had one chosen module, the last: the decoder's stages took the encoder's grids, so no encoder stage
    was snapshot and a change in the encoder was reported at a decoder stage. A grid that comes back after smaller
    ones now starts the decoder's own stages."""
    torch.manual_seed(0)
    assert default_selection(UNet(), torch.randn(1, 3, 16, 16)) == ["enc1", "enc2", "bottom", "dec2", "head"]


class DeepUNet(nn.Module):
    """The classic U-Net's five levels: nine stages, one more than the default choice takes."""

    def __init__(self) -> None:
        super().__init__()
        self.enc1, self.enc2, self.enc3, self.enc4, self.bottom = (_unit(3 if i == 0 else 4, 4) for i in range(5))
        self.pool = nn.MaxPool2d(2)
        self.up = nn.Upsample(scale_factor=2.0)
        self.dec4, self.dec3, self.dec2, self.dec1 = (_unit(8, 4) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.enc1(x)]
        for encoder in (self.enc2, self.enc3, self.enc4):
            skips.append(encoder(self.pool(skips[-1])))
        x = self.bottom(self.pool(skips[-1]))
        for decoder in (self.dec4, self.dec3, self.dec2, self.dec1):
            x = decoder(torch.cat([self.up(x), skips.pop()], 1))
        return x


def test_default_choice_of_a_deep_u_net_keeps_its_bottleneck() -> None:
    """Nine stages spread over eight picks passed over the middle one: the bottleneck, the deepest stage."""
    torch.manual_seed(0)
    chosen = default_selection(DeepUNet(), torch.randn(1, 3, 32, 32))
    assert len(chosen) == 8 and "bottom" in chosen and chosen[0] == "enc1" and chosen[-1] == "dec1"


def test_parallel_branches_and_a_backbone_s_dict_start_no_decoder_stages() -> None:
    """Grids also grow back where a block's second branch starts from the block's input, or where a backbone
    returns an earlier map: neither is a decoder, so the choice stays one module per grid."""
    torch.manual_seed(0)
    inception = nn.Sequential(_unit(3, 4), Branches(), _unit(8, 4), Branches())
    assert default_selection(inception, torch.randn(1, 3, 16, 16)) == ["0", "1", "2", "3"]
    assert default_selection(Tapped(), torch.randn(1, 3, 16, 16)) == ["backbone", "head"]


def test_default_choice_for_a_video_net_and_for_a_net_without_maps() -> None:
    video = nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 4, 3, stride=2, padding=1))
    # two T x H x W grids, topped up by the run of three sibling layers
    assert default_selection(video, torch.randn(1, 3, 4, 8, 8)) == ["0", "1", "2"]
    mlp = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 2))
    assert default_selection(mlp, torch.randn(1, 5)) == ["0", "1", "2"]


class Loop(nn.Module):
    def __init__(self, steps: int) -> None:
        super().__init__()
        self.steps = steps
        self.stem = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.step = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for _ in range(self.steps):
            x = self.step(x)
        return x


def test_a_module_called_repeatedly_is_chosen_at_its_last_call() -> None:
    assert default_selection(Loop(6), IMAGE) == ["stem", "step@5"]  # RAFT-like refinement: the last step
    assert default_selection(Loop(3), IMAGE) == ["stem", "step@2"]  # each call takes the previous one's output
    # ``step`` selects every call; ``step@5`` next to it adds nothing
    assert [t.name for t in resolve_layers(Loop(6), ["step", "step@5"])] == ["step"]


class Siamese(nn.Module):
    """One encoder run on each of two pictures, then compared: the encoder's last call sees only the second."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        return (self.encoder(first) - self.encoder(second)).abs()


def test_a_module_shared_by_a_few_inputs_is_chosen_at_every_call(tmp_path: Path) -> None:
    """A Siamese network's default was the encoder's last call alone, so a change to the first picture passed."""
    torch.manual_seed(0)
    model, pictures = Siamese().eval(), (torch.rand(1, 3, 24, 24), torch.rand(1, 3, 24, 24))
    assert default_selection(model, pictures) == ["encoder.0", "encoder.2", "encoder"]
    made = snapshotter(tmp_path, update=True)(model, pictures)
    assert [layer.name for layer in made.layers] == [
        "encoder.0",
        "encoder.2",
        "encoder",
        "encoder.0@1",
        "encoder.2@1",
        "encoder@1",
    ]
    assert snapshotter(tmp_path)(model, pictures).outcome == MATCHED
    with pytest.raises(FeatureDriftError, match="drift starts at layer 'encoder.0'"):
        snapshotter(tmp_path)(model, (pictures[0].flip(-1), pictures[1]))


class Stack(nn.Module):
    """A small transformer over picture patches or over token ids: blocks at depth 1, as many codebases write it."""

    def __init__(self, depth: int, image: bool) -> None:
        super().__init__()
        self.image = image
        self.embed: nn.Module = nn.Conv2d(3, 24, 8, 8) if image else nn.Embedding(100, 24)
        self.blocks = nn.ModuleList(
            [nn.TransformerEncoderLayer(24, 2, 48, dropout=0.0, batch_first=True) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(24)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x).flatten(2).transpose(1, 2) if self.image else self.embed(x)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


@pytest.mark.parametrize(("depth", "blocks"), [(2, [0, 1]), (4, [0, 1, 2, 3]), (6, [0, 2, 3, 5])])
def test_default_choice_of_a_small_transformer_takes_its_blocks_not_the_insides_of_one(
    depth: int, blocks: list[int]
) -> None:
    torch.manual_seed(0)
    chosen = default_selection(Stack(depth, image=True).eval(), torch.randn(1, 3, 32, 32))
    assert chosen == [*(f"blocks.{i}" for i in blocks), "norm"]
    # without a picture, no output is spatial: the blocks and the module that ran last at the top
    text = default_selection(Stack(depth, image=False).eval(), torch.randint(0, 100, (1, 20)))
    assert text == [*(f"blocks.{i}" for i in blocks), "norm"]


def test_default_choice_of_a_bare_transformer_encoder_takes_its_layers() -> None:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
    encoder = nn.TransformerEncoder(layer, 3, enable_nested_tensor=False).eval()
    # no child of the encoder runs itself (``layers`` is a ModuleList): the shallowest modules that ran are taken
    assert default_selection(encoder, torch.randn(1, 10, 16)) == ["layers.0", "layers.1", "layers.2"]
