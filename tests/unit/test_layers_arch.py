"""Layer names across architectures: wrappers, TorchScript, leaf selectors, default names and top:N channels in
goldens, sequence-first and nested outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from pytest_featviz.capture import capture
from pytest_featviz.config import Settings
from pytest_featviz.layers import resolve_layers
from pytest_featviz.records import CREATED, DRIFTED, MATCHED, FeatvizError
from pytest_featviz.snapshot import TestIdentity, check_snapshot
from pytest_featviz.stages import default_selection
from unit import snapshotter


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


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is (deprecated|not supported):FutureWarning")
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


def test_an_exported_program_s_module_is_refused_with_what_to_do(tmp_path: Path) -> None:
    """``ExportedProgram.module()`` runs ATen operators and none of its submodules, and refuses ``eval()``: the
    snapshot raised NotImplementedError("Calling eval() ..."), masked by a second one from restoring ``train()``, and
    with its flags set by hand it said only that the selected layers never ran. Refused, saying what to snapshot;
    the unflattened program and a symbolic trace call their submodules and are snapshot as usual."""
    eager = tiny_cnn().eval()
    program = torch.export.export(eager, (IMAGE,))
    refusal = r"GraphModule whose graph calls none of its submodules.*torch\.export\.unflatten\(exported_program\)"
    with pytest.raises(FeatvizError, match=refusal):
        resolve_layers(program.module(), "0")
    with pytest.raises(FeatvizError, match=refusal):
        default_selection(program.module(), IMAGE)
    for name, model in [("unflattened", torch.export.unflatten(program)), ("traced", torch.fx.symbolic_trace(eager))]:
        assert snapshotter(tmp_path / name, update=True)(model, IMAGE, layers=["0", "2"]).outcome == CREATED
        assert snapshotter(tmp_path / name)(model, IMAGE, layers=["0", "2"]).outcome == MATCHED


def test_a_container_a_symbolic_trace_inlined_never_runs_and_the_message_says_why(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), nn.Conv2d(4, 4, 3)).eval()
    traced = torch.fx.symbolic_trace(model)
    with pytest.raises(FeatvizError, match=r"'0' never ran.*GraphModule, whose graph calls only the modules it traced"):
        snapshotter(tmp_path, update=True)(traced, IMAGE, layers=["0", "1"])
    assert snapshotter(tmp_path, update=True)(traced, IMAGE, layers=["0.1", "1"]).outcome == CREATED


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
    with pytest.raises(FeatvizError, match=r"layer 'seg\+logits'.*its tensor leaves: 'seg\+aux', 'seg\+out'"):
        capture(model, IMAGE, resolve_layers(model, "seg+logits"), 16)


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
