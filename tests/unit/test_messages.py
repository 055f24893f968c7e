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
