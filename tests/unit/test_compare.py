"""compare: SSIM equal to scikit-image, the two numeric scores, verdicts; and what a check sees on real changes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data
from skimage.metrics import structural_similarity
from torch import nn

from pytest_featviz.compare import (
    compare_layer,
    fitted,
    level_aligned,
    needs_noise_floor,
    noise_floor,
    rms_error,
    ssim_batch,
    statistic_delta,
    upscale_to_window,
)
from pytest_featviz.records import DRIFT, MATCH, FeatureDriftError, LayerResult, NoiseFloor
from unit import noisy_weights, snapshotter


def _skimage(golden: np.ndarray, current: np.ndarray, data_range: float) -> np.ndarray:
    return np.array(
        [structural_similarity(g, c, data_range=data_range, win_size=7) for g, c in zip(golden, current, strict=True)]
    )


def test_ssim_equals_skimage_on_random_tiles() -> None:
    rng = np.random.default_rng(0)
    golden = rng.integers(0, 256, size=(6, 23, 17), dtype=np.uint8)
    noise = rng.integers(-40, 41, size=golden.shape)
    current = np.clip(golden.astype(int) + noise, 0, 255).astype(np.uint8)
    current[0] = golden[0]  # one identical pair
    current[1] = 255 - golden[1]  # one inverted pair
    ours = ssim_batch(golden, current, 255.0)
    np.testing.assert_allclose(ours, _skimage(golden, current, 255.0), atol=1e-6, rtol=0)
    assert ours[0] == pytest.approx(1.0, abs=1e-12)
    assert ours[1] < 0


def test_ssim_equals_skimage_on_real_photo_tiles() -> None:
    photos = [data.astronaut().mean(axis=2), data.coffee().mean(axis=2), data.chelsea().mean(axis=2)]
    golden = np.stack([photo[100:164, 120:184] for photo in photos]).astype(np.uint8)
    shifted = np.stack([photo[102:166, 121:185] for photo in photos]).astype(np.uint8)
    ours = ssim_batch(golden, shifted, 255.0)
    np.testing.assert_allclose(ours, _skimage(golden, shifted, 255.0), atol=1e-6, rtol=0)
    assert (ours < 0.99).all()  # a two-pixel shift of a photo is visible
    wide = golden.astype(np.uint16) * 257  # 16-bit tiles
    np.testing.assert_allclose(
        ssim_batch(wide, shifted.astype(np.uint16) * 257, 65535.0),
        _skimage(wide, shifted.astype(np.uint16) * 257, 65535.0),
        atol=1e-6,
        rtol=0,
    )


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (7, 7), (2, 9)])
def test_ssim_works_on_maps_smaller_than_the_window(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(1)
    golden = rng.integers(0, 256, size=(2, *shape), dtype=np.uint8)
    current = golden.copy()
    current[1] = 255 - current[1]
    ours = ssim_batch(golden, current, 255.0)
    assert ours[0] == pytest.approx(1.0)
    assert ours[1] < 0.5
    big_g, big_c = upscale_to_window(golden), upscale_to_window(current)
    assert min(big_g.shape[1:]) >= 7
    np.testing.assert_allclose(ours, _skimage(big_g, big_c, 255.0), atol=1e-6, rtol=0)


def test_ssim_rejects_stacks_of_different_shape() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        ssim_batch(np.zeros((1, 8, 8)), np.zeros((1, 8, 9)), 255.0)


def test_rms_error_is_in_units_of_the_golden_spread() -> None:
    golden = np.tile(np.arange(0, 200, 10, dtype=np.uint8), (1, 20, 1))
    assert rms_error(golden, golden, 255.0)[0] == 0.0
    brighter = (golden + 5).astype(np.uint8)
    assert rms_error(golden, brighter, 255.0)[0] == pytest.approx(5.0 / golden.std())
    flat = np.zeros((1, 4, 4), np.uint8)  # a flat golden uses the floor, so one grey level is a small error
    assert rms_error(flat, flat + 1, 255.0)[0] == pytest.approx(1.0 / (0.02 * 255.0))


def test_statistic_delta_is_in_units_of_the_golden_std() -> None:
    golden = np.array([[0.0, 2.0, -3.0, 3.0], [1.0, 1e-9, 1.0, 1.0]])
    current = golden.copy()
    current[0, 0] = 0.5  # mean moved by a quarter std
    current[1, 0] = 1.0 + 1e-6  # a flat channel: its tiny std does not blow the change up
    delta = statistic_delta(golden, current)
    assert delta[0] == pytest.approx(0.25)
    assert delta[1] < 1e-4


def test_statistic_delta_of_an_all_flat_layer_is_in_units_of_its_level() -> None:
    golden = np.array([[0.06, 0.0, 0.06, 0.06], [-0.02, 0.0, -0.02, -0.02]])
    noisy, moved = golden.copy(), golden.copy()
    noisy[:, 0] *= 1 + 2e-4  # TF32-sized rounding of a constant output
    moved[1, 0] += 0.003  # 5% of the layer's level: a real change of a flat channel
    assert statistic_delta(golden, noisy).max() < 0.01
    assert statistic_delta(golden, moved)[1] == pytest.approx(1.0)


def test_a_flat_golden_tile_is_compared_for_structure_only() -> None:
    golden = np.full((3, 8, 8), 0, dtype=np.uint8)
    current = golden.copy()
    current[0] = 3  # the whole tile moved by three grey levels
    current[1, :4] = 40  # structure appeared
    current[2] = 255
    current[2, 0, 0] = 200
    aligned = level_aligned(golden, current, 255.0)
    assert (aligned[0] == 0).all()
    assert aligned[1, :4].min() > 0 and (aligned[1, 4:] == 0).all()
    assert aligned[2, 0, 0] == 0  # the outlier pixel is still there after the shift
    ssim = ssim_batch(golden, aligned, 255.0)
    assert ssim[0] == 1.0 and ssim[1] < 0.5
    textured = np.arange(3 * 64, dtype=np.uint8).reshape(3, 8, 8)
    assert level_aligned(textured, textured + 3, 255.0) is not textured + 3
    assert (level_aligned(textured, textured + 3, 255.0) == textured + 3).all()  # tiles with structure: untouched


def _layer(golden: np.ndarray, current: np.ndarray, threshold: float, stats_delta: float = 0.0) -> str:
    stats = np.array([[0.0, 1.0, -1.0, 1.0]] * golden.shape[0])
    moved = stats + np.array([stats_delta, 0, 0, 0])
    result = compare_layer(
        "layer1",
        shape=(1, golden.shape[0], *golden.shape[1:]),
        golden_shape=(1, golden.shape[0], *golden.shape[1:]),
        channels=tuple(range(golden.shape[0])),
        golden_tiles=golden,
        current_tiles=current,
        golden_stats=stats,
        current_stats=moved,
        data_range=255.0,
        threshold=threshold,
        stat_tolerance=0.05,
        rms_tolerance=1.0,
    )
    return result.verdict


def test_verdict_follows_each_tolerance() -> None:
    rng = np.random.default_rng(2)
    golden = rng.integers(0, 256, size=(2, 12, 12), dtype=np.uint8)
    current = np.clip(golden.astype(int) + rng.integers(-8, 9, size=golden.shape), 0, 255).astype(np.uint8)
    score = float(ssim_batch(golden, current, 255.0).min())
    assert _layer(golden, current, threshold=score - 1e-3) == MATCH
    assert _layer(golden, current, threshold=score + 1e-3) == DRIFT
    assert _layer(golden, golden, threshold=0.99, stats_delta=0.1) == DRIFT  # numbers moved, picture did not


# --- what a check sees, through the snapshot policy ---------------------------------------------------------------


def _model(out_channels: int = 4) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, out_channels, 3, padding=1), nn.ReLU(), nn.Conv2d(out_channels, 4, 1))


def _input(size: int = 16) -> torch.Tensor:
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))


def test_doubled_activations_drift_although_minmax_would_hide_them(tmp_path: Path) -> None:
    model = _model()
    snapshotter(tmp_path, update=True)(model, _input(), layers=["0"])
    with torch.no_grad():
        model[0].weight *= 2.0
        model[0].bias *= 2.0
    with pytest.raises(FeatureDriftError) as caught:
        snapshotter(tmp_path)(model, _input(), layers=["0"])
    assert "drift starts at layer '0'" in str(caught.value)
    assert caught.value.result is not None
    layer = caught.value.result.layer("0")
    assert layer.verdict == DRIFT and len(layer.worst_channels()) == 4


def _flat_model() -> nn.Sequential:
    """Every output channel is one constant value over the whole map, like the head of a random-init DeepLabV3."""
    torch.manual_seed(0)
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Upsample(scale_factor=8.0), nn.Conv2d(3, 4, 1))


def test_an_all_flat_layer_is_quiet_under_float_noise_and_catches_a_real_change(tmp_path: Path) -> None:
    model = _flat_model()
    snapshotter(tmp_path, update=True)(model, _input(), layers=["2"])
    with torch.no_grad():
        model[2].weight *= 1 + 2e-4  # TF32-sized rounding moves each constant by about 2e-4 of its level
        model[2].bias *= 1 + 2e-4
    snapshotter(tmp_path)(model, _input(), layers=["2"])
    with torch.no_grad():
        model[2].bias[1] += 0.05 * float(model[2].bias.abs().max())
    with pytest.raises(FeatureDriftError) as caught:
        snapshotter(tmp_path)(model, _input(), layers=["2"])
    assert "channel 1: SSIM 1.0000, picture change 0.000, statistics change" in str(caught.value)


def _pooled_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1))


def test_a_global_pool_is_judged_as_one_vector(tmp_path: Path) -> None:
    """Its (1, 8, 1, 1) output was judged as 8 flat maps, value by value in units of 5% of the layer's largest value:
    moving each value by half a percent of that, as TF32 rounding does on deep random-init CNNs, failed it."""
    model = _pooled_model()
    snapshotter(tmp_path, update=True)(model, _input(), layers=["2"])
    (sidecar,) = tmp_path.rglob("snapshot.json")
    (layer,) = json.loads(sidecar.read_text())["layers"]
    assert (layer["layout"], layer["shape"], layer["tile"], len(layer["channels"])) == (
        "features",
        [1, 8, 1, 1],
        [1, 8],
        1,
    )
    with torch.no_grad():
        pooled = model(_input()).flatten()
        largest = float(pooled.abs().max())
        model[0].bias += 0.005 * largest * torch.tensor([1.0, -1.0] * 4)  # each value moved by 0.5% of the largest
    assert snapshotter(tmp_path)(model, _input(), layers=["2"]).outcome == "matched"
    with torch.no_grad():
        model[0].bias[3] += 0.5 * largest  # a real change of one channel
    with pytest.raises(FeatureDriftError) as caught:
        snapshotter(tmp_path)(model, _input(), layers=["2"])
    assert "drift starts at layer '2'" in str(caught.value)


def test_a_global_pools_golden_of_8_flat_maps_asks_to_be_remade(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_featviz import layout

    per_channel = layout._plan
    monkeypatch.setattr(  # how earlier versions read it
        layout,
        "_plan",
        lambda shape, *rest: (
            layout.Layout("nchw", shape[1], shape[2:]) if len(shape) == 4 else per_channel(shape, *rest)
        ),
    )
    snapshotter(tmp_path, update=True)(_pooled_model(), _input(), layers=["2"])
    monkeypatch.undo()
    with pytest.raises(FeatureDriftError) as caught:
        snapshotter(tmp_path)(_pooled_model(), _input(), layers=["2"])
    lines = str(caught.value).splitlines()
    assert "  2: layout changed from nchw to features" in lines
    assert any("this version of pytest-featviz reads such an output another way" in line for line in lines)
    assert snapshotter(tmp_path, update=True)(_pooled_model(), _input(), layers=["2"]).outcome == "updated"
    assert snapshotter(tmp_path)(_pooled_model(), _input(), layers=["2"]).outcome == "matched"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("input size", "shape changed from (1, 4, 16, 16) to (1, 4, 20, 20)"),
        ("channel count", "shape changed from (1, 4, 16, 16) to (1, 6, 16, 16)"),
    ],
)
def test_shape_and_channel_count_changes_are_drift_from_to(tmp_path: Path, change: str, expected: str) -> None:
    snapshotter(tmp_path, update=True)(_model(), _input(), layers=["0"], channels="all")
    model, x = (_model(), _input(20)) if change == "input size" else (_model(6), _input())
    with pytest.raises(FeatureDriftError) as caught:
        snapshotter(tmp_path)(model, x, layers=["0"], channels="all")
    assert f"  0: {expected}" in str(caught.value)
    assert "drift starts at layer '0'" in str(caught.value)


def test_a_changed_batch_size_is_no_drift(tmp_path: Path) -> None:
    snapshotter(tmp_path, update=True)(_model(), _input(), layers=["0"])
    batch = torch.cat([_input(), torch.zeros(2, 3, 16, 16)])
    assert snapshotter(tmp_path)(_model(), batch, layers=["0"]).outcome == "matched"


def test_a_new_selection_of_channels_is_drift_from_to(tmp_path: Path) -> None:
    snapshotter(tmp_path, update=True)(_model(), _input(), layers=["0"], channels=[0, 1])
    with pytest.raises(FeatureDriftError, match=r"channel selection changed from \[0, 1\] to \[0, 2\]"):
        snapshotter(tmp_path)(_model(), _input(), layers=["0"], channels=[0, 2])


def test_a_reordered_channel_list_is_named_as_the_same_channels_in_another_order(tmp_path: Path) -> None:
    snapshotter(tmp_path, update=True)(_model(), _input(), layers=["0"], channels=[0, 1, 2])
    with pytest.raises(FeatureDriftError) as raised:
        snapshotter(tmp_path)(_model(), _input(), layers=["0"], channels=[2, 0, 1])
    assert "channel selection changed from [0, 1, 2] to [2, 0, 1] (the same channels in another order:" in str(
        raised.value
    )
    with pytest.raises(FeatureDriftError) as raised:  # a selection of other channels is not said to be reordered
        snapshotter(tmp_path)(_model(), _input(), layers=["0"], channels=[0, 1, 3])
    assert "another order" not in str(raised.value)


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        (["0"], ["0", "2"], "  2: selected now but not in the golden"),
        (["0", "2"], ["0"], "  2: in the golden but not captured now"),
    ],
)
def test_a_changed_selection_is_drift_and_update_accepts_it(
    tmp_path: Path, before: list[str], after: list[str], expected: str
) -> None:
    snapshotter(tmp_path, update=True)(_model(), _input(), layers=before)
    with pytest.raises(FeatureDriftError) as caught:
        snapshotter(tmp_path)(_model(), _input(), layers=after)
    assert expected in str(caught.value)
    assert snapshotter(tmp_path, update=True)(_model(), _input(), layers=after).outcome == "updated"
    assert sorted(p.name for p in tmp_path.rglob("*.png")) == [f"{name}.png" for name in after]
    assert snapshotter(tmp_path)(_model(), _input(), layers=after).outcome == "matched"


def test_a_changed_normalization_is_drift(tmp_path: Path) -> None:
    snapshotter(tmp_path, update=True)(_model(), _input(), layers=["0"])
    with pytest.raises(FeatureDriftError, match="normalize changed from 'minmax' to 'sigmoid'"):
        snapshotter(tmp_path, normalize="sigmoid")(_model(), _input(), layers=["0"])


# --- the noise floor ----------------------------------------------------------------------------------------------


def _scored(ssim: float, rms: float, stat: float, verdict: str = MATCH) -> LayerResult:
    return LayerResult(
        "layer1",
        verdict,
        (1, 2, 8, 8),
        (1, 2, 8, 8),
        (0, 1),
        ssim=(1.0, ssim),
        rms_error=(0.0, rms),
        stat_delta=(0.0, stat),
        threshold=0.99,
        stat_tolerance=0.03,
        rms_tolerance=0.15,
    )


def test_only_a_matching_layer_outside_its_clean_band_needs_a_noise_floor() -> None:
    assert not needs_noise_floor(_scored(1.0, 0.0, 0.0))  # an identical re-run costs no second forward pass
    assert not needs_noise_floor(_scored(0.997, 0.05, 0.011))  # inside 0.4x of every tolerance
    assert needs_noise_floor(_scored(0.9955, 0.0, 0.0))
    assert needs_noise_floor(_scored(1.0, 0.07, 0.0))
    assert needs_noise_floor(_scored(1.0, 0.0, 0.015))
    assert not needs_noise_floor(_scored(0.5, 0.0, 0.0, DRIFT))  # already drifted: nothing to tighten


def test_fitted_tolerances_are_four_times_the_noise_within_the_configured_ones() -> None:
    quiet = fitted(_scored(1.0, 0.0, 0.015), NoiseFloor(ssim=0.99999, rms_error=0.005, stat_delta=0.001))
    assert (quiet.threshold, quiet.rms_tolerance, quiet.stat_tolerance) == pytest.approx((0.996, 0.06, 0.012))
    assert quiet.verdict == DRIFT and quiet.noise is not None
    assert quiet.channel_failed(1) and not quiet.channel_failed(0)
    middle = fitted(_scored(1.0, 0.0, 0.015), NoiseFloor(ssim=0.9985, rms_error=0.02, stat_delta=0.005))
    assert (middle.threshold, middle.rms_tolerance, middle.stat_tolerance) == pytest.approx((0.994, 0.08, 0.02))
    assert middle.verdict == MATCH
    noisy = fitted(_scored(0.995, 0.1, 0.025), NoiseFloor(ssim=0.99, rms_error=0.1, stat_delta=0.02))
    assert (noisy.threshold, noisy.rms_tolerance, noisy.stat_tolerance) == (0.99, 0.15, 0.03)  # never looser
    assert noisy.verdict == MATCH
    unknown = fitted(_scored(1.0, 0.0, 0.015), NoiseFloor(ssim=math.nan, rms_error=math.nan, stat_delta=math.nan))
    assert (unknown.threshold, unknown.rms_tolerance, unknown.stat_tolerance) == (0.99, 0.15, 0.03)


def test_noise_floor_compares_the_rounded_run_with_the_plain_one() -> None:
    rng = np.random.default_rng(4)
    golden = rng.integers(0, 256, size=(2, 12, 12), dtype=np.uint8)
    current = np.clip(golden.astype(int) + 20, 0, 255).astype(np.uint8)  # far from the golden ...
    noisy = current.copy()
    noisy[1, 0, :4] += 3  # ... but the rounded run moves it only a little
    stats = np.array([[0.0, 1.0, -2.0, 2.0], [1.0, 2.0, -3.0, 5.0]])
    moved = stats + np.array([[0.01, 0.0, 0.0, 0.0], [0.0, 0.004, 0.0, 0.0]])
    floor = noise_floor(golden, current, noisy, stats, stats + 1.0, moved + 1.0, 255.0)
    assert floor.stat_delta == pytest.approx(0.01 / 1.5)  # in the golden std units, floored at the median std 1.5
    assert 0.9 < floor.ssim < 1.0 and 0.0 < floor.rms_error < 0.1


def test_an_identical_re_run_scores_exactly_clean(tmp_path: Path) -> None:
    # what a tolerance of 0 relies on, and what lets a clean check skip the noise floor's second forward pass
    snapshotter(tmp_path, update=True)(_model(), _input(), layers=["0", "2"])
    result = snapshotter(tmp_path, threshold=1.0, stat_tolerance=0.0, rms_tolerance=0.0)(
        _model(), _input(), layers=["0", "2"]
    )
    for layer in result.layers:
        assert set(layer.ssim) == {1.0} and set(layer.rms_error) == {0.0} and set(layer.stat_delta) == {0.0}


class _TextModel(nn.Module):
    """Embedding, two post-norm transformer layers and a head: a text model, whose layers are token images."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(500, 64)
        block = nn.TransformerEncoderLayer(64, 4, 128, dropout=0.0, batch_first=True)
        self.body = nn.TransformerEncoder(block, 2, enable_nested_tensor=False)
        self.head = nn.Linear(64, 8)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.embed(ids)))


def _tokens() -> torch.Tensor:
    return torch.randint(0, 500, (1, 40), generator=torch.Generator().manual_seed(1))


def test_a_token_image_is_judged_per_feature(tmp_path: Path) -> None:
    """A LayerNorm keeps a layer's overall mean and std fixed, and a token image had only those: a 2% weight change
    in every layer of a text transformer passed. Each feature's statistics over the tokens move with it, about 50
    times as far as TF32 rounding moves them."""
    from pytest_featviz import calibrate

    layers = ["body.layers.0", "body.layers.1", "head"]
    snapshotter(tmp_path, update=True)(_TextModel(), _tokens(), layers=layers)
    stored = json.loads(next(tmp_path.rglob("snapshot.json")).read_text())
    assert [len(layer["features"]["index"]) for layer in stored["layers"]] == [64, 64, 8]
    with calibrate.tf32_emulation():
        assert all(layer.verdict == MATCH for layer in snapshotter(tmp_path)(_TextModel(), _tokens()).layers)
    with pytest.raises(FeatureDriftError, match=r"statistics change 0\.0\d\d > 0\.0"):
        snapshotter(tmp_path)(noisy_weights(_TextModel(), 0.02), _tokens())


def test_a_feature_index_beyond_the_map_is_a_malformed_golden(tmp_path: Path) -> None:
    """An edited index (999 of 64 features) silently dropped the per-feature verdict."""
    from pytest_featviz.golden import GoldenError

    snapshotter(tmp_path, update=True)(_TextModel(), _tokens(), layers=["body.layers.0"])
    sidecar = next(tmp_path.rglob("snapshot.json"))
    data = json.loads(sidecar.read_text())
    data["layers"][0]["features"]["index"][-1] = 999
    sidecar.write_text(json.dumps(data))
    with pytest.raises(GoldenError, match=r"is malformed \(layer 'body.layers.0': feature index 999 of a map of 64"):
        snapshotter(tmp_path)(_TextModel(), _tokens())


def test_a_token_image_golden_without_feature_statistics_is_judged_as_before(tmp_path: Path) -> None:
    """Goldens written before features were recorded compare their picture and overall statistics only: no new
    verdict without the numbers to judge it."""
    snapshotter(tmp_path, update=True)(_TextModel(), _tokens(), layers=["body.layers.0"])
    sidecar = next(tmp_path.rglob("snapshot.json"))
    data = json.loads(sidecar.read_text())
    del data["layers"][0]["features"]
    sidecar.write_text(json.dumps(data))
    result = snapshotter(tmp_path)(noisy_weights(_TextModel(), 0.02), _tokens())
    assert result.layers[0].verdict == MATCH and result.layers[0].max_stat_delta < 0.001
