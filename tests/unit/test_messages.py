"""messages: what a drift message says about a drifted layer (its scores against the tolerances, the noise floor it
was judged by, and when that noise points at keeping one golden per device type)."""

from __future__ import annotations

from pytest_featviz.messages import layer_summary
from pytest_featviz.records import DRIFT, LayerResult, NoiseFloor


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
    assert hint not in summary(NoiseFloor(ssim=0.9999, rms_error=0.01, stat_delta=0.002))


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
