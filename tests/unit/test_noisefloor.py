"""noisefloor: a layer outside its clean band is judged by tolerances fitted to its own float noise, measured by one
more forward pass (TF32 emulation, or full float32 after a reduced-precision run) and only when a layer needs it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from skimage import data
from torch import nn

from pytest_featviz.records import MATCH, FeatureDriftError
from unit import noisy_weights, snapshotter


def _homogeneous_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())


def _photo() -> torch.Tensor:
    image = torch.from_numpy(data.astronaut()[:96:2, 100:196:2].copy()).permute(2, 0, 1).float() / 255.0
    return (image.unsqueeze(0) - 0.45) / 0.25


def _count_calls(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> list[int]:
    """Replace the context-manager factory ``owner.name`` by one that records each use, and return the record."""
    runs: list[int] = []
    original = getattr(owner, name)

    def counted() -> object:
        runs.append(1)
        return original()

    monkeypatch.setattr(owner, name, counted)
    return runs


def _count_noise_runs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    from pytest_featviz import calibrate

    return _count_calls(monkeypatch, calibrate, "tf32_emulation")


def test_the_noise_floor_catches_a_small_scale_change_the_configured_tolerances_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = _count_noise_runs(monkeypatch)
    model = _homogeneous_model()
    snapshotter(tmp_path, update=True)(model, _photo(), layers=["3"])
    snapshotter(tmp_path)(model, _photo(), layers=["3"])
    assert runs == []  # a clean re-run needs no second forward pass
    with torch.no_grad():  # a 0.6% gain on the second conv
        model[2].weight *= 1.006
        model[2].bias *= 1.006
    result = snapshotter(tmp_path, noise_floor=False)(model, _photo(), layers=["3"])
    assert result.layers[0].verdict == MATCH and 0.012 < result.layers[0].max_stat_delta < 0.03
    with pytest.raises(FeatureDriftError) as caught:
        snapshotter(tmp_path)(model, _photo(), layers=["3"])
    assert runs == [1]
    message = str(caught.value)
    assert "judged by tolerances fitted to this layer's noise floor: TF32 rounding alone moves it to SSIM" in message
    assert "TF32 rounding alone takes this layer near its tolerances" not in message  # its floor is far below them
    assert re.search(
        r"channel \d: SSIM 0\.99\d\d, picture change 0\.0\d\d, statistics change 0\.0\d\d > 0\.012", message
    )
    layer = caught.value.result.layer("3") if caught.value.result else None
    assert layer is not None and layer.noise is not None and layer.noise.stat_delta < 0.003


def test_tf32_rounded_weights_stay_green_under_the_noise_floor(tmp_path: Path) -> None:
    from pytest_featviz.calibrate import round_tf32

    model = _homogeneous_model()
    snapshotter(tmp_path, update=True)(model, _photo(), layers=["1", "3"])
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(round_tf32(parameter))
    result = snapshotter(tmp_path)(model, _photo(), layers=["1", "3"])
    assert all(layer.verdict == MATCH for layer in result.layers)


def test_a_run_in_reduced_precision_measures_its_noise_against_full_precision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_featviz import environment

    emulated = _count_noise_runs(monkeypatch)
    full = _count_calls(monkeypatch, environment, "full_precision")
    model = _homogeneous_model()
    snapshotter(tmp_path, update=True)(model, _photo(), layers=["3"])
    with torch.no_grad():  # the 0.6% gain of the test above: inside the configured tolerances, outside 0.4x
        model[2].weight *= 1.006
        model[2].bias *= 1.006
    saved = environment.DeterminismFlags.read()
    try:
        torch.set_float32_matmul_precision("high")  # TF32 (or oneDNN's reduced precision) allowed for matmuls
        with pytest.raises(FeatureDriftError):
            snapshotter(tmp_path)(model, _photo(), layers=["3"])
    finally:
        saved.restore()
    assert full == [1] and emulated == []  # rounding an already-TF32 run again would measure almost nothing
    assert torch.get_float32_matmul_precision() == "highest"


def test_under_autocast_the_configured_tolerances_stand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # bfloat16 autocast computes the convolutions below float32, where TF32 emulation changes nothing: the noise floor
    # measured 0 and tightened every tolerance to 0.4x, failing a layer the configured tolerances pass (SSIM 0.996)
    runs = _count_noise_runs(monkeypatch)
    model = _homogeneous_model()
    model.extend([nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1)])  # seeded after
    snapshotter(tmp_path, update=True)(model, _photo(), layers=["6"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = snapshotter(tmp_path)(model, _photo(), layers=["6"])
    (layer,) = result.layers
    assert runs == [] and layer.noise is None and layer.threshold == 0.99
    assert layer.verdict == MATCH and layer.min_ssim < 0.996  # outside the clean band: the floor would have judged it


class _Padded(nn.Module):
    """A padded nn.TransformerEncoder: on its nested-tensor fast path its output holds only the real tokens."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 4, 64, 0.0, batch_first=True), 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(x, src_key_padding_mask=mask)


def test_a_noise_floor_run_that_takes_another_path_keeps_the_configured_tolerances(tmp_path: Path) -> None:
    """The TF32 emulation turns the fast path off, so its run held all 24 positions where the check held the 20
    real ones, and the check crashed with "tile stacks differ in shape"."""
    import warnings

    from pytest_featviz import compare

    x = torch.randn(1, 24, 32, generator=torch.Generator().manual_seed(2))
    mask = torch.zeros(1, 24, dtype=torch.bool)
    mask[0, 20:] = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's prototype notice for nested tensors
        snapshotter(tmp_path, update=True)(_Padded().eval(), (x, mask), layers=["encoder.layers.0"])
        result = snapshotter(tmp_path)(noisy_weights(_Padded(), 0.03).eval(), (x, mask), layers=["encoder.layers.0"])
    layer = result.layers[0]
    assert layer.shape == (1, 20, 32) and layer.noise is None and layer.stat_tolerance == 0.03
    assert compare.needs_noise_floor(layer)  # it did run the second pass, and kept the configured verdict


def _as_made_on_a_gpu(root: Path, **environment: object) -> None:
    """The golden under ``root`` recorded as made on a GPU with TF32 on (what a GPU run's sidecar records), or in
    the ``environment`` given."""
    import json

    (sidecar,) = root.rglob("snapshot.json")
    data = json.loads(sidecar.read_text())
    data["environment"].update(environment or {"device": "cuda", "matmul_tf32": True, "cudnn_tf32": True})
    sidecar.write_text(json.dumps(data, indent=2) + "\n")


def _cancelling_model() -> tuple[nn.Sequential, torch.Tensor]:
    """A difference of two nearly equal channels, whose TF32 rounding (10 bits of each) is far beyond tolerances."""
    model = nn.Sequential(nn.Conv2d(2, 1, 1, bias=False), nn.Conv2d(1, 1, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([1.0, -1.0]).view(1, 2, 1, 1))
        model[1].weight.fill_(1.0)
    pattern = torch.from_numpy(data.camera()[::16, ::16].copy()).float() / 255.0
    return model, torch.stack([1.0 + 0.004 * pattern, torch.ones_like(pattern)]).unsqueeze(0)


def test_a_drift_that_tf32_rounding_alone_makes_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A golden made with TF32 (a GPU), checked in full float32: a layer whose own TF32 noise exceeds its tolerances
    failed with "a code or dependency change" alone, since only a layer that passed was measured."""
    from pytest_featviz.calibrate import tf32_emulation

    model, inputs = _cancelling_model()
    with tf32_emulation():
        snapshotter(tmp_path, update=True)(model, inputs, layers=["0", "1"])
    runs = _count_noise_runs(monkeypatch)
    with pytest.raises(FeatureDriftError) as caught:  # a golden made here: its drift is no other machine's noise
        snapshotter(tmp_path)(model, inputs, layers=["0", "1"])
    assert runs == [] and "TF32 rounding alone" not in str(caught.value)
    _as_made_on_a_gpu(tmp_path, torch="2.13.0")  # another torch on the CPU: no TF32 noise between the two
    with pytest.raises(FeatureDriftError) as caught:
        snapshotter(tmp_path)(model, inputs, layers=["0", "1"])
    assert runs == [] and "TF32 rounding alone" not in str(caught.value)
    _as_made_on_a_gpu(tmp_path)
    with pytest.raises(FeatureDriftError) as caught:
        snapshotter(tmp_path)(model, inputs, layers=["0", "1"])
    assert runs == [1]  # the noise floor's run, once for both layers
    message = str(caught.value)
    assert message.count("TF32 rounding alone takes this layer near its tolerances") == 2
    result = caught.value.result
    assert result is not None and all(layer.noise is not None and layer.drifted for layer in result.layers)
    assert snapshotter(tmp_path, update=True)(model, inputs, layers=["0", "1"]).outcome == "updated"
    assert runs == [1]  # an update rewrites a drifted layer whatever its noise: no run to measure it


def test_a_drift_far_beyond_the_tf32_noise_is_not_called_that_noise(tmp_path: Path) -> None:
    # a 30% weight change against a GPU's golden was told "this drift may be that noise" (its noise: 0.01), since
    # only the noise was held against the tolerances, never the drift against the noise
    from pytest_featviz.calibrate import tf32_emulation

    model, inputs = _cancelling_model()
    with tf32_emulation():
        snapshotter(tmp_path, update=True)(model, inputs, layers=["1"])
    _as_made_on_a_gpu(tmp_path)
    with torch.no_grad():
        model[1].weight.fill_(3.0)  # the output tripled: far beyond what TF32 rounding does to it
    with pytest.raises(FeatureDriftError) as caught:
        snapshotter(tmp_path)(model, inputs, layers=["1"])
    assert "TF32 rounding alone" not in str(caught.value)
    layer = caught.value.result.layer("1") if caught.value.result else None
    assert layer is not None and layer.noise is None and layer.threshold == 0.99  # the configured tolerances
