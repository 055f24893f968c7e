"""capture: what the hooks keep, and that the model is always left as it was found."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedParameter

from pytest_featviz.capture import Target, capture, run_model
from pytest_featviz.records import FeatureDriftError, FeatvizError, GoldenMissingError, SnapshotResult
from unit import snapshotter


def _targets(model: nn.Module, *names: str) -> list[Target]:
    modules = dict(model.named_modules())
    return [Target(name, modules[name]) for name in names]


def _x(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


_NOTES = pytest.mark.skipif(sys.version_info < (3, 11), reason="exception notes (add_note) are Python 3.11+")


def test_in_place_relu_after_a_hooked_conv_does_not_change_the_capture() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True))
    x = _x(2, 3, 10, 10)
    with torch.no_grad():
        expected = model[0](x)[0]
    (conv,) = capture(model, x, _targets(model, "0"), "all")
    assert (expected < 0).any()  # the in-place ReLU would have zeroed these
    torch.testing.assert_close(conv.maps, expected, rtol=0, atol=0)


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        out += x  # in place on the hooked module's output
        return out


def test_in_place_residual_add_does_not_change_the_capture() -> None:
    torch.manual_seed(0)
    model = Residual()
    x = _x(1, 2, 6, 6)
    with torch.no_grad():
        expected = model.conv(x)[0]
    (conv,) = capture(model, x, _targets(model, "conv"), "all")
    torch.testing.assert_close(conv.maps, expected, rtol=0, atol=0)


def test_capture_keeps_item_zero_and_selected_channels_as_a_float32_copy() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 1)).to(torch.float64)
    x = _x(3, 3, 5, 5).to(torch.float64)
    (conv,) = capture(model, x, _targets(model, "0"), [6, 1])
    assert conv.shape == (3, 8, 5, 5)
    assert conv.channels == (6, 1)
    assert conv.maps.dtype == torch.float32 and conv.maps.shape == (2, 5, 5)
    assert not conv.maps.requires_grad
    with torch.no_grad():
        out = model(x)
    torch.testing.assert_close(conv.maps, out[0, [6, 1]].float())


class Boom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)
        self.norm = nn.BatchNorm2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.norm(self.conv(x))
        raise RuntimeError("forward exploded on purpose")


def test_hooks_removed_and_training_flags_restored_when_forward_raises() -> None:
    model = Boom().train()
    model.conv.eval()  # a mixed state must come back exactly
    with pytest.raises(RuntimeError, match="forward exploded on purpose"):
        capture(model, _x(1, 1, 4, 4), _targets(model, "conv", "norm"), 1)
    assert [m.training for m in (model, model.conv, model.norm)] == [True, False, True]
    assert not model.conv._forward_hooks and not model.norm._forward_hooks


def test_the_original_exception_reaches_the_test(tmp_path: Path) -> None:
    model = Boom()
    with pytest.raises(RuntimeError, match="forward exploded on purpose"):
        snapshotter(tmp_path)(model, _x(1, 1, 4, 4), layers=["conv"])
    assert not model.conv._forward_hooks
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_model_in_train_mode_runs_in_eval_and_comes_back_in_train_mode(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5)).train()
    running = model[1].running_mean.clone()
    snapshotter(tmp_path, update=True)(model, _x(1, 3, 8, 8), layers=["2"])
    assert all(m.training for m in model.modules())
    torch.testing.assert_close(model[1].running_mean, running)  # eval mode: statistics not updated
    # Dropout off and running statistics used: the same result as in eval mode.
    assert snapshotter(tmp_path)(model.eval(), _x(1, 3, 8, 8), layers=["2"]).outcome == "matched"


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)

    def forward(self, image: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return self.conv(image) * scale


def test_tuple_is_unpacked_as_args_and_dict_as_kwargs() -> None:
    model = TwoInputs()
    image, scale = _x(1, 1, 3, 3), torch.tensor(2.0)
    by_tuple = run_model(model, (image, scale))
    by_dict = run_model(model, {"scale": scale, "image": image})
    torch.testing.assert_close(by_tuple, model(image, scale))
    torch.testing.assert_close(by_dict, by_tuple)
    (conv,) = capture(model, {"image": image, "scale": scale}, _targets(model, "conv"), "all")
    assert conv.shape == (1, 2, 3, 3)
    with pytest.raises(TypeError):
        run_model(model, [image, scale])  # a list is one positional argument, as documented


class Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(torch.relu(self.block(x)))


def test_a_module_called_twice_keeps_both_calls_as_block_and_block_at_1() -> None:
    torch.manual_seed(0)
    model = Twice()
    x = _x(1, 2, 5, 5)
    first, second = capture(model, x, _targets(model, "block"), "all")
    assert (first.name, second.name) == ("block", "block@1")
    with torch.no_grad():
        torch.testing.assert_close(second.maps, model.block(torch.relu(model.block(x)))[0])
    (only,) = capture(model, x, [Target("block", model.block, call=1)], "all")
    assert only.name == "block@1"
    torch.testing.assert_close(only.maps, second.maps)


def test_call_index_through_the_fixture(tmp_path: Path) -> None:
    torch.manual_seed(0)
    records: list[SnapshotResult] = []
    result = snapshotter(tmp_path, update=True, records=records)(Twice(), _x(1, 2, 5, 5), layers=["block"])
    assert [layer.name for layer in result.layers] == ["block", "block@1"]
    files = sorted(p.name for p in tmp_path.rglob("*.png"))
    assert files == ["block.png", "block@1.png"]
    second = snapshotter(tmp_path, update=True)(Twice(), _x(1, 2, 5, 5), layers=["block@1"], name="second")
    assert [layer.name for layer in second.layers] == ["block@1"]
    with pytest.raises(FeatvizError, match=r"'block@2' never ran in the forward pass of Twice"):
        snapshotter(tmp_path)(Twice(), _x(1, 2, 5, 5), layers=["block@2"])


# --- channels ------------------------------------------------------------------------------------------------------


def _conv8() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 1))


@pytest.mark.parametrize(
    ("channels", "kept"),
    [
        (3, (0, 2, 5)),
        (4, (0, 2, 4, 6)),
        (100, tuple(range(8))),
        ([7, 0, 3], (7, 0, 3)),
        ("all", tuple(range(8))),
        ("1,2", (1, 2)),
    ],
)
def test_channel_selection(tmp_path: Path, channels: object, kept: tuple[int, ...]) -> None:
    result = snapshotter(tmp_path, update=True)(_conv8(), _x(1, 1, 4, 4), layers=["0"], channels=channels)  # type: ignore[arg-type]
    assert result.layer("0").channels == kept


class Dense(nn.Module):
    """A DenseNet-style block: its output is its input, then its own work (torch.cat)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 16, 3, padding=1)
        self.conv = nn.Conv2d(16, 16, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return torch.cat([x, self.conv(x)], 1)


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = Dense()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


def test_the_default_channels_of_a_concatenating_block_show_its_own_work(tmp_path: Path) -> None:
    # the first 16 channels of a DenseNet block's output are its input: a change of the block's own weights passed
    from unit import noisy_weights

    x = _x(1, 1, 12, 12)
    torch.manual_seed(0)
    snapshotter(tmp_path, update=True)(Block(), x, layers=["block"])
    torch.manual_seed(0)
    model = Block()
    noisy_weights(model.block.conv, 0.5)
    with pytest.raises(FeatureDriftError, match="drift starts at layer 'block'"):
        snapshotter(tmp_path)(model, x, layers=["block"])


def test_a_golden_made_with_the_first_channels_keeps_them(tmp_path: Path) -> None:
    # goldens made when a count meant the first N: checks and updates reuse their channels, nothing is rewritten
    x = _x(1, 1, 12, 12)
    torch.manual_seed(0)
    made = snapshotter(tmp_path, update=True)(Block(), x, layers=["block"], channels=list(range(16)))
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    torch.manual_seed(0)
    checked = snapshotter(tmp_path)(Block(), x, layers=["block"])
    assert checked.outcome == "matched" and checked.layer("block").channels == made.layer("block").channels
    torch.manual_seed(0)
    assert snapshotter(tmp_path, update=True)(Block(), x, layers=["block"]).layer("block").channels == tuple(range(16))
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


class Segmenter(nn.Module):
    def __init__(self, wipe: bool) -> None:
        super().__init__()
        self.logits, self.mask, self.wipe = nn.Conv2d(1, 5, 3, padding=1), nn.Identity(), wipe

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.logits(x).argmax(1)
        if self.wipe:
            mask[:, 40:] = 0  # the bottom third of the mask lost
        return self.mask(mask)


def test_a_change_anywhere_in_a_mask_is_caught(tmp_path: Path) -> None:
    x = _x(1, 1, 64, 64)
    torch.manual_seed(0)
    made = snapshotter(tmp_path, update=True)(Segmenter(False), x, layers=["mask"])
    assert made.layer("mask").channels == (0,)
    torch.manual_seed(0)
    with pytest.raises(FeatureDriftError, match="drift starts at layer 'mask'"):
        snapshotter(tmp_path)(Segmenter(True), x, layers=["mask"])


def test_default_channel_count_is_the_configured_default(tmp_path: Path) -> None:
    from pytest_featviz.config import DEFAULT_CHANNELS

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, DEFAULT_CHANNELS + 3, 1))
    result = snapshotter(tmp_path, update=True)(model, _x(1, 1, 4, 4), layers=["0"])
    # spread over the layer: the first channel, every 19/16-th, the last but one
    assert result.layer("0").channels == tuple(i * (DEFAULT_CHANNELS + 3) // DEFAULT_CHANNELS for i in range(16))
    assert result.layer("0").channels[-1] == DEFAULT_CHANNELS + 1


@pytest.mark.parametrize(
    ("channels", "message"),
    [
        (
            [2, 8],
            r"layer '0' \(output shape \(1, 8, 4, 4\)\): channel indices \[8\] are out of range for a layer with 8",
        ),
        ([1, 1], r"channels names a channel twice; got \[1, 1\]"),
        ([-1], r"channels must hold channel indices of zero or more"),
        (0, r"channels must be at least 1"),
        ("some", r"channels must be"),
        ([], r"channels is an empty list"),
        (4.7, r"channels must be a count, a list of indices, 'all' or 'top:N'; got 4.7"),  # not 4
        ([0, 1.5], r"got \[0, 1.5\]"),
    ],
)
def test_bad_channel_selection_is_a_clear_error(tmp_path: Path, channels: object, message: str) -> None:
    # Errors found against the layer's real channel count come from the hook (ValueError); the others are caught
    # when the settings are read (FeatvizError).
    with pytest.raises((FeatvizError, ValueError), match=message):
        snapshotter(tmp_path, update=True)(_conv8(), _x(1, 1, 4, 4), layers=["0"], channels=channels)  # type: ignore[arg-type]
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


class _Densified(nn.Module):
    def __init__(self, into: str) -> None:
        super().__init__()
        self.into = into

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.into == "meta":
            return torch.empty(x.shape, device="meta")
        if self.into == "mkldnn":
            return x.to_mkldnn()
        return x.to_sparse() if self.into == "sparse_coo" else x[0, 0].to_sparse_csr()


@pytest.mark.parametrize(
    ("into", "message"),
    [
        ("sparse_coo", r"layer 'out' \(output shape \(1, 8, 4, 4\)\): the output is a sparse tensor \(sparse_coo\)"),
        ("sparse_csr", r"layer 'out' \(output shape \(4, 4\)\): the output is a sparse tensor \(sparse_csr\)"),
        ("meta", r"layer 'out' \(output shape \(1, 8, 4, 4\)\): the output is on the meta device, which holds no"),
        ("mkldnn", r"layer 'out' \(output shape \(1, 8, 4, 4\)\): the output is a non-strided tensor \(_mkldnn\)"),
    ],
    ids=["sparse_coo", "sparse_csr", "meta", "mkldnn"],
)
@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta state")
def test_a_sparse_or_meta_output_fails_naming_the_layer(tmp_path: Path, into: str, message: str) -> None:
    # torch's own errors came out of the plugin's hook without the layer's name ("Could not run 'aten::as_strided'
    # with arguments from the 'SparseCPU' backend", "Cannot copy out of meta tensor; no data!")
    model = nn.Sequential()
    model.add_module("conv", _conv8())
    model.add_module("out", _Densified(into))
    with pytest.raises(FeatvizError, match=message):
        snapshotter(tmp_path, update=True)(model, _x(1, 1, 4, 4), layers=["out"])
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


# --- NaN / Inf ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("update", [False, True])
def test_nan_or_inf_fails_naming_the_layer_and_the_count(tmp_path: Path, value: float, update: bool) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU())
    x = _x(1, 1, 4, 4)
    x[0, 0, :2, :3] = value  # six positions, in both channels of the 1x1 conv
    with pytest.raises(FeatvizError, match=r"layer '0' produced 12 NaN or Inf value\(s\).* among the 32 values kept"):
        snapshotter(tmp_path, update=update)(model, x, layers=["0", "1"])
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


@pytest.mark.parametrize("where", ["channel", "batch item"])
@pytest.mark.parametrize("update", [False, True])
def test_nan_outside_the_kept_channels_fails_too(tmp_path: Path, where: str, update: bool) -> None:
    # Only batch item 0's chosen channels are kept: a NaN in channel 21 of 32, or in batch item 1, passed the check
    # and was written into a golden; the docs promise that NaN or Inf in an activation fails the test.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 32, 1), nn.ReLU())
    x = _x(2, 1, 4, 4)
    if where == "channel":
        with torch.no_grad():
            model[0].bias[21] = float("nan")
    else:
        x[1, 0, 0, 0] = float("inf")
    expected = (
        r"layer '0' produced NaN or Inf value\(s\) outside the 256 values kept \(output shape \(2, 32, 4, 4\),"
        r" channels kept: 0, 2, 4, 6, 8, 10, 12, 14 and 8 more\); a non-finite activation fails the snapshot"
    )
    with pytest.raises(FeatvizError, match=expected):
        snapshotter(tmp_path, update=update)(model, x, layers=["0"], channels=16)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())
    # integer outputs hold no NaN: not scanned (a bool mask of the same input)
    snapshotter(tmp_path, update=True)(nn.Sequential(Positive()), x.nan_to_num(0.0), layers=["0"])


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_a_float8_output_is_scanned_without_an_error(tmp_path: Path, dtype: torch.dtype) -> None:
    # torch has no aminmax for float8: the scan for NaN crashed every snapshot of a float8 layer
    model = nn.Sequential(nn.Conv2d(1, 4, 1), Cast(dtype))
    snapshotter(tmp_path, update=True)(model, _x(1, 1, 4, 4), layers=["1"])
    bad = _x(1, 1, 4, 4)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(FeatvizError, match="NaN or Inf"):
        snapshotter(tmp_path)(model, bad, layers=["1"], channels=1)


class Cast(nn.Module):
    """A layer whose output is ``dtype``."""

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.dtype)


class Positive(nn.Module):
    """A layer whose output is a bool tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x > 0


def test_float64_values_beyond_float32_s_range_are_named_as_such(tmp_path: Path) -> None:
    """Kept maps are float32: a float64 layer around 1e60 (finite) failed with "produced 32 NaN or Inf values"."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU()).double()
    with torch.no_grad():
        model[0].bias.fill_(1e60)
    expected = r"produced 32 NaN or Inf value\(s\) \(or values beyond float32's range, about 3\.4e38, "
    with pytest.raises(FeatvizError, match=expected):
        snapshotter(tmp_path, update=True)(model, _x(1, 1, 4, 4).double(), layers=["0"])


def test_missing_golden_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(GoldenMissingError, match="create it with:  pytest --featviz-create tests/test_model.py::"):
        snapshotter(tmp_path / "golden")(_conv8(), _x(1, 1, 4, 4), layers=["0"])
    assert not (tmp_path / "golden").exists()


class Augmenting(nn.Module):
    """A model whose train() does more than set flags: it keeps its norm frozen and switches augmentation."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.norm = nn.BatchNorm2d(4)
        self.augment = True

    def train(self, mode: bool = True) -> Augmenting:
        super().train(mode)
        self.norm.eval()
        self.augment = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


def test_a_model_switched_back_to_training_runs_its_own_train(tmp_path: Path) -> None:
    model = Augmenting().train()
    assert model.augment and not model.norm.training
    snapshotter(tmp_path, update=True)(model, _x(1, 3, 8, 8), layers=["norm"])
    assert model.training and model.augment  # its train() ran, as its eval() did
    assert not model.norm.training  # and every flag is as it was


class _TiedAutoencoder(nn.Module):
    """A lazy encoder whose weight the decoder shares, tied before the first call."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.LazyLinear(8, bias=False)
        self.act = nn.Tanh()
        self.dec = nn.Linear(8, 8, bias=False)
        self.dec.weight = self.enc.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(self.act(self.enc(x)))


def test_a_snapshot_as_a_lazy_model_s_first_pass_leaves_parameters_it_can_still_be_trained_with(tmp_path: Path) -> None:
    """The pass ran under inference_mode, so the parameters a lazy module made in it came out as inference tensors,
    and training the model afterwards raised "Inference tensors cannot be saved for backward". They are made in place
    outside it: an optimizer built before the snapshot still trains them, and a weight tied before stays tied."""
    for layers, root in ((["2", "3"], tmp_path / "named"), (None, tmp_path / "default")):
        torch.manual_seed(0)
        model = nn.Sequential(nn.LazyConv2d(4, 3), nn.LazyBatchNorm2d(), nn.ReLU(), nn.LazyConv2d(4, 3)).eval()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)  # before the first call, as torch allows
        assert snapshotter(root, update=True)(model, _x(1, 3, 8, 8), layers=layers).outcome == "created"
        assert snapshotter(root)(model, _x(1, 3, 8, 8), layers=layers).outcome == "matched"
        assert not any(tensor.is_inference() for tensor in [*model.parameters(), *model.buffers()])
        before = [parameter.detach().clone() for parameter in model.parameters()]
        model.train()
        model(_x(2, 3, 8, 8)).square().mean().backward()  # raised before
        optimizer.step()
        assert all(not torch.equal(old, new) for old, new in zip(before, model.parameters(), strict=True))
    torch.manual_seed(0)
    tied = _TiedAutoencoder()
    optimizer = torch.optim.SGD(tied.parameters(), lr=0.5)
    vectors = _x(2, 8)
    assert snapshotter(tmp_path / "tied", update=True)(tied, vectors, layers=["enc", "dec"]).outcome == "created"
    assert tied.enc.weight is tied.dec.weight and not tied.enc.weight.is_inference()
    before = tied.enc.weight.detach().clone()
    tied(vectors).square().mean().backward()
    optimizer.step()
    assert not torch.equal(before, tied.enc.weight) and tied.enc.weight is tied.dec.weight


class _Counter(nn.Module):
    """Counts its calls in a buffer, and keeps its last input in a plain attribute (a KV cache), both in place."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("calls", torch.zeros(()))
        self.last = torch.zeros(1, 4, 6, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.last[:1] = x
        return x


class _Cache(nn.Module):
    """Makes a cache on its first call, a plain attribute it writes in place on later calls (a KV cache)."""

    def __init__(self) -> None:
        super().__init__()
        self.cache: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cache is None:
            self.cache = torch.zeros_like(x)
        self.cache.copy_(x)
        return x


@dataclass
class _Batch:
    images: torch.Tensor


class _Unpacking(nn.Module):
    """A lazy model that takes a batch object and clamps its images in place."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.LazyConv2d(4, 3)
        self.act = nn.ReLU()

    def forward(self, batch: _Batch) -> torch.Tensor:
        return self.act(self.conv(batch.images.clamp_(0.1, 0.9)))


class _Scaling(nn.Module):
    """Writes its parameter in place on each call (a hand-made weight normalization)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(4, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self.scale.clamp_(0.5, 2.0)
        return x * self.scale


def test_a_pass_writing_inference_tensors_in_place_runs_in_inference_mode(tmp_path: Path) -> None:
    """Such tensors are written in place only under inference_mode ("Inplace update to inference tensor outside
    InferenceMode"): a model built there that writes its buffers or a plain attribute, one whose parameter made
    there is written, an input made there that ``ReLU(inplace=True)`` writes, and a model whose cache a test's own
    pass made under inference mode all run, also where a lazy module makes its parameters in the pass (which otherwise
    runs under no_grad)."""
    with torch.inference_mode():
        torch.manual_seed(0)
        counting = nn.Sequential(nn.Conv2d(3, 4, 3), _Counter(), nn.ReLU())
        scaling = nn.Sequential(nn.Conv2d(3, 4, 3), _Scaling(), nn.ReLU())
        lazy_there = nn.Sequential(nn.LazyConv2d(4, 3), nn.ReLU(), nn.LazyConv2d(4, 3))  # made in place on first call
        made_there = _x(1, 3, 8, 8)
    torch.manual_seed(0)
    in_place = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(3, 4, 3), nn.ReLU())
    lazy_in_place = nn.Sequential(nn.ReLU(inplace=True), nn.LazyConv2d(4, 3), nn.ReLU())
    warmed = nn.Sequential(nn.Conv2d(3, 4, 3), _Cache(), nn.ReLU())
    lazy_warmed = nn.Sequential(nn.LazyConv2d(4, 3), _Cache(), nn.ReLU())
    with torch.inference_mode():
        warmed(_x(1, 3, 8, 8))  # a test's own pass under inference mode made its cache there
        lazy_warmed[1](_x(1, 4, 6, 6))
    cases = [(counting, _x(1, 3, 8, 8)), (scaling, _x(1, 3, 8, 8)), (lazy_there, _x(1, 3, 8, 8))]
    cases += [(in_place, made_there), (lazy_in_place, made_there), (warmed, _x(1, 3, 8, 8))]
    cases += [(lazy_warmed, _x(1, 3, 8, 8)), (_Unpacking(), _Batch(made_there.clone()))]
    for position, (model, x) in enumerate(cases):
        for layers in (["act" if isinstance(model, _Unpacking) else "2"], None):  # the default choice: a pass first
            root = tmp_path / str(position) / str(layers)
            assert snapshotter(root, update=True)(model, x, layers=layers).outcome == "created"
            assert snapshotter(root)(model, x, layers=layers).outcome == "matched"
    assert counting[1].calls.item() == 4  # the default choice's pass puts its count back


class _RefusesEval(nn.Sequential):
    """Refuses to switch modes, as ``ExportedProgram.module()`` does."""

    def train(self, mode: bool = True) -> _RefusesEval:
        raise NotImplementedError(f"Calling {'train' if mode else 'eval'}() is not supported yet.")


def test_a_model_whose_eval_raises_is_a_usage_error_that_names_that_error() -> None:
    """Its NotImplementedError reached the test masked by a second one, raised by the train() that restored it."""
    torch.manual_seed(0)
    model = _RefusesEval(nn.Conv2d(3, 4, 3), nn.ReLU())
    refused = r"switching _RefusesEval to eval mode failed: it raised NotImplementedError: Calling eval\(\) is"
    with pytest.raises(FeatvizError, match=refused):
        capture(model, _x(1, 3, 8, 8), _targets(model, "1"), 4)
    assert all(m.training for m in model.modules())
    assert not model[1]._forward_hooks
    holder = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sequential(nn.ReLU(), _RefusesEval(nn.ReLU())))
    inner = r"switching Sequential to eval mode failed: its submodule '1.1' \(_RefusesEval\) raised NotImplementedError"
    with pytest.raises(FeatvizError, match=inner):
        capture(holder, _x(1, 3, 8, 8), _targets(holder, "0"), 4)
    assert all(m.training for m in holder.modules())


def test_a_mapping_that_is_not_a_dict_is_passed_as_keyword_arguments() -> None:
    from collections import UserDict
    from types import MappingProxyType

    model = TwoInputs()
    image, scale = _x(1, 1, 3, 3), torch.tensor(2.0)
    expected = model(image, scale)
    for inputs in (UserDict(image=image, scale=scale), MappingProxyType({"image": image, "scale": scale})):
        torch.testing.assert_close(run_model(model, inputs), expected)  # a Hugging Face BatchEncoding is a UserDict


def test_a_dict_for_a_forward_that_takes_one_dict_says_how_to_pass_it() -> None:
    class TakesBatch(nn.Module):
        def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            return batch["image"] * 2

    with pytest.raises(TypeError, match="unexpected keyword argument 'image'") as caught:
        run_model(TakesBatch(), {"image": _x(1, 1, 2, 2)})
    notes = getattr(caught.value, "__notes__", None)
    if notes is not None:  # Python 3.11 and later
        assert "pass it as a one-item tuple: feature_snapshot(model, (inputs,))" in notes[0]
    torch.testing.assert_close(run_model(TakesBatch(), ({"image": torch.ones(1)},)), torch.full((1,), 2.0))


@_NOTES
def test_a_namedtuple_for_a_forward_that_takes_it_says_how_to_pass_it() -> None:
    from collections import namedtuple

    Batch = namedtuple("Batch", "image mask")

    class TakesBatch(nn.Module):
        def forward(self, batch: Batch) -> torch.Tensor:
            return batch.image * batch.mask

    batch = Batch(_x(1, 1, 2, 2), torch.full((1, 1, 2, 2), 2.0))
    with pytest.raises(TypeError, match="takes 2 positional arguments but 3 were given") as caught:
        run_model(TakesBatch(), batch)
    assert caught.value.__notes__ == [
        "feature_snapshot passes a tuple input, also a namedtuple (Batch), as positional arguments, model(*inputs),"
        " here 2 of them; for a forward that takes the namedtuple itself, pass it as a one-item tuple:"
        " feature_snapshot(model, (inputs,))"
    ]
    torch.testing.assert_close(run_model(TakesBatch(), (batch,)), batch.image * 2)
    with pytest.raises(TypeError) as plain:  # a plain tuple for forward(pair): the same mistake, the same way out
        run_model(TakesBatch(), tuple(batch))
    assert plain.value.__notes__ == [
        "feature_snapshot passes a tuple input as positional arguments, model(*inputs), here 2 of them; for a forward"
        " that takes the tuple itself, pass it as a one-item tuple: feature_snapshot(model, (inputs,))"
    ]

    class TakesThree(nn.Module):
        def forward(self, image: torch.Tensor, mask: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
            return image * mask * scale

    with pytest.raises(TypeError, match="missing 1 required positional argument") as short:
        run_model(TakesThree(), tuple(batch))  # fewer arguments than forward takes: no tuple to wrap
    assert not getattr(short.value, "__notes__", None)

    class CallsWrongly(nn.Module):  # takes the two fields; its own helper is called wrongly inside forward
        def helper(self, image: torch.Tensor) -> torch.Tensor:
            return image

        def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return self.helper(image, mask)  # type: ignore[call-arg]

    with pytest.raises(TypeError, match="takes 2 positional arguments but 3 were given") as inner:
        run_model(CallsWrongly(), batch)
    assert not getattr(inner.value, "__notes__", None)  # no sign of how the input was passed

    class Sub(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    class CallsASubmoduleWrongly(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.sub = Sub()

        def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return self.sub(image, mask)

    with pytest.raises(TypeError, match="takes 2 positional arguments but 3 were given") as inner:
        run_model(CallsASubmoduleWrongly(), batch)
    assert not getattr(inner.value, "__notes__", None)

    class Decorated(nn.Module):  # torch's decorator frame stands between the call and forward
        @torch.no_grad()
        def forward(self, batch: Batch) -> torch.Tensor:
            return batch.image

    with pytest.raises(TypeError) as decorated:
        run_model(Decorated(), batch)
    assert len(getattr(decorated.value, "__notes__", [])) == 1


class _Forces(nn.Module):
    """An energy model: its forward returns the gradient of an energy, computed with autograd inside forward."""

    def __init__(self, inference_mode_off: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.inference_mode_off = inference_mode_off

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inference_mode_off:  # turned off, but the input the hooked conv gives back is an inference tensor
            x = self.conv(x)
            with torch.inference_mode(False), torch.enable_grad():
                weight = torch.ones(1, requires_grad=True)
                (force,) = torch.autograd.grad((x * weight).sum(), weight)
            return force
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (force,) = torch.autograd.grad(self.conv(x).sum(), x)
        return force


@_NOTES
@pytest.mark.parametrize("inference_mode_off", [False, True], ids=["enable_grad", "inference_mode_off"])
def test_a_forward_that_computes_gradients_fails_saying_that_inference_mode_stops_it(
    tmp_path: Path, inference_mode_off: bool
) -> None:
    model = _Forces(inference_mode_off)
    model(_x(1, 1, 6, 6))  # outside inference mode it runs
    torch_says = "Inference tensors cannot be saved" if inference_mode_off else "does not have a grad_fn"
    with pytest.raises(RuntimeError, match=torch_says) as caught:
        snapshotter(tmp_path)(model, _x(1, 1, 6, 6), layers=["conv"])
    assert caught.value.__notes__ == [
        "feature_snapshot runs the model under torch.inference_mode(), where torch.enable_grad() does not turn"
        " autograd on, so a forward that computes gradients (torch.autograd.grad, .backward()) cannot be"
        " snapshotted this way; snapshot the part of the model that needs no gradients (the submodules before the"
        " gradient step, with the inputs they take)"
    ]
    assert not model.conv._forward_hooks


def test_another_runtime_error_of_forward_gets_no_note_about_gradients() -> None:
    model = Boom()
    with pytest.raises(RuntimeError, match="forward exploded on purpose") as caught:
        capture(model, _x(1, 1, 4, 4), _targets(model, "conv"), 1)
    assert not getattr(caught.value, "__notes__", None)


def test_a_compiled_model_is_captured_through_the_module_it_wraps(tmp_path: Path) -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.features(x)

    torch.manual_seed(0)
    model = Net()

    def refuse(graph: object, example_inputs: object) -> object:
        raise AssertionError("the compiled code ran")

    compiled = torch.compile(model, backend=refuse)  # the capture runs the module it wraps: hooks fire there
    layers = ["features.0", "_orig_mod.features.2"]
    update = snapshotter(tmp_path, update=True)(compiled, _x(1, 3, 8, 8), layers=layers)
    assert [layer.name for layer in update.layers] == ["features.0", "features.2"]
    assert snapshotter(tmp_path)(model, _x(1, 3, 8, 8), layers=["features.0", "features.2"]).outcome == "matched"


class _Unused(nn.Module):
    """Holds a lazy head its forward never calls."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.LazyLinear(3)
        self.conv = nn.Conv2d(3, 4, 3)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


def test_a_lazy_module_that_never_runs_is_fingerprinted_as_uninitialized(tmp_path: Path) -> None:
    """Its parameters have no values: fingerprinting them raised torch's "Attempted to use an uninitialized
    parameter" from every snapshot of the model."""
    for layers in (["act"], None):
        torch.manual_seed(0)
        assert snapshotter(tmp_path / str(layers), update=True)(_Unused(), _x(1, 3, 8, 8), layers=layers).outcome == (
            "created"
        )
        torch.manual_seed(0)
        assert snapshotter(tmp_path / str(layers))(_Unused(), _x(1, 3, 8, 8), layers=layers).outcome == "matched"


class _LazyChild(LazyModuleMixin, nn.Module):  # type: ignore[misc]
    """A lazy module of its own: its first step builds a child and makes its weight without checking it is unmade
    (torch takes that step once)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = UninitializedParameter()
        self.steps: list[bool] = []  # whether inference mode was on at each first step

    def initialize_parameters(self, x: torch.Tensor) -> None:  # type: ignore[override]
        self.steps.append(torch.is_inference_mode_enabled())
        self.child = nn.Linear(x.shape[1], 4)
        self.weight.materialize((4,))
        nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.child(x) * self.weight


def test_a_lazy_module_takes_its_first_step_once_outside_inference_mode(tmp_path: Path) -> None:
    """A pre-hook of the plugin's own made the parameters, then torch's step ran again under inference mode: a custom
    module that does not check raised ("'Parameter' object has no attribute 'materialize'"), one that builds a child
    built it twice (other random numbers, so goldens the old code made drifted, and a child of inference tensors),
    and a lazy module called twice in one forward met the hook again after its class changed."""
    torch.manual_seed(0)
    custom = nn.Sequential(_LazyChild(), nn.Tanh())
    assert snapshotter(tmp_path / "custom", update=True)(custom, _x(2, 6), layers=["1"]).outcome == "created"
    assert custom[0].steps == [False] and not custom[0].child.weight.is_inference()
    custom(_x(2, 6)).sum().backward()
    torch.manual_seed(0)
    twice = nn.Sequential(nn.LazyConv2d(3, 3, padding=1), nn.ReLU())
    twice.forward = lambda x: twice[1](twice[0](twice[0](x)))  # type: ignore[method-assign]
    assert snapshotter(tmp_path / "twice", update=True)(twice, _x(1, 3, 8, 8), layers=["1"]).outcome == "created"
    assert type(twice[0]) is nn.Conv2d and not twice[0]._forward_pre_hooks


class ScoresAndMaps(nn.Module):
    """A head returning a dict: a (B, 4) score vector first, then the (B, 4, 8, 8) maps."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        maps = self.conv(x)
        return {"scores": maps.mean((2, 3)), "maps": maps}


def test_a_leafs_error_shows_that_leafs_shape_and_a_misspelled_leaf_no_shape() -> None:
    """Both showed the first leaf's shape, (1, 4): a misspelled ``head+map`` looked like a layer with no maps."""
    model = nn.Sequential(ScoresAndMaps())
    x = _x(1, 3, 8, 8)
    with pytest.raises(FeatvizError) as error:
        capture(model, x, [Target("0+map", model[0], leaf="map")], 16)
    # the leaves there are, as names to pass: '0+maps', not '+maps'
    assert str(error.value) == "layer '0+map': the output has no leaf '+map'; its tensor leaves: '0+scores', '0+maps'"
    with pytest.raises(FeatvizError, match=r"^layer '0\+maps' \(output shape \(1, 4, 8, 8\)\): channel indices \[7\]"):
        capture(model, x, [Target("0+maps", model[0], leaf="maps")], [7])


@pytest.mark.parametrize(
    ("conv", "sample", "kind"),
    [
        (nn.Conv2d(3, 8, 3), (3, 12, 12), "(C, H, W)"),
        (nn.Conv1d(1, 8, 5), (1, 40), "(C, L)"),  # a mono waveform, as audio code passes it
        (nn.Conv3d(3, 8, 3), (3, 4, 8, 8), "(C, T, H, W)"),
        (nn.ConvTranspose2d(3, 8, 3), (3, 6, 6), "(C, H, W)"),
    ],
)
def test_a_conv_net_run_on_one_sample_without_a_batch_is_refused(
    conv: nn.Module, sample: tuple[int, ...], kind: str
) -> None:
    # torch's convolutions take one sample without a batch; dimension 0 of every output is then the channels, and
    # keeping batch item 0 kept channel 0 alone: doubling the other filters passed
    torch.manual_seed(0)
    model = nn.Sequential(conv, nn.ReLU()).eval()
    message = (
        rf"layer '1' \(output shape \(8, .*\)\): the model ran on one sample without a batch dimension: its"
        rf" convolution '0' took the input, of shape {re.escape(str(sample))}, which torch reads as {re.escape(kind)};"
        r" .* keeps item 0, which here would be channel 0 alone. Pass the input with a batch dimension:"
        r" x.unsqueeze\(0\) \(or x\[None\]\)"
    )
    with pytest.raises(FeatvizError, match=message):
        capture(model, torch.rand(sample), _targets(model, "1"), 4)
    with pytest.raises(FeatvizError, match="convolution '0' took"):
        capture(model, torch.rand(sample), _targets(model, "0"), 4)  # the convolution itself
    batched = capture(model, torch.rand(1, *sample), _targets(model, "0", "1"), 4)
    assert [c.channels for c in batched] == [(0, 2, 4, 6)] * 2  # with the batch: every channel to choose from
    assert not model[0]._forward_pre_hooks  # the watch on the first convolution is removed


def test_a_loop_over_samples_of_a_list_is_not_refused() -> None:
    # a list of images of several sizes, each run alone, then stacked: its stacked outputs carry the batch, and so
    # do outputs of the conv's rank that are no maps (tokens (B, L, D), embeddings (B, D))
    class PerSample(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)
            self.pool = nn.AdaptiveAvgPool2d(4)
            self.stack = nn.Identity()
            self.tokens = nn.Identity()
            self.audio = nn.Conv1d(1, 8, 5)
            self.embed = nn.Identity()

        def forward(self, images: list[torch.Tensor], waves: list[torch.Tensor]) -> torch.Tensor:
            maps = self.stack(torch.stack([self.pool(self.conv(image)) for image in images]))
            self.tokens(maps.flatten(2).transpose(1, 2))  # (B, 16, 8)
            self.embed(torch.stack([self.audio(wave).mean(-1) for wave in waves]))  # (B, 8)
            return maps

    torch.manual_seed(0)
    model = PerSample().eval()
    images = [torch.rand(3, 12, 12), torch.rand(3, 10, 14)]
    waves = [torch.rand(1, 40), torch.rand(1, 30)]
    kept = capture(model, (images, waves), _targets(model, "stack", "tokens", "embed"), 8)
    assert [c.shape for c in kept] == [(2, 8, 4, 4), (2, 16, 8), (2, 8)]


@pytest.mark.parametrize("case", ["unused first conv", "head defined first", "keyword call"])
def test_one_sample_is_refused_whichever_convolution_meets_it_first(case: str) -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Conv2d(8, 4, 1)  # defined first, run last; or never run
            self.body = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if case == "keyword call":
                return self.head(input=self.body[1](self.body[0](input=x)))  # body itself never runs
            features = self.body(x)
            return features if case == "unused first conv" else self.head(features)

    torch.manual_seed(0)
    model = Net().eval()
    refused = r"layer 'body.1' .* its convolution 'body.0' took the input, of shape \(3, 16, 16\)"
    with pytest.raises(FeatvizError, match=refused):
        capture(model, torch.rand(3, 16, 16), _targets(model, "body.1"), 4)
    assert all(not m._forward_pre_hooks for m in model.modules())
    (kept,) = capture(model, torch.rand(1, 3, 16, 16), _targets(model, "body.1"), 4)
    assert kept.shape == (1, 8, 14, 14)


def test_a_batched_model_running_a_convolution_on_one_sample_inside_is_not_refused() -> None:
    # a (B, L) signal whose Conv1d runs per sample, and (B, L, E) tokens beside a Conv2d over a learned (C, H, W) grid:
    # a convolution saw one sample, but not the model's input, which carries its batch
    class PerSampleSignal(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(1, 4, 5)
            self.head = nn.Linear(4, 3)

        def forward(self, signals: torch.Tensor) -> torch.Tensor:
            return self.head(torch.stack([self.conv(signal[None]).mean(-1) for signal in signals]))

    class TokensAndGrid(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.grid = nn.Parameter(torch.randn(8, 4, 4))
            self.conv = nn.Conv2d(8, 8, 3, padding=1)
            self.block = nn.Linear(8, 8)

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return self.block(tokens + self.conv(self.grid).flatten(1).T)

    torch.manual_seed(0)
    signal_model, token_model = PerSampleSignal().eval(), TokensAndGrid().eval()
    (head,) = capture(signal_model, torch.rand(2, 64), _targets(signal_model, "head"), 4)
    (block,) = capture(token_model, torch.rand(2, 16, 8), _targets(token_model, "block"), 4)
    assert head.shape == (2, 3) and block.shape == (2, 16, 8)


def test_a_layer_before_the_convolution_is_refused_too() -> None:
    class Normalize(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x - 0.5) / 0.25

    torch.manual_seed(0)
    model = nn.Sequential(Normalize(), nn.Conv2d(3, 4, 3)).eval()
    with pytest.raises(FeatvizError, match=r"layer '0' \(output shape \(3, 16, 16\)\): the model ran on one sample"):
        capture(model, torch.rand(3, 16, 16), _targets(model, "0"), 4)  # its golden held "batch item 0": channel 0
