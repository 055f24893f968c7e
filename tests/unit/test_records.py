"""records: result records round-trip through JSON (as xdist sends them) and answer the questions a report asks."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import pytest

from pytest_featviz import FeatureDriftError, LayerResult, SnapshotResult
from pytest_featviz.records import (
    DRIFT,
    DRIFTED,
    GONE,
    MATCH,
    UPDATED,
    GoldenMissingError,
    NoiseFloor,
    display_path,
    environment_words,
    score_beyond,
)


def _drifted_layer() -> LayerResult:
    return LayerResult(
        name="layer2",
        verdict=DRIFT,
        shape=(1, 8, 4, 4),
        golden_shape=(1, 8, 4, 4),
        channels=(0, 3, 5, 7),
        ssim=(0.999, 0.5, 0.97, 0.2),
        stat_delta=(0.0, 0.0, 0.0, 0.3),
        rms_error=(0.0, 0.1, 0.0, 0.0),
        threshold=0.98,
        stat_tolerance=0.05,
        rms_tolerance=0.03,
        noise=NoiseFloor(ssim=0.9999, rms_error=0.004, stat_delta=0.0012),
    )


def _result() -> SnapshotResult:
    layers = (
        LayerResult("layer1", MATCH, (1, 8, 8, 8), (1, 8, 8, 8), (0,), (1.0,), (0.0,), (0.0,), 0.98, 0.05, 0.03),
        _drifted_layer(),
        LayerResult("head", GONE, None, (1, 10), (0,), reason="no longer in the model"),
    )
    return SnapshotResult(
        "t.py::test[a]", "0", "golden/t/test[a]/0", DRIFTED, layers, "msg", {"mosaic:layer2": "x.png"}
    )


def test_round_trip_through_json() -> None:
    result = _result()
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert SnapshotResult.from_dict(data) == result
    assert data["first_drifted"] == "layer2"
    assert data["layers"][1]["noise_floor"] == {"ssim": 0.9999, "rms_error": 0.004, "stat_delta": 0.0012}
    assert data["layers"][0]["noise_floor"] is None  # judged by the configured tolerances
    assert "update_dir" not in data  # written only where --featviz-update would write elsewhere


def test_round_trip_keeps_where_update_would_write_a_keyed_golden() -> None:
    # an xdist worker sends its results as JSON: without update_dir, promote wrote a device's drift over the shared
    result = dataclasses.replace(_result(), update_dir="golden/t/test[a]/0@cuda")
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["update_dir"] == "golden/t/test[a]/0@cuda"
    assert SnapshotResult.from_dict(data) == result


def test_round_trip_keeps_a_re_created_damaged_golden() -> None:
    # an xdist worker's re-created golden: the controller's summary says "damaged (re-created)", not "drifted"
    result = dataclasses.replace(_result(), outcome=UPDATED, recreated=True)
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["recreated"] is True and SnapshotResult.from_dict(data) == result
    assert "recreated" not in _result().to_dict()


def test_drift_questions() -> None:
    result = _result()
    assert [layer.name for layer in result.drifted_layers] == ["layer2", "head"]
    assert result.first_drifted == "layer2"
    layer = result.layer("layer2")
    assert layer.min_ssim == 0.2 and layer.mean_ssim == pytest.approx((0.999 + 0.5 + 0.97 + 0.2) / 4)
    # positions into channels, worst SSIM first, only failing ones (0.999 passes every tolerance)
    assert layer.worst_channels() == [3, 1, 2]
    assert layer.worst_channels(1) == [3]
    assert math.isnan(result.layer("head").min_ssim)
    with pytest.raises(KeyError, match="no layer 'nope' in snapshot '0'; layers: \\['layer1', 'layer2', 'head'\\]"):
        result.layer("nope")


def test_records_are_frozen() -> None:
    with pytest.raises(AttributeError):
        _result().outcome = "matched"  # type: ignore[misc]


def test_errors_are_assertion_errors_for_pytest() -> None:
    error = FeatureDriftError("drift", _result())
    assert isinstance(error, AssertionError) and error.result is not None
    assert issubclass(GoldenMissingError, AssertionError)


def test_display_path_is_relative_unless_the_absolute_path_is_shorter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deep = tmp_path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert display_path(deep / "golden" / "test_x") == os.path.join("golden", "test_x")
    assert display_path(Path("/")) == "/"  # not ../../../.. up to the root
    assert display_path(str(tmp_path)) == os.path.join("..", "..", "..")


@pytest.mark.parametrize(
    ("environment", "words"),
    [
        ({"torch": "2.14.1", "device": "cpu", "dtype": "float32"}, "cpu with torch 2.14.1"),
        (
            {"torch": "2.14.1", "device": "cuda", "dtype": "float32", "matmul_tf32": False, "cudnn_tf32": True},
            "cuda with torch 2.14.1, TF32 on",
        ),
        (
            {"torch": "2.14.1", "device": "cuda", "dtype": "bfloat16", "cudnn_tf32": True},
            "cuda with torch 2.14.1, bfloat16",
        ),
        (
            {"torch": "2.14.1", "device": "cpu", "cudnn_tf32": True, "deterministic": True},
            "cpu with torch 2.14.1, deterministic algorithms",
        ),
    ],
)
def test_environment_words(environment: dict[str, object], words: str) -> None:
    assert environment_words(environment) == words


@pytest.mark.parametrize(
    ("value", "limit", "digits", "expected"),
    [
        (0.012118, 0.012, 3, ("0.0121", "0.012")),  # read "0.012 > 0.012"
        (0.00106272, 0.0010627, 3, ("0.00106272", "0.0010627")),  # read "0.0011 > 0.0010627", ten times the overshoot
        (0.9998950972542727, 0.999895097354, 4, ("0.9998950973", "0.9998950974")),  # limit shown rounded: "< 0.999895"
        (0.5, 0.0010627, 3, ("0.500", "0.0010627")),  # far apart: the usual digits
        (0.9612, 0.99, 4, ("0.9612", "0.99")),
    ],
)
def test_a_broken_limit_and_its_score_are_shown_with_the_digits_that_tell_them_apart(
    value: float, limit: float, digits: int, expected: tuple[str, str]
) -> None:
    assert score_beyond(value, limit, digits) == expected
    score, shown = expected
    assert (float(score) > float(shown)) == (value > limit)  # as shown, they read the way the verdict went
