"""messages: what a drift message says about a drifted layer (its scores against the tolerances, the noise floor it
was judged by, and when that noise points at keeping one golden per device type)."""

from __future__ import annotations

from pathlib import Path

from pytest_featviz.messages import drift_message, layer_summary, moved_before
from pytest_featviz.records import DRIFT, MATCH, NEW, LayerResult, NoiseFloor
from pytest_featviz.snapshot import TestIdentity

IDENTITY = TestIdentity("t.py::test_a", "t.py", "test_a", "pytest --featviz-update t.py::test_a")


def test_a_layer_whose_tf32_noise_reaches_the_configured_tolerances_points_at_golden_keys() -> None:
    def summary(noise: NoiseFloor) -> str:
        layer = LayerResult(
            "trunk", DRIFT, (1, 2, 4, 4), (1, 2, 4, 4), (0, 1), (0.97, 0.999), (0.08, 0.0), (0.2, 0.01),
            threshold=0.99, stat_tolerance=0.03, rms_tolerance=0.15, noise=noise,
        )  # fmt: skip
        return "\n".join(layer_summary(layer))

    hint = "TF32 rounding alone takes this layer near its tolerances: against a golden made with other float"
    assert hint in summary(NoiseFloor(ssim=0.999, rms_error=0.05, stat_delta=0.02))  # 4 x 0.05 > 0.15
    assert "featviz_golden_key = device" in summary(NoiseFloor(ssim=0.99, rms_error=0.01, stat_delta=0.001))
    # a test that already takes it with deterministic=True needs its golden re-made so
    assert "with deterministic=True (TF32 off) and re-make its golden with it" in summary(
        NoiseFloor(ssim=0.99, rms_error=0.01, stat_delta=0.001)
    )
    assert hint not in summary(NoiseFloor(ssim=0.9999, rms_error=0.01, stat_delta=0.002))


def test_fitted_tolerances_are_shown_without_noise_digits_and_never_as_1() -> None:
    """Found by QA: "statistics change up to 0.017 > 0.014" above "held to ... statistics change <= 0.0143454"."""
    layer = LayerResult(
        "trunk", DRIFT, (1, 2, 4, 4), (1, 2, 4, 4), (0, 1), (0.999, 0.999), (0.01, 0.0), (0.017, 0.01),
        threshold=0.99612345, stat_tolerance=0.0143454, rms_tolerance=0.0612345,
        noise=NoiseFloor(ssim=0.999, rms_error=0.0153, stat_delta=0.0035864),
    )  # fmt: skip
    assert "held to SSIM >= 0.996123, picture change <= 0.06123, statistics change <= 0.01435 (" in "\n".join(
        layer_summary(layer)
    )
    # a threshold fitted close to 1 stays below it (it read "SSIM >= 1", and "min SSIM 0.9999 < 1" above it)
    near = LayerResult(
        "trunk", DRIFT, (1, 2, 4, 4), (1, 2, 4, 4), (0,), (0.99993699,), (0.001,), (0.001,),
        threshold=0.9999597498683506, stat_tolerance=1.0, rms_tolerance=1.0,
        noise=NoiseFloor(ssim=0.99999, rms_error=0.0001, stat_delta=0.0001),
    )  # fmt: skip
    lines = layer_summary(near)
    assert "min SSIM 0.99994 < 0.99996," in lines[0] and "held to SSIM >= 0.99996," in "\n".join(lines)


def test_a_score_just_beyond_its_tolerance_is_shown_with_the_digits_that_tell_them_apart() -> None:
    # a noise-floor tolerance of 0.012 broken by 0.012118 read "statistics change up to 0.012 > 0.012"
    layer = LayerResult(
        "trunk", DRIFT, (1, 2, 4, 4), (1, 2, 4, 4), (0, 1), (0.98996, 0.9), (0.012118, 0.004), (0.1500004, 0.01),
        threshold=0.99, stat_tolerance=0.012, rms_tolerance=0.15,
    )  # fmt: skip
    head, worst, second = layer_summary(layer)
    assert head.endswith(
        ": 2 of 2 channels drifted: min SSIM 0.9000 < 0.99, picture change up to 0.1500004 > 0.15, statistics change up"
        " to 0.0121 > 0.012, mean SSIM 0.9450"
    )
    # a score that keeps its tolerance, or breaks it plainly, keeps the usual digits
    assert worst == "      channel 1: SSIM 0.9000 < 0.99, picture change 0.010, statistics change 0.004"
    assert second == (
        "      channel 0: SSIM 0.98996 < 0.99, picture change 0.1500004 > 0.15, statistics change 0.0121 > 0.012"
    )


def test_a_score_just_below_a_limit_of_0_is_not_shown_as_minus_0() -> None:
    """Found by QA: threshold=0 and an SSIM of -0.00004 read "-0.0000 < 0"."""
    from pytest_featviz.outcomes import broken_score

    assert broken_score(-0.00004, 0.0, 4, above=False) == "-0.00004 < 0"
    assert broken_score(-1e-12, 0.0, 4, above=False) == "-0.000000000001 < 0"


def test_a_huge_statistics_change_is_shown_in_three_significant_digits() -> None:
    # a channel that was constant in the golden and came alive: its change in units of a std of about 0 read
    # "statistics change 17970105000.000 > 0.03"
    layer = _layer("trunk", DRIFT, 0.2, 17970105000.0, 3.0)
    (head, channel) = layer_summary(layer)
    assert channel.endswith("statistics change 1.8e+10 > 0.03")
    assert "statistics change up to 1.8e+10 > 0.03" in head


def _layer(name: str, verdict: str, ssim: float, stat: float, rms: float, stat_tolerance: float = 0.03) -> LayerResult:
    return LayerResult(
        name, verdict, (1, 1, 4, 4), (1, 1, 4, 4), (0,), (ssim,), (stat,), (rms,),
        threshold=0.99, stat_tolerance=stat_tolerance, rms_tolerance=0.15,
    )  # fmt: skip


def test_a_layer_before_the_first_drift_that_moved_within_its_tolerances_is_named() -> None:
    # a 1% BatchNorm change in layer1 moved it to 0.0115 of 0.03 (a pass); layer2, judged by its noise floor at
    # 0.012, drifted at 0.0163, and the message said the drift starts at layer2 with no word of layer1
    results = [
        _layer("stem", MATCH, 1.0, 0.002, 0.01),  # float noise: under a quarter of every tolerance
        _layer("layer1", MATCH, 0.9995, 0.0115, 0.02),
        _layer("layer2", DRIFT, 0.999, 0.0163, 0.03, stat_tolerance=0.012),
        _layer("layer3", MATCH, 0.95, 0.0, 0.0),  # after the first drift: not looked at
    ]
    assert moved_before(results) == (
        "before it, layer 'layer1' matched but moved: statistics change 0.0115, 38% of the way to its limit"
        " (<= 0.03); the change may start there"
    )
    message = drift_message(IDENTITY, "0", Path("golden/t/test_a/0"), results, same_place=True)
    # the first line names the first drifted layer: all that -r summaries, --tb=no and IDE panels show
    assert message.splitlines()[0].endswith(": 1 of 4 layer(s) drifted (first: 'layer2')")
    assert message.splitlines()[1:3] == [
        "drift starts at layer 'layer2' (first drifted layer in forward order)",
        moved_before(results),
    ]
    # against a golden from another environment (a GPU's, TF32 on) float noise alone moves layers that far
    assert "matched but moved" not in drift_message(IDENTITY, "0", Path("golden/t/test_a/0"), results)
    # earlier layers that did not move, that moved by float noise, or were not compared: nothing said
    quiet = [_layer("stem", MATCH, 1.0, 0.0, 0.0), _layer("odd", MATCH, 0.9999, 0.007, 0.03), results[2]]
    assert moved_before(quiet) == ""
    assert moved_before([LayerResult("new", NEW, (1, 2), None, reason="selected now"), results[2]]) == ""
    assert moved_before([_layer("strict", MATCH, 0.999, 0.0, 0.0, stat_tolerance=0.0), results[2]]) == ""
    # an SSIM that went most of the way to its threshold
    assert moved_before([_layer("s", MATCH, 0.996, 0.0, 0.0), results[2]]) == (
        "before it, layer 's' matched but moved: min SSIM 0.9960, 40% of the way to its limit (>= 0.99); the change"
        " may start there"
    )


def test_a_layer_before_the_first_drift_whose_own_weights_changed_is_where_the_drift_starts() -> None:
    # 0.8% noise on layer2.0's conv moved it within its tolerances (float64, or 17% of its limit); layer3 drifted,
    # and the message said the drift starts at layer3 while its weights sentence named layer2.0
    results = [
        _layer("layer1", MATCH, 1.0, 0.0, 0.0),
        _layer("layer2.0", MATCH, 0.9999, 0.005, 0.02),
        _layer("layer2.1@1", MATCH, 0.9999, 0.0115, 0.02),  # a later call of a module: moved more, but after it
        _layer("layer3", DRIFT, 0.999, 0.0133, 0.03, stat_tolerance=0.012),
    ]
    message = drift_message(
        IDENTITY, "0", Path("golden/t/test_a/0"), results, same_place=True, new_weights={"layer2.0", "layer3"}
    )
    assert message.splitlines()[1:3] == [
        "drift starts at layer 'layer3' (first drifted layer in forward order)",
        "before it, layer 'layer2.0' matched but moved, and its own weights or buffers changed since the golden was"
        " made: the change starts there, within that layer's tolerances",
    ]
    assert "matched but moved:" not in message  # the layer whose weights changed is where it starts
    # a layer called again is known by its module's name; none before the drift with new weights: nothing said
    assert "'layer2.1@1' matched but moved, and its own weights" in drift_message(
        IDENTITY, "0", Path("golden/t/test_a/0"), results, new_weights={"layer2.1"}
    )
    assert "its own weights" not in drift_message(
        IDENTITY, "0", Path("golden/t/test_a/0"), results, new_weights={"layer3"}
    )
    # a layer that did not move at all (only a BatchNorm's call counter changed, which eval mode does not read)
    still = [_layer("stem", MATCH, 1.0, 0.0, 0.0), results[3]]
    assert "its own weights" not in drift_message(IDENTITY, "0", Path("golden/t/test_a/0"), still, new_weights={"stem"})


def test_a_fitted_limit_is_named_in_four_digits_where_a_layer_moved_before_the_drift() -> None:
    moved = _layer("s", MATCH, 1.0, 0.0136, 0.0, stat_tolerance=0.0140422)
    assert "97% of the way to its limit (<= 0.01404)" in moved_before([moved, _layer("d", DRIFT, 0.5, 0.5, 0.5)])


def test_the_score_legend_comes_with_scores_only() -> None:
    compared = [_layer("conv", DRIFT, 0.5, 0.2, 0.3)]
    assert "scores per channel: SSIM of its picture" in drift_message(
        IDENTITY, "0", Path("golden/t/test_a/0"), compared
    )
    # a channels= or normalize= change: no layer was compared, the legend explained scores the message did not show
    changed = [LayerResult("conv", DRIFT, (1, 8, 4, 4), (1, 8, 4, 4), reason="channel selection changed")]
    message = drift_message(IDENTITY, "0", Path("golden/t/test_a/0"), changed)
    assert "channel selection changed" in message and "scores per channel" not in message
