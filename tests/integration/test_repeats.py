"""Repeating plugins: every run that pytest-repeat (``--count``) or pytest-flakefinder makes of a test is checked
against the test's own goldens, and the commands the plugin prints name the test as it exists without them."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import pytest

# Kept in sys.modules: in-process pytester runs drop the modules they import, and importing torch or Pillow's plugin
# registry afresh in one process breaks them.
import torch  # noqa: F401
from PIL import Image, PngImagePlugin  # noqa: F401

SUBJECT = """
import pytest
import torch
from torch import nn


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU())


def test_a(feature_snapshot):
    torch.manual_seed(1)
    inputs = torch.rand(1, 1, 6, 6)
    feature_snapshot(make_model(), inputs, layers=["0"])


@pytest.mark.parametrize("seed", [2, 3], ids=["two", "three-3"])
def test_p(feature_snapshot, seed):
    torch.manual_seed(seed)
    inputs = torch.rand(1, 1, 6, 6)
    feature_snapshot(make_model(), inputs, layers=["0"])
"""

SNAPSHOTS = ["test_m/test_a/0", "test_m/test_p[three-3]/0", "test_m/test_p[two]/0"]


def _snapshots(root: Path) -> list[str]:
    return sorted(str(p.parent.relative_to(root / "golden")) for p in (root / "golden").rglob("snapshot.json"))


@pytest.fixture
def project(featviz_pytester: pytest.Pytester) -> pytest.Pytester:
    featviz_pytester.makepyfile(test_m=SUBJECT)
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=3)
    assert _snapshots(featviz_pytester.path) == SNAPSHOTS
    return featviz_pytester


@pytest.mark.parametrize(
    "args", [("--count", "3"), ("--flake-finder", "--flake-runs", "2")], ids=["pytest-repeat", "flakefinder"]
)
def test_every_run_is_checked_against_the_test_s_goldens(project: pytest.Pytester, args: tuple[str, ...]) -> None:
    runs = 3 if "--count" in args else 2
    result = project.runpytest(*args)
    result.assert_outcomes(passed=3 * runs)
    result.stdout.fnmatch_lines([f"{3 * runs} snapshot(s) checked: {3 * runs} matched, 0 drifted*"])
    result.stdout.no_fnmatch_line("*stale*")
    assert _snapshots(project.path) == SNAPSHOTS  # no golden of a run's own
    update = project.runpytest("--featviz-update", *args)
    update.stdout.fnmatch_lines(["goldens: 0 created, 0 updated, * unchanged*"])
    assert _snapshots(project.path) == SNAPSHOTS


def test_a_drift_in_every_run_is_caught(project: pytest.Pytester) -> None:
    project.makepyfile(test_m=SUBJECT.replace("torch.manual_seed(1)", "torch.manual_seed(9)"))
    result = project.runpytest("--count", "2")
    result.assert_outcomes(passed=4, failed=2)
    result.stdout.fnmatch_lines(["FAILED test_m.py::test_a[[]1-2[]] - *", "FAILED test_m.py::test_a[[]2-2[]] - *"])


def test_missing_goldens_are_created_by_the_printed_command_without_the_count(project: pytest.Pytester) -> None:
    """The printed command names each test once, as it exists without --count, and creates what is missing."""
    shutil.rmtree(project.path / "golden" / "test_m" / "test_p[three-3]")
    result = project.runpytest("--count", "2")
    result.assert_outcomes(passed=4, failed=2)
    result.stdout.fnmatch_lines(["E * create it with:  pytest --featviz-create 'test_m.py::test_p[[]three-3[]]'"])
    line = next(ln for ln in result.outlines if ln.startswith("create the missing goldens with:"))
    command = shlex.split(line.partition(":  ")[2])
    assert command == ["pytest", "--featviz-create", "test_m.py::test_p[three-3]"]
    project.runpytest(*command[1:]).assert_outcomes(passed=1)
    project.runpytest("--count", "2").assert_outcomes(passed=6)


def test_stale_goldens_are_judged_under_repeats(project: pytest.Pytester) -> None:
    """Each run uses its test's goldens, so a prune under --count deletes only those of a test that is gone."""
    project.makepyfile(test_m=SUBJECT.split("@pytest.mark.parametrize")[0])
    result = project.runpytest("--count", "2", "--featviz-prune")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["2 stale golden snapshot(s) deleted*"])
    assert _snapshots(project.path) == ["test_m/test_a/0"]
