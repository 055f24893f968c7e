"""Tests run more than once in a session: pytest-rerunfailures (a failed attempt runs again), pytest-repeat
(``--count``), serially and with ``-n 2``. The summary counts what was written to disk, each golden once, and each
attempt's JUnit test case carries only its own attachments."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch  # noqa: F401  # loaded once here: in-process runs cannot import numpy twice

pytest.importorskip("pytest_rerunfailures", reason="needs pytest-rerunfailures (the test or dev extra)")

PARALLEL = pytest.mark.parametrize("args", [(), ("-n", "2")], ids=["serial", "xdist"])

NETS = """
import os

import torch
from torch import nn


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))


def picture():
    torch.manual_seed(1)
    x = torch.randn(1, 3, 8, 8)
    return -x if os.environ.get("FEATVIZ_TEST_DRIFT") else x
"""

# The first attempt takes its snapshot, then fails: pytest-rerunfailures runs it again (in the same process).
FLAKY = """
import pytest
from featviz_nets import net, picture

ATTEMPTS = []


@pytest.mark.flaky(reruns=1)
def test_flaky(feature_snapshot):
    ATTEMPTS.append(1)
    feature_snapshot(net(), picture(), layers=["0", "2"])
    assert len(ATTEMPTS) > 1, "the first attempt fails after its snapshot"
"""

TWO_TESTS = """
from featviz_nets import net, picture


def test_a(feature_snapshot):
    feature_snapshot(net(), picture(), layers=["0"])


def test_b(feature_snapshot):
    feature_snapshot(net(), picture(), layers=["2"])
"""


def _goldens(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "golden").rglob("*")) if p.is_file()}


@PARALLEL
def test_goldens_written_by_an_attempt_that_ran_again_are_counted(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...]
) -> None:
    """The first attempt creates (or rewrites) the golden, the rerun finds it matching: the goldens line says what
    was written to disk, the snapshot line what the last attempt compared."""
    featviz_pytester.makepyfile(featviz_nets=NETS, test_flaky=FLAKY)
    created = featviz_pytester.runpytest("--featviz-update", *args)
    assert created.parseoutcomes() == {"passed": 1, "rerun": 1}
    created.stdout.fnmatch_lines(
        [
            "1 snapshot(s) compared: 1 matched, 0 drifted, 0 without a golden (created)",
            "goldens: 1 created, 0 updated, 0 unchanged (in *golden)",
        ]
    )
    before = _goldens(featviz_pytester.path)
    assert len(before) == 3  # snapshot.json and a picture per layer
    monkeypatch.setenv("FEATVIZ_TEST_DRIFT", "1")
    updated = featviz_pytester.runpytest("--featviz-update", *args)
    assert updated.parseoutcomes() == {"passed": 1, "rerun": 1}
    updated.stdout.fnmatch_lines(["goldens: 0 created, 1 updated, 0 unchanged (in *golden)"])
    after = _goldens(featviz_pytester.path)
    assert after.keys() == before.keys() and after != before  # rewritten, as the line says
    unchanged = featviz_pytester.runpytest("--featviz-update", *args)
    assert unchanged.parseoutcomes() == {"passed": 1, "rerun": 1}
    unchanged.stdout.fnmatch_lines(["goldens: 0 created, 0 updated, 1 unchanged (in *golden)"])
    assert _goldens(featviz_pytester.path) == after


@PARALLEL
def test_repeated_tests_count_each_golden_once(featviz_pytester: pytest.Pytester, args: tuple[str, ...]) -> None:
    """pytest-repeat runs each test three times, all against one golden: two goldens, created once each (under
    xdist two workers may both create one), while the snapshot line still counts the six calls."""
    featviz_pytester.makepyfile(featviz_nets=NETS, test_two=TWO_TESTS)
    created = featviz_pytester.runpytest("--featviz-update", "--count", "3", *args)
    created.assert_outcomes(passed=6)
    created.stdout.fnmatch_lines(
        [
            "6 snapshot(s) compared: * matched, * drifted*, * without a golden (created)",
            "goldens: 2 created, 0 updated, 0 unchanged (in *golden)",
        ]
    )
    assert len([name for name in _goldens(featviz_pytester.path) if name.endswith("snapshot.json")]) == 2
    again = featviz_pytester.runpytest("--featviz-update", "--count", "3", *args)
    again.stdout.fnmatch_lines(
        [
            "6 snapshot(s) compared: 6 matched, 0 drifted, 0 without a golden (created)",
            "goldens: 0 created, 0 updated, 2 unchanged (in *golden)",
        ]
    )


@PARALLEL
def test_each_attempt_s_junit_test_case_holds_only_its_own_attachments(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...]
) -> None:
    featviz_pytester.makepyfile(featviz_nets=NETS, test_two=TWO_TESTS)
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=2)
    monkeypatch.setenv("FEATVIZ_TEST_DRIFT", "1")
    result = featviz_pytester.runpytest(
        "--reruns", "2", "test_two.py::test_a", "--junitxml=j.xml", "-o", "junit_logging=system-out", *args
    )
    assert result.parseoutcomes() == {"failed": 1, "rerun": 2}
    cases = ET.parse(featviz_pytester.path / "j.xml").findall(".//testcase[@name='test_a']")
    # pytest 7's junitxml writes one case for a test run again, of its last attempt
    assert len(cases) == (3 if pytest.version_tuple[0] >= 8 else 1)
    for case in cases:
        pictures = [
            str(Path(p.get("value") or "").resolve())
            for p in case.iter("property")
            if str(p.get("name")).startswith("featviz:0:") and str(p.get("value")).endswith(".png")
        ]
        attachments = [
            line[len("[[ATTACHMENT|") : -len("]]")]
            for line in (case.findtext("system-out") or "").splitlines()
            if line.startswith("[[ATTACHMENT|")
        ]
        assert len(pictures) == 2 and sorted(attachments) == sorted(pictures)  # the diff mosaic and current render
