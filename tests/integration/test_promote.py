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

    # run from elsewhere (a subdirectory of the project): the report says where its goldens are
    elsewhere = featviz_pytester.mkdir("sub")
    monkeypatch.chdir(elsewhere)
    out = io.StringIO()
    assert main(["promote", "../featviz-report", "-k", "no such test"], out=out) == 1
    assert "nothing promoted: the report in ../featviz-report has no drifted or missing snapshot whose test id" in (
        out.getvalue()
    )
    sidecar = golden / "snapshot.json"
    current = sidecar.read_text()
    sidecar.write_text(current.replace('"format": 1', '"format": 7'))  # as a newer pytest-featviz writes it
    assert main(["promote", "../featviz-report"], out=io.StringIO()) == 1  # never downgraded unseen
    assert '"format": 7' in sidecar.read_text()
    sidecar.write_text(current)
    assert main(["promote", "../featviz-report", "--root", "no-such-dir"], out=io.StringIO()) == 1
    assert not (elsewhere / "no-such-dir").exists()  # a typo grows no golden tree
    out = io.StringIO()
    assert main(["promote", "../featviz-report"], out=out) == 0
    assert "promoted ../golden/test_models/test_net/0" in out.getvalue()
    assert "1 golden snapshot(s) replaced" in out.getvalue()
    assert (golden / "0.png").read_bytes() != before
    assert not any(elsewhere.iterdir())  # nothing written where it ran
    monkeypatch.chdir(featviz_pytester.path)
    featviz_pytester.runpytest().assert_outcomes(passed=1)


def test_promote_without_a_report_says_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["promote", str(tmp_path)], out=io.StringIO()) == 2
    assert f"no report.json in {tmp_path.resolve()}: run pytest first" in capsys.readouterr().err


def test_the_command_under_a_failure_promotes_that_test_alone(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # test_net2's id contains test_net's: the pasted command must not take test_net2's drift with it
    featviz_pytester.makepyfile(
        test_models=TEST_FILE + TEST_FILE.split("\n\n\n", 1)[1].replace("test_net(", "test_net2(")
    )
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=2)
    goldens = featviz_pytester.path / "golden" / "test_models"
    before = {name: (goldens / name / "0" / "0.png").read_bytes() for name in ("test_net", "test_net2")}
    monkeypatch.setenv("FEATVIZ_TEST_DRIFT", "1")
    drifted = featviz_pytester.runpytest("-p", "no:randomly")
    drifted.assert_outcomes(failed=2)
    drifted.stdout.fnmatch_lines(["*promote it with `featviz promote featviz-report -k test_models.py::test_net`*"])
    assert main(["promote", "featviz-report", "-k", "test_models.py::test_net"], out=io.StringIO()) == 0
    assert (goldens / "test_net" / "0" / "0.png").read_bytes() != before["test_net"]
    assert (goldens / "test_net2" / "0" / "0.png").read_bytes() == before["test_net2"]  # not promoted with it
    assert main(["promote", "featviz-report", "-k", "test_net"], out=io.StringIO()) == 0  # a part: every match
    assert (goldens / "test_net2" / "0" / "0.png").read_bytes() != before["test_net2"]
