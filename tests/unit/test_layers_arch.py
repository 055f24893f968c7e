"""Layer names across architectures: wrappers, TorchScript, leaf selectors, the default choice, top:N in goldens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import SwinTransformer, VisionTransformer, resnet18

from pytest_featviz.capture import capture
from pytest_featviz.config import Settings
from pytest_featviz.layers import default_selection, resolve_layers
from pytest_featviz.records import CREATED, DRIFTED, MATCHED, FeatvizError
from pytest_featviz.snapshot import TestIdentity, check_snapshot


def tiny_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU())


class DictNet(nn.Module):
    """A segmentation-style model: a backbone that returns a dict, like torchvision's IntermediateLayerGetter."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.conv(x)
        return {"aux": features, "out": self.head(features)}


class Outer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.seg = DictNet()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seg(x)["out"]


IMAGE = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))


class Compiled(nn.Module):
    """The module tree of ``torch.compile(model)`` (an OptimizedModule holds the model as ``_orig_mod``), without
    importing dynamo, which costs seconds."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self._orig_mod = model


@pytest.mark.parametrize("wrap", [Compiled, nn.DataParallel], ids=["compile", "dataparallel"])
def test_names_resolve_with_and_without_the_wrapper_prefix(wrap: type[nn.Module]) -> None:
    model = tiny_cnn()
    wrapped = wrap(model)
    prefix = "_orig_mod." if isinstance(wrapped, Compiled) else "module."
    for name in ("2", prefix + "2"):
        (target,) = resolve_layers(wrapped, name)
        assert target.name == "2" and target.module is model[2]


def test_a_dataparallel_model_captures_under_the_plain_name() -> None:
    model = nn.DataParallel(tiny_cnn())  # on CPU it calls the module itself
    (layer,) = capture(model, IMAGE, resolve_layers(model, ["module.2"]), 16)
    assert layer.name == "2" and layer.shape == (1, 6, 4, 4)
    # two stages (8 x 8, 4 x 4) are fewer than four: the run of four sibling layers fills up
    assert default_selection(model, IMAGE) == ["0", "1", "2", "3"]


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_a_scripted_model_is_refused_with_what_to_do() -> None:
    scripted = torch.jit.script(tiny_cnn())
    with pytest.raises(FeatvizError, match=r"TorchScript modules \(the model itself\).*Snapshot the eager nn.Module"):
        resolve_layers(scripted, "0")
    with pytest.raises(FeatvizError, match="TorchScript"):
        default_selection(scripted, IMAGE)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_a_traced_submodule_is_refused_by_name() -> None:
    model = nn.Sequential(nn.Conv2d(3, 3, 1), torch.jit.trace(tiny_cnn(), IMAGE))
    with pytest.raises(FeatvizError, match=r"TorchScript modules \('1'\)"):
        resolve_layers(model, "0")


def test_a_leaf_selector_captures_that_leaf_under_its_name() -> None:
    model = Outer()
    targets = resolve_layers(model, ["seg+out", "seg+aux", "seg"])
    layers = capture(model, IMAGE, targets, 16)
    assert [(item.name, item.shape) for item in layers] == [
        ("seg+out", (1, 2, 8, 8)),
        ("seg+aux", (1, 4, 8, 8)),
        ("seg", (1, 4, 8, 8)),  # no selector: the first tensor leaf
    ]


def test_an_unknown_leaf_fails_naming_the_leaves() -> None:
    model = Outer()
    with pytest.raises(FeatvizError, match=r"layer 'seg\+logits'.*its tensor leaves: '\+aux', '\+out'"):
        capture(model, IMAGE, resolve_layers(model, "seg+logits"), 16)


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


def test_a_module_called_repeatedly_is_chosen_at_its_last_call() -> None:
    class Loop(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3, stride=2, padding=1)
            self.step = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.stem(x)
            for _ in range(3):
                x = self.step(x)
            return x

    assert default_selection(Loop(), IMAGE) == ["stem", "step@2"]
    # ``step`` selects every call; ``step@2`` next to it adds nothing
    assert [t.name for t in resolve_layers(Loop(), ["step", "step@2"])] == ["step"]


def _check(model: nn.Module, tmp_path: Path, update: bool, **settings: object) -> str:
    identity = TestIdentity("test_x.py::test_x", "test_x.py", "test_x", "pytest --featviz-update test_x.py::test_x")
    chosen = Settings(golden_dir=tmp_path, update=update).override(settings, "test")
    evidence = check_snapshot(model, IMAGE, None, chosen, tmp_path / "snap", identity, "0")
    return evidence.result.outcome


def test_default_names_and_layouts_are_recorded_and_reused(tmp_path: Path) -> None:
    model = tiny_cnn()
    assert _check(model, tmp_path, update=True) == CREATED
    sidecar = json.loads((tmp_path / "snap" / "snapshot.json").read_text())
    assert [(layer["name"], layer["layout"]) for layer in sidecar["layers"]] == [(n, "nchw") for n in "0123"]
    deeper = nn.Sequential(*tiny_cnn(), nn.Conv2d(6, 6, 3, stride=2, padding=1))  # would change the default
    assert _check(deeper, tmp_path, update=False) == MATCHED  # the golden's names, not a new default


def test_top_channels_are_stored_and_compared_as_stored(tmp_path: Path) -> None:
    model = tiny_cnn()
    assert _check(model, tmp_path, update=True, channels="top:2") == CREATED
    sidecar = json.loads((tmp_path / "snap" / "snapshot.json").read_text())
    stored = [[c["index"] for c in layer["channels"]] for layer in sidecar["layers"]]
    energy = model[:2](IMAGE)[0].square().mean(dim=(1, 2))
    assert stored[0] == sorted(energy.argsort(descending=True)[:2].tolist())
    with torch.no_grad():
        model[0].weight.mul_(1.1)  # 10% more: same top channels, other values
    assert _check(model, tmp_path, update=False, channels="top:2") == DRIFTED
    assert _check(tiny_cnn(), tmp_path, update=False, channels="top:2") == MATCHED


def test_top_channels_are_accepted_from_code_cli_and_ini_text() -> None:
    settings = Settings(golden_dir=Path("golden"))
    assert settings.override({"channels": " top:16 "}, "CLI").channels == "top:16"
    for bad in ("top:0", "top:", "top:x"):
        with pytest.raises(FeatvizError, match=r"CLI: channels 'top:N' needs a count N of at least 1"):
            settings.override({"channels": bad}, "CLI")


def test_a_golden_without_layout_read_another_way_now_drifts_with_the_reason(tmp_path: Path) -> None:
    # Tokens (1, 17, 8) were C=17 maps of 1 x 8 before layouts were recorded; now 8 maps of 4 x 4 (the input is a
    # 4 x 4 picture, whose pixels are the patch tokens, after a class token).
    class Patches(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            tokens = x.flatten(2).transpose(1, 2)
            return torch.cat([tokens[:, :1], tokens], dim=1)

    model = nn.Sequential(Patches(), nn.Linear(8, 8), nn.LayerNorm(8))
    tokens = torch.randn(1, 8, 4, 4, generator=torch.Generator().manual_seed(0))
    identity = TestIdentity("t.py::t", "t.py", "t", "pytest --featviz-update t.py::t")
    settings = Settings(golden_dir=tmp_path, update=True)
    check_snapshot(model, tokens, ["2"], settings, tmp_path / "snap", identity, "0")
    sidecar = tmp_path / "snap" / "snapshot.json"
    data = json.loads(sidecar.read_text())
    assert data["layers"][0]["layout"] == "tokens:1+4x4"
    del data["layers"][0]["layout"]
    data["layers"][0]["tile"] = [1, 8]
    sidecar.write_text(json.dumps(data))
    checked = check_snapshot(model, tokens, ["2"], Settings(golden_dir=tmp_path), tmp_path / "snap", identity, "0")
    assert checked.result.outcome == DRIFTED
    assert checked.result.layers[0].reason == "channel picture size changed from 1x8 to 4x4"


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


def test_a_change_in_a_later_token_of_a_sequence_first_model_is_caught(tmp_path: Path) -> None:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0)  # batch_first=False: (S, B, E)
    encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    tokens = torch.rand(12, 1, 16, generator=torch.Generator().manual_seed(1))
    identity = TestIdentity("t.py::t", "t.py", "t", "pytest --featviz-update t.py::t")

    def check(x: torch.Tensor, update: bool = False) -> str:
        settings = Settings(golden_dir=tmp_path, update=update)
        return check_snapshot(
            encoder, x, ["layers.0", "layers.1"], settings, tmp_path / "s", identity, "0"
        ).result.outcome

    assert check(tokens, update=True) == CREATED
    sidecar = json.loads((tmp_path / "s" / "snapshot.json").read_text())
    assert {layer["layout"] for layer in sidecar["layers"]} == {"token-image (batch axis 1)"}
    assert check(tokens) == MATCHED
    changed = tokens.clone()
    changed[5:] += 0.5  # every token from the sixth on; the first is what a batch-first reading kept
    assert check(changed) == DRIFTED


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors is in prototype stage")
def test_a_padded_transformer_encoder_on_its_nested_fast_path_is_captured() -> None:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True)
    encoder = nn.TransformerEncoder(layer, 2).eval()  # nested tensors inside, under inference mode, with a mask
    x = torch.randn(2, 6, 32, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[1, 4:] = True
    inputs = {"src": x, "src_key_padding_mask": mask}
    (kept,) = capture(encoder, inputs, resolve_layers(encoder, ["layers.0"]), "all")
    assert kept.shape == (2, 6, 32) and kept.layout == "token-image" and kept.maps.shape == (1, 6, 32)
    assert default_selection(encoder, inputs) == ["layers.0", "layers.1"]
