"""Repeating plugins: every run that pytest-repeat (``--count``) or pytest-flakefinder makes of a test is checked
against the test's own goldens, and the commands the plugin prints name the test as it exists without them."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
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
    # the two runs share one golden, which promote writes once: the accept line said "2 drifted test(s)" alone
    result.stdout.fnmatch_lines(
        [
            "once the report is reviewed, accept its 2 drifted test(s) (1 golden snapshot(s): repeated runs share"
            " theirs) with:  featviz promote*"
        ]
    )


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


TOGETHER = """
import os
import time
from pathlib import Path

import torch
from torch import nn


def test_a(feature_snapshot, request):
    torch.manual_seed(int(os.environ.get("FEATVIZ_TEST_SEED", "0")))
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU())
    inputs = torch.rand(1, 1, 6, 6)
    # --dist each runs every test on both workers: each run waits for the other's, so both take the snapshot at once
    run = request.node.name.replace("[", "-").replace("]", "")
    Path(f"ready-{run}-{os.environ['PYTEST_XDIST_WORKER']}").touch()
    deadline = time.monotonic() + 60
    while len(list(Path().glob(f"ready-{run}-gw*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.001)
    feature_snapshot(model, inputs, layers=["0"])
"""


def _both_workers_at_once(project: pytest.Pytester, *args: str) -> list[str]:
    """The summary lines of a run where two xdist workers take each repeat's snapshot at the same moment."""
    for ready in project.path.glob("ready-*"):
        ready.unlink()
    result = project.runpytest_subprocess("-n", "2", "--dist", "each", "--count", "3", *args)
    result.assert_outcomes(passed=6)
    assert _snapshots(project.path) == ["test_m/test_a/0"]
    return [line for line in result.outlines if "snapshot(s) c" in line or line.startswith("goldens:")]


@pytest.mark.parametrize("write", ["--featviz-create", "--featviz-update"])
def test_two_workers_writing_one_golden_at_once_write_it_once_and_count_as_a_serial_run(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, write: str
) -> None:
    # Repeats of one test share its goldens, and xdist can run two of them at once: a worker that read the golden
    # while the other wrote it failed ("an interrupted --featviz-update left ..."), both created or rewrote it, and
    # the summary counted what a serial run does not. The second writer now checks against the first's golden.
    featviz_pytester.makepyfile(test_m=TOGETHER)
    lines = _both_workers_at_once(featviz_pytester, write)
    verb = "checked" if write == "--featviz-create" else "compared"
    assert lines[0].startswith(f"6 snapshot(s) {verb}: 5 matched, 0 drifted"), lines
    assert lines[0].endswith(", 1 without a golden (created)") and lines[1].startswith("goldens: 1 created"), lines
    if write == "--featviz-update":
        monkeypatch.setenv("FEATVIZ_TEST_SEED", "5")  # another model: the golden drifts, and is rewritten once
        lines = _both_workers_at_once(featviz_pytester, write)
        assert lines[0] == "6 snapshot(s) compared: 5 matched, 1 drifted (rewritten), 0 without a golden (created)"
        assert lines[1].startswith("goldens: 0 created, 1 updated, 0 unchanged"), lines
        # a damaged golden is re-created once too: a lost sidecar, a lost picture (which leaves the sidecar as it was)
        for lost in ("snapshot.json", "0.png"):
            (featviz_pytester.path / "golden" / "test_m" / "test_a" / "0" / lost).unlink()
            lines = _both_workers_at_once(featviz_pytester, write)
            assert lines[0] == (
                "6 snapshot(s) compared: 5 matched, 0 drifted, 1 damaged (re-created), 0 without a golden (created)"
            )


COUNTED = """
from pathlib import Path

import torch
from torch import nn

COUNTER = Path(__file__).with_name("attempts.txt")


def test_c(feature_snapshot):
    attempt = int(COUNTER.read_text()) if COUNTER.exists() else 0
    COUNTER.write_text(str(attempt + 1))
    torch.manual_seed(7 if attempt < DRIFTING else 0)  # the first attempts drift
    inputs = torch.ones(1, 3, 8, 8).cumsum(-1)
    feature_snapshot(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()), inputs, layers=["0"])
"""


@pytest.mark.parametrize(("drifting", "args"), [(2, ()), (3, ("--reruns", "1"))], ids=["drifts", "reruns"])
def test_each_run_keeps_its_own_evidence_in_the_report(
    featviz_pytester: pytest.Pytester, drifting: int, args: tuple[str, ...]
) -> None:
    """Runs of one test shared one report folder: two drifting runs overwrote each other's mosaics, and a rerun
    removed another run's evidence, so the promote command under its failure found no current render."""
    featviz_pytester.makepyfile(test_c=COUNTED.replace("DRIFTING", "0"))
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=1)
    (featviz_pytester.path / "attempts.txt").unlink()
    featviz_pytester.makepyfile(test_c=COUNTED.replace("DRIFTING", str(drifting)))
    result = featviz_pytester.runpytest("--count", "2", *args)
    report = json.loads((featviz_pytester.path / "featviz-report" / "report.json").read_text())
    drifted = {s["test_id"]: s["current"] for s in report["snapshots"] if s["outcome"] == "drifted"}
    # without reruns both runs drift; with one rerun each, [1-2] drifts twice and [2-2] passes on its rerun
    assert sorted(drifted) == (
        ["test_c.py::test_c[1-2]", "test_c.py::test_c[2-2]"] if not args else ["test_c.py::test_c[1-2]"]
    )
    assert len(set(drifted.values())) == len(drifted)
    for current in drifted.values():
        assert (featviz_pytester.path / "featviz-report" / current / "snapshot.json").is_file()
    line = next(ln for ln in result.outlines if "featviz promote" in ln and "[1-2]" in ln)
    command = shlex.split(line[line.index("`featviz promote") + 1 : line.rindex("`")])
    promoted = subprocess.run(
        [sys.executable, "-m", "pytest_featviz", *command[1:]],
        cwd=featviz_pytester.path,
        capture_output=True,
        text=True,
    )
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    assert "golden/test_c/test_c/0" in promoted.stdout


def test_promote_refuses_runs_of_one_test_that_drifted_differently_unless_one_is_chosen(
    featviz_pytester: pytest.Pytester,
) -> None:
    # Both runs' current renders target the test's one golden: promote wrote both, the last silently winning.
    featviz_pytester.makepyfile(test_c=COUNTED.replace("DRIFTING", "0"))
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=1)
    golden = featviz_pytester.path / "golden" / "test_c" / "test_c" / "0"
    before = {p.name: p.read_bytes() for p in golden.iterdir()}
    (featviz_pytester.path / "attempts.txt").unlink()
    featviz_pytester.makepyfile(test_c=COUNTED.replace("7 if attempt < DRIFTING else 0", "7 + attempt"))
    featviz_pytester.runpytest("--count", "2").assert_outcomes(failed=2)

    def promote(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pytest_featviz", "promote", "featviz-report", *args],
            cwd=featviz_pytester.path,
            capture_output=True,
            text=True,
        )

    refused = promote()
    assert refused.returncode == 1, refused.stdout + refused.stderr
    for run in ("test_c.py::test_c[1-2]", "test_c.py::test_c[2-2]"):
        assert (
            f"refused snapshots[{int(run[-4]) - 1}] ('{run}', snapshot '0'): the report holds 2 different renders of"
            " the golden golden/test_c/test_c/0 (runs of one test rendered differently: is the model deterministic?);"
            " promote one with -k and its test id ('test_c.py::test_c[1-2]', 'test_c.py::test_c[2-2]')"
        ) in refused.stdout
    assert {p.name: p.read_bytes() for p in golden.iterdir()} == before  # nothing written
    chosen = promote("-k", "test_c.py::test_c[2-2]")
    assert chosen.returncode == 0, chosen.stdout + chosen.stderr
    assert "1 golden snapshot(s) written from the current render" in chosen.stdout
    assert {p.name: p.read_bytes() for p in golden.iterdir()} != before


ALTERNATING = """
from pathlib import Path

import torch
from torch import nn

COUNTER = Path(__file__).with_name("attempts.txt")


def test_ab(feature_snapshot):
    attempt = int(COUNTER.read_text()) if COUNTER.exists() else 0
    COUNTER.write_text(str(attempt + 1))
    torch.manual_seed(7 if FLAKY and attempt % 2 == 0 else 0)  # every other run drifts at 'a' and stops there
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    inputs = torch.ones(1, 3, 8, 8).cumsum(-1)
    feature_snapshot(model, inputs, layers=["0"], name="a")
    feature_snapshot(model, inputs, layers=["1"], name="b")
"""


def test_a_snapshot_another_run_checked_is_not_called_unchecked(featviz_pytester: pytest.Pytester) -> None:
    """The summary listed 'b' as not checked, once per run that stopped at 'a', though the other runs checked it."""
    featviz_pytester.makepyfile(test_ab=ALTERNATING.replace("FLAKY", "False"))
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=1)
    featviz_pytester.makepyfile(test_ab=ALTERNATING.replace("FLAKY", "True"))
    result = featviz_pytester.runpytest("--count", "4")
    result.assert_outcomes(passed=2, failed=2)
    assert "were not checked" not in result.stdout.str()
    featviz_pytester.makepyfile(test_ab=ALTERNATING.replace("FLAKY and attempt % 2 == 0", "True"))
    stopped = featviz_pytester.runpytest("--count", "2")  # every run stops at 'a': 'b' is named, once
    stopped.assert_outcomes(failed=2)
    line = "1 golden snapshot(s) of the failing tests were not checked: *: golden/test_ab/test_ab/b"
    stopped.stdout.fnmatch_lines([line])
