"""``--featviz-calibrate``: the noise floor under benign perturbations, printed per layer next to the thresholds;
goldens never written; the model under test never changed; skipped perturbations explained; xdist workers'
records reach the controller's summary."""

from __future__ import annotations

from pathlib import Path

import pytest

# Kept in sys.modules: in-process pytester runs drop the modules they import, and torch cannot be imported twice.
import torch
import torch._dynamo  # noqa: F401  (torch.manual_seed imports it lazily; a second import in one process fails)
from PIL import Image, PngImagePlugin  # noqa: F401

import pytest_featviz.snapshot  # noqa: F401
from pytest_featviz.calibrate import layer_floors, round_tf32, summary_lines
from pytest_featviz.records import DRIFT, MATCH, MATCHED, CalibrationRun, LayerResult, SnapshotResult

MODELS = """
import threading

import torch
from torch import nn


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))


def make_input():
    torch.manual_seed(1)
    return torch.rand(1, 2, 12, 12)


class Locked(nn.Sequential):
    '''A model deepcopy refuses: it holds a lock.'''

    def __init__(self, *layers):
        super().__init__(*layers)
        self.lock = threading.Lock()
"""

SUBJECT = """
import torch
from torch import nn
from featviz_models import Locked, make_input, make_model


def test_conv(feature_snapshot):
    model = make_model()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    feature_snapshot(model, make_input(), layers=["0", "2"])
    # calibrate never changes the model under test
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())
    assert all(p.dtype == torch.float32 and p.is_contiguous() for p in model.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_locked(feature_snapshot):
    feature_snapshot(Locked(*make_model()), make_input(), layers=["0"])


def test_linear(feature_snapshot):
    torch.manual_seed(2)
    feature_snapshot(nn.Sequential(nn.Linear(6, 5), nn.Tanh()), torch.rand(1, 6), layers=["0"])
"""


@pytest.fixture
def subject(featviz_pytester: pytest.Pytester) -> pytest.Pytester:
    featviz_pytester.makepyfile(featviz_models=MODELS, test_subject=SUBJECT)
    featviz_pytester.syspathinsert()
    return featviz_pytester


def _golden_files(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def _section(result: pytest.RunResult) -> list[str]:
    lines = result.stdout.lines
    start = next(i for i, line in enumerate(lines) if "featviz calibrate" in line)
    return lines[start + 1 :]


def test_calibrate_prints_the_noise_floor_per_layer_and_writes_no_golden(subject: pytest.Pytester) -> None:
    subject.runpytest("--featviz-update").assert_outcomes(passed=3)
    goldens = _golden_files(subject.path / "golden")
    threads = 1 if torch.get_num_threads() > 1 else 2
    result = subject.runpytest("--featviz-calibrate")
    result.assert_outcomes(passed=3)
    section = _section(result)
    result.stdout.fnmatch_lines(
        [
            "*featviz calibrate*",
            "noise floor of 3 snapshot(s) under benign perturbations (threads, channels_last, tf32, float64);"
            " worst value seen (threshold) and the perturbation that caused it; no golden was written",
            f"test_subject.py::test_conv [[]snapshot '0'[]], perturbations run: threads={threads}, channels_last,"
            " tf32 rounding, float64",
            "  layer*lowest SSIM*largest picture change*largest statistics change",
            "  0 * (0.*) * (0.*) * (0.*) *",
            "  2 * (0.*) * (0.*) * (0.*) *",
        ]
    )
    assert _golden_files(subject.path / "golden") == goldens
    start = next(i for i, line in enumerate(section) if line.startswith("test_subject.py::test_conv"))
    block = section[start + 1 : start + 4]  # header and the two layers, then the next snapshot
    assert [line.split()[0] for line in block] == ["layer", "0", "2"]
    assert section[start + 4].startswith("test_subject.py::")  # no skipped perturbation, no layer without margin


def test_skipped_perturbations_are_explained(subject: pytest.Pytester) -> None:
    subject.runpytest("--featviz-update").assert_outcomes(passed=3)
    result = subject.runpytest("--featviz-calibrate")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        [
            # TF32 rounding runs the model itself under a function mode: it needs no copy
            "test_subject.py::test_locked [[]snapshot '0'[]], perturbations run: threads=*, tf32 rounding",
            "*",
            "  channels_last: skipped: the model cannot be copied (TypeError: cannot pickle '_thread.lock' object)",
            "  float64: skipped: the model cannot be copied (TypeError: *",
            "test_subject.py::test_linear [[]snapshot '0'[]], perturbations run: threads=*, tf32 rounding, float64",
            "*",
            "  channels_last: skipped: no 4-D input tensor to store channels_last",
        ]
    )


def test_a_layer_without_margin_is_marked(subject: pytest.Pytester) -> None:
    subject.runpytest("--featviz-update").assert_outcomes(passed=3)
    # a statistics tolerance of 0: any rounding difference crosses it
    result = subject.runpytest("--featviz-calibrate", "--featviz-stat-tolerance", "0", "-k", "test_conv")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "  0 ! * (0.9*) * (0) *",
            "  ! a benign perturbation already crosses a threshold here: this layer has no margin",
        ]
    )


def test_a_drifted_snapshot_is_not_calibrated(subject: pytest.Pytester) -> None:
    subject.runpytest("--featviz-update").assert_outcomes(passed=3)
    subject.makepyfile(featviz_models=MODELS.replace("torch.manual_seed(0)", "torch.manual_seed(5)"))
    result = subject.runpytest("--featviz-calibrate", "-k", "test_conv")
    result.assert_outcomes(failed=1)  # the drift fails as in a check
    section = _section(result)
    assert section[0].startswith("noise floor of 0 snapshot(s) under benign perturbations")  # it counted this one
    start = next(i for i, line in enumerate(section) if line.startswith("test_subject.py::test_conv"))
    # no table that would credit the drift to the perturbations, and no advice to loosen a tolerance
    assert section[start + 1].startswith("  all: not calibrated: this snapshot drifted from its golden")
    assert "no margin" not in result.stdout.str()


@pytest.mark.parametrize("mode", ["update", "create"])
def test_calibrate_with_update_or_create_is_refused(subject: pytest.Pytester, mode: str) -> None:
    result = subject.runpytest("--featviz-calibrate", f"--featviz-{mode}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            f"ERROR: --featviz-calibrate never writes goldens: run it without --featviz-{mode}"
            f" ({mode} first, then calibrate)"
        ]
    )
    assert not (subject.path / "golden").exists()


def test_calibrate_without_a_golden_fails_as_missing_and_writes_nothing(subject: pytest.Pytester) -> None:
    result = subject.runpytest("--featviz-calibrate", "-k", "test_conv")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*noise floor of 0 snapshot(s)*", "1 snapshot(s) not calibrated (no golden*"])
    assert not (subject.path / "golden").exists()


def test_calibration_reaches_the_controller_under_xdist(subject: pytest.Pytester) -> None:
    subject.runpytest("--featviz-update").assert_outcomes(passed=3)
    result = subject.runpytest("--featviz-calibrate", "-n", "2", "-p", "xdist")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*noise floor of 3 snapshot(s)*", "test_subject.py::test_conv [[]snapshot '0'[]]*"])


# -- the parts, without pytest ----------------------------------------------------------------------------------


def test_round_tf32_keeps_ten_mantissa_bits_and_rounds_half_to_even() -> None:
    ulp = 2.0**-10
    values = torch.tensor([1.0, 1.0 + ulp, 1.0 + ulp / 2, 1.0 + 3 * ulp / 2, 1.0 + ulp / 4, -3.0 - ulp, 0.0, 1e-30])
    rounded = round_tf32(values).tolist()
    assert rounded[:6] == [1.0, 1.0 + ulp, 1.0, 1.0 + 2 * ulp, 1.0, -3.0]
    assert rounded[6] == 0.0 and rounded[7] == pytest.approx(1e-30, rel=ulp)
    assert round_tf32(values.double()).dtype == torch.float64 and torch.equal(
        round_tf32(values.double()), values.double()
    )


def _layer(name: str, ssim: float, rms: float, stat: float, reason: str = "") -> LayerResult:
    if reason:
        return LayerResult(name, DRIFT, (1, 2), (1, 2), (0,), reason=reason)
    return LayerResult(name, MATCH, (1, 2), (1, 2), (0, 1), (1.0, ssim), (0.0, stat), (0.0, rms), 0.98, 0.05, 0.03)


def test_tf32_emulation_reaches_rnns_and_multi_head_attention() -> None:
    """torch's RNNs and nn.MultiheadAttention run as one function each, inside which the emulation is off: their
    noise floor measured 0, so their tolerances were pinned at the tightest while a GPU's TF32 does move them."""
    import torch
    from torch import nn

    from pytest_featviz import calibrate

    torch.manual_seed(0)
    x = torch.randn(1, 20, 32)
    attention = nn.MultiheadAttention(32, 4, batch_first=True)
    runs = [nn.LSTM(32, 32, batch_first=True), nn.GRU(32, 32), nn.RNN(32, 32), lambda v: attention(v, v, v)]
    with torch.no_grad():
        plain = [run(x)[0] for run in runs]
        with calibrate.tf32_emulation():
            rounded = [run(x)[0] for run in runs]
    moved = [float((a - b).abs().max()) for a, b in zip(plain, rounded, strict=True)]
    assert all(0 < m < 1e-2 for m in moved), moved


def test_layer_floors_take_the_worst_of_every_perturbation_and_name_it() -> None:
    runs = (
        CalibrationRun("threads=1", (_layer("a", 0.999, 0.001, 0.002),)),
        CalibrationRun("float64", (_layer("a", 0.995, 0.004, 0.001),)),
        CalibrationRun("tf32 rounding", (_layer("a", 0.997, 0.002, 0.003),)),
        CalibrationRun("channels_last", (), "skipped: no 4-D input tensor to store channels_last"),
    )
    (floor,) = layer_floors(runs)
    assert floor.ssim == (0.995, "float64") and floor.picture == (0.004, "float64")
    assert floor.statistics == (0.003, "tf32 rounding") and not floor.exceeded
    result = SnapshotResult("t.py::test", "0", "golden/t/test/0", MATCHED, calibration=runs)
    lines = summary_lines([result])
    assert lines[1] == "t.py::test [snapshot '0'], perturbations run: threads=1, float64, tf32 rounding"
    assert lines[3].split() == [
        "a",
        "0.99500",
        "(0.98)",
        "float64",
        "0.0040",
        "(0.03)",
        "float64",
        "0.0030",
        "(0.05)",
        "tf32",
        "rounding",
    ]
    assert lines[4] == "  channels_last: skipped: no 4-D input tensor to store channels_last"
    assert SnapshotResult.from_dict(result.to_dict()) == result


def test_a_layer_not_comparable_under_a_perturbation_is_reported() -> None:
    runs = (CalibrationRun("float64", (_layer("a", 0.0, 0.0, 0.0, reason="layout changed from NCHW to NHWC"),)),)
    result = SnapshotResult("t.py::test", "0", "g", MATCHED, calibration=runs)
    lines = summary_lines([result])
    assert "  a: not comparable under float64: layout changed from NCHW to NHWC" in lines
    assert lines[-1].startswith("  ! a benign perturbation already crosses a threshold")
