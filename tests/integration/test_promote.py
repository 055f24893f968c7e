"""`featviz promote`: a reviewer accepts a drift from the report without re-running the model."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch  # noqa: F401  # loaded once here: in-process runs cannot import numpy twice

from pytest_featviz.cli import main

TEST_FILE = """
import os
import torch
from torch import nn


def test_net(feature_snapshot):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    if os.environ.get("FEATVIZ_TEST_DRIFT"):
        with torch.no_grad():
            model[0].weight[:2] *= -1
    torch.manual_seed(1)
    feature_snapshot(model, torch.randn(1, 3, 9, 9), layers=["0"])
"""


def test_promote_accepts_the_drift_shown_in_the_report(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    featviz_pytester.makepyfile(test_models=TEST_FILE)
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=1)
    golden = featviz_pytester.path / "golden" / "test_models" / "test_net" / "0"
    before = (golden / "0.png").read_bytes()
    monkeypatch.setenv("FEATVIZ_TEST_DRIFT", "1")
    drifted = featviz_pytester.runpytest()
    drifted.assert_outcomes(failed=1)
    drifted.stdout.fnmatch_lines(["*featviz promote*"])

    out = io.StringIO()
    assert (
        main(["promote", str(featviz_pytester.path / "featviz-report"), "--root", str(featviz_pytester.path)], out=out)
        == 0
    )
    assert f"promoted {golden}" in out.getvalue()
    assert "1 golden snapshot(s) replaced" in out.getvalue()
    assert (golden / "0.png").read_bytes() != before
    featviz_pytester.runpytest().assert_outcomes(passed=1)


def test_promote_without_a_report_says_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["promote", str(tmp_path)], out=io.StringIO()) == 2
    assert "no report.json" in capsys.readouterr().err
