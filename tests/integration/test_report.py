"""Drift reports end to end: files, failure message, terminal section, report.json, JUnit, pytest-html, GitHub
summary, stale-file removal, and serial versus ``-n 2``."""

from __future__ import annotations

import io
import json
import shutil
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch  # noqa: F401  # loaded once here: in-process runs cannot import numpy twice
from PIL import Image

from integration import needs_subtests
from pytest_featviz.config import DEFAULT_THRESHOLD

TEST_FILE = """
import os
import pytest
import torch
from torch import nn


def net():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 3, padding=1))
    if os.environ.get("FEATVIZ_TEST_DRIFT"):
        with torch.no_grad():
            model[2].weight[:2] *= -1
    return model


@pytest.mark.parametrize("tag", ["a<b>&c", "plain"])
def test_net(feature_snapshot, tag):
    torch.manual_seed(1)
    feature_snapshot(net(), torch.randn(1, 3, 7, 7), layers=["0", "2"])


def test_stable(feature_snapshot):
    torch.manual_seed(2)
    feature_snapshot(nn.Sequential(nn.Conv2d(3, 2, 1)), torch.randn(1, 3, 5, 5))
"""


@pytest.fixture
def drifted(featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A project whose goldens exist and whose layer '2' now drifts (two of four channels flipped)."""
    featviz_pytester.makepyfile(test_models=TEST_FILE)
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=3)
    monkeypatch.setenv("FEATVIZ_TEST_DRIFT", "1")
    return featviz_pytester


def test_the_featviz_section_starts_under_its_separator(drifted: pytest.Pytester) -> None:
    """With --tb=no the progress line is the last thing written before the section; its pending newline came after
    the section's separator, as a blank line."""
    lines = drifted.runpytest("--tb=no").stdout.lines
    at = next(i for i, line in enumerate(lines) if line.startswith("=") and " featviz " in line)
    assert lines[at + 1].startswith("3 snapshot(s) checked:")


def test_drift_writes_mosaics_current_render_and_report(drifted: pytest.Pytester) -> None:
    result = drifted.runpytest()
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*diff mosaic of layer '2': featviz-report/snapshots/test_models/test_net?plain?/0/diff-2.png",
            "*current render: featviz-report/snapshots/test_models/test_net?plain?/0/current (promote it*",
            "*= featviz =*",
            "3 snapshot(s) checked: 1 matched, 2 drifted (2 test(s), 2 layer(s)), 0 missing",
            "report: featviz-report/index.html",
        ]
    )
    root = drifted.path / "featviz-report"
    mosaic = root / "snapshots/test_models/test_net[plain]/0/diff-2.png"
    with Image.open(mosaic) as image:
        # two drifted channels of a 7x7 map, upscaled x10: label column + 3 panels, 2 rows
        assert image.mode == "RGB" and image.size == (336, 32 + 2 * 74 + 4)
    assert not (root / "snapshots/test_models/test_net[plain]/0/diff-0.png").exists()  # layer 0 still matches
    current = root / "snapshots/test_models/test_net[plain]/0/current"
    assert sorted(p.name for p in current.iterdir()) == ["0.png", "2.png", "snapshot.json"]
    assert not (root / "snapshots/test_models/test_stable").exists()

    data = json.loads((root / "report.json").read_text())
    assert data["summary"]["drifted"] == 2 and data["summary"]["matched"] == 1
    # equally severe (same model, same input): ties are broken by test id
    assert [s["test_id"] for s in data["snapshots"]] == [
        "test_models.py::test_net[a<b>&c]",
        "test_models.py::test_net[plain]",
    ]
    entry = next(s for s in data["snapshots"] if s["test_id"].endswith("[plain]"))
    assert entry["first_drifted"] == "2" and entry["golden_dir"] == "golden/test_models/test_net[plain]/0"
    layer = entry["layers"][1]
    assert layer["layer"] == "2" and layer["shape"] == [1, 4, 7, 7] and layer["threshold"] == DEFAULT_THRESHOLD
    assert layer["mosaic"] == "snapshots/test_models/test_net[plain]/0/diff-2.png"
    assert len(layer["drifted_channels"]) == 2 and layer["min_ssim"] < DEFAULT_THRESHOLD
    page = (root / "index.html").read_text()
    assert "test_net[a&lt;b&gt;&amp;c]" in page and "a<b>" not in page


def test_report_all_covers_matching_snapshots(drifted: pytest.Pytester) -> None:
    drifted.runpytest("--featviz-report-all", "-k", "stable").assert_outcomes(passed=1, deselected=2)
    data = json.loads((drifted.path / "featviz-report/report.json").read_text())
    assert [(s["test_id"], s["outcome"]) for s in data["snapshots"]] == [("test_models.py::test_stable", "matched")]
    assert (drifted.path / "featviz-report/snapshots/test_models/test_stable/0").is_dir()


def test_report_all_covers_the_snapshots_an_update_rewrote_with_their_mosaics_but_nothing_to_promote(
    drifted: pytest.Pytester,
) -> None:
    """--featviz-update --featviz-report-all counted the rewritten snapshots in the summary and left them out of the
    report: the ones the update tells you to review were the ones you could not see."""
    from pytest_featviz.cli import main

    result = drifted.runpytest("--featviz-update", "--featviz-report-all", "--junitxml=junit.xml")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["report: featviz-report/index.html"])
    root = drifted.path / "featviz-report"
    data = json.loads((root / "report.json").read_text())
    assert (data["summary"]["updated"], data["summary"]["matched"]) == (2, 1)
    assert [(s["test_id"], s["outcome"]) for s in data["snapshots"]] == [
        ("test_models.py::test_net[a<b>&c]", "updated"),
        ("test_models.py::test_net[plain]", "updated"),
        ("test_models.py::test_stable", "matched"),
    ]
    entry = data["snapshots"][1]
    folder = "snapshots/test_models/test_net[plain]/0"
    # the golden it replaced against the current render, and the current pictures; no render to promote
    assert entry["first_drifted"] == "2" and entry["current"] is None
    layers = {layer["layer"]: layer for layer in entry["layers"]}
    assert layers["2"]["mosaic"] == f"{folder}/diff-2.png" and layers["2"]["current"] == f"{folder}/current/2.png"
    with Image.open(root / folder / "diff-2.png") as image:  # as for a drift: the two drifted channels
        assert image.size == (336, 32 + 2 * 74 + 4)
    assert sorted(p.name for p in (root / folder / "current").iterdir()) == ["0.png", "2.png"]
    page = (root / "index.html").read_text()
    assert f'<img src="{folder.replace("[", "%5B").replace("]", "%5D")}/diff-2.png"' in page
    assert "updated by this run: golden <code>golden/test_models/test_net[plain]/0/</code>" in page
    assert "3 snapshot(s) checked: 1 matched, 0 drifted" in page and ", 2 updated" in page
    case = ET.parse(drifted.path / "junit.xml").find(".//testcase[@name='test_net[plain]']")
    assert case is not None
    properties = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert properties["featviz:0:outcome"] == "updated"
    assert Path(properties["featviz:0:mosaic:2"] or "").name == "diff-2.png"
    # the update wrote the goldens already: promote has nothing to take from this report, and writes nothing
    golden = drifted.path / "golden/test_models/test_net[plain]/0"
    before = {p.name: p.read_bytes() for p in golden.iterdir()}
    out = io.StringIO()
    assert main(["promote", str(root)], out=out) == 1
    assert "nothing promoted" in out.getvalue()
    assert {p.name: p.read_bytes() for p in golden.iterdir()} == before
    out = io.StringIO()
    assert main(["promote", str(root), "-k", "test_net[plain]"], out=out) == 1
    assert out.getvalue().splitlines()[-1] == (
        "  the run that wrote it created or updated the goldens of 1 such test(s) itself"
        " ('test_models.py::test_net[plain]'): review those in git"
    )


def test_report_all_covers_the_snapshots_a_create_run_created_with_their_current_pictures(
    featviz_pytester: pytest.Pytester,
) -> None:
    featviz_pytester.makepyfile(test_models=TEST_FILE)
    result = featviz_pytester.runpytest("--featviz-create", "--featviz-report-all", "-k", "plain or stable")
    result.assert_outcomes(passed=2, deselected=1)
    root = featviz_pytester.path / "featviz-report"
    data = json.loads((root / "report.json").read_text())
    assert data["summary"]["created"] == 2
    assert [(s["test_id"], s["outcome"], s["current"]) for s in data["snapshots"]] == [
        ("test_models.py::test_net[plain]", "created", None),
        ("test_models.py::test_stable", "created", None),
    ]
    folder = "snapshots/test_models/test_net%5Bplain%5D/0/current"
    layers = data["snapshots"][0]["layers"]
    assert [(layer["layer"], layer["mosaic"], layer["current"]) for layer in layers] == [
        ("0", None, "snapshots/test_models/test_net[plain]/0/current/0.png"),
        ("2", None, "snapshots/test_models/test_net[plain]/0/current/2.png"),
    ]
    # the pictures just written into the golden directory, shown on the page
    golden = featviz_pytester.path / "golden/test_models/test_net[plain]/0"
    assert (root / layers[1]["current"]).read_bytes() == (golden / "2.png").read_bytes()
    page = (root / "index.html").read_text()
    assert f'<img src="{folder}/0.png" alt="current render: layer 0">' in page
    assert "created by this run: golden <code>golden/test_models/test_net[plain]/0/</code>" in page


def test_a_report_far_up_the_tree_is_named_by_its_absolute_path(drifted: pytest.Pytester) -> None:
    # a report directory in the home folder (``featviz_report_dir = ~/reports``) read "../../../../root/reports/..."
    far = Path(tempfile.mkdtemp(prefix="fvrep", dir="/tmp"))
    try:
        result = drifted.runpytest(f"--featviz-report-dir={far}")
        result.assert_outcomes(passed=1, failed=2)
        result.stdout.fnmatch_lines([f"report: {far}/index.html"])
    finally:
        shutil.rmtree(far)


def test_stale_report_is_removed_and_foreign_files_kept(
    drifted: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    drifted.runpytest().assert_outcomes(passed=1, failed=2)
    root = drifted.path / "featviz-report"
    (root / "README.txt").write_text("mine")
    monkeypatch.delenv("FEATVIZ_TEST_DRIFT")
    result = drifted.runpytest()
    result.assert_outcomes(passed=3)
    result.stdout.no_fnmatch_line("report: *")
    assert sorted(p.name for p in root.iterdir()) == ["README.txt"]


def test_a_report_dir_holding_someone_elses_index_is_never_overwritten_and_ignores_itself_in_git(
    drifted: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = drifted.path / "site"
    site.mkdir()
    (site / "index.html").write_text("our docs")
    result = drifted.runpytest("--featviz-report-dir", "site")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(
        ["featviz: could not write the report in site: *a file pytest-featviz did not write is in the way*index.html*"]
    )
    assert (site / "index.html").read_text() == "our docs"
    # no half report: the drifted tests wrote their mosaics and current renders there, and printed a promote command
    # that failed ("no report.json"); each message says the report could not be written
    assert sorted(p.name for p in site.iterdir()) == ["index.html"]
    output = result.stdout.str()
    assert "featviz promote" not in output
    assert output.count("(featviz could not write the report: [Errno 17] a file pytest-featviz did not write") == 2
    monkeypatch.delenv("FEATVIZ_TEST_DRIFT")
    drifted.runpytest("--featviz-report-dir", "site").assert_outcomes(passed=3)  # clears what it wrote, only that
    assert sorted(p.name for p in site.iterdir()) == ["index.html"] and (site / "index.html").read_text() == "our docs"

    monkeypatch.setenv("FEATVIZ_TEST_DRIFT", "1")
    drifted.runpytest().assert_outcomes(passed=1, failed=2)
    ignore = drifted.path / "featviz-report" / ".gitignore"
    assert ignore.read_text().splitlines()[-1] == "*"  # like .pytest_cache: git add -A leaves the report out


def test_a_report_dir_holding_other_files_gets_no_gitignore(drifted: pytest.Pytester) -> None:
    """``--featviz-report-dir tests``: a `.gitignore` of `*` there hid the test files from `git add -A`."""
    (drifted.path / "tests").mkdir()
    (drifted.path / "tests" / "test_new.py").write_text("def test_new():\n    pass\n")
    drifted.runpytest("test_models.py", "--featviz-report-dir", "tests").assert_outcomes(passed=1, failed=2)
    assert (drifted.path / "tests" / "index.html").is_file()
    assert not (drifted.path / "tests" / ".gitignore").exists()


def test_a_run_of_no_test_leaves_the_last_report(drifted: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--collect-only`` or ``--fixtures`` after a drift deleted its report; only a run of tests replaces it."""
    drifted.runpytest().assert_outcomes(passed=1, failed=2)
    index = drifted.path / "featviz-report" / "index.html"
    nothing = ["-k", "nothing_matches"]
    for args in (["--collect-only"], ["--fixtures"], ["--setup-plan"], nothing, [*nothing, "-n", "2"]):
        drifted.runpytest(*args)
        assert index.is_file(), args
    (drifted.path / "test_broken.py").write_text("import nothing_by_this_name\n")
    drifted.runpytest().assert_outcomes(errors=1)  # a collection error: no test runs
    assert index.is_file()
    (drifted.path / "test_broken.py").unlink()
    drifted.runpytest("-k", "stable").assert_outcomes(passed=1, deselected=2)
    assert not index.exists()
    drifted.runpytest().assert_outcomes(passed=1, failed=2)
    assert index.is_file()
    drifted.runpytest("-n", "2", "-k", "stable").assert_outcomes(passed=1)  # an xdist controller collects nothing
    assert not index.exists()
    drifted.runpytest().assert_outcomes(passed=1, failed=2)
    # xdist loaded by its module name, as with PYTEST_DISABLE_PLUGIN_AUTOLOAD (no plugin named "xdist" then)
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    loaded = ["-p", "xdist.plugin", "-p", "pytest_featviz.plugin"]
    drifted.runpytest(*loaded, "-n", "2", "-k", "stable").assert_outcomes(passed=1)
    assert not index.exists()


def test_a_damaged_manifest_is_said_not_an_internal_error(drifted: pytest.Pytester) -> None:
    drifted.runpytest().assert_outcomes(passed=1, failed=2)
    (drifted.path / "featviz-report" / ".featviz-manifest").write_bytes(b"index.html\nsnap\x00shots/x\n\xff\xfe\n")
    result = drifted.runpytest("-k", "stable")
    result.assert_outcomes(passed=1, deselected=2)
    assert not (drifted.path / "featviz-report" / "index.html").exists()  # the lines it could read were cleared


XFAIL = """
import os

import pytest
import torch
from torch import nn


@pytest.mark.xfail(reason="known drift", strict=True)
def test_known(feature_snapshot):
    torch.manual_seed(0)
    scale = 2.0 if os.environ.get("FEATVIZ_TEST_DRIFT") else 1.0
    feature_snapshot(nn.Sequential(nn.Conv2d(3, 2, 1)), torch.ones(1, 3, 5, 5).cumsum(-2), name="steady")
    feature_snapshot(nn.Sequential(nn.Conv2d(3, 2, 1)), scale * torch.ones(1, 3, 5, 5).cumsum(-1), name="moved")
"""


def test_an_expected_drift_of_an_xfail_test_is_said_to_be_expected(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pytest said "1 xfailed"; the summary, the report and the job summary said only "drifted"."""
    featviz_pytester.makepyfile(test_known=XFAIL)
    featviz_pytester.runpytest("--featviz-update", "--runxfail").assert_outcomes(passed=1)
    monkeypatch.setenv("FEATVIZ_TEST_DRIFT", "1")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(featviz_pytester.path / "summary.md"))
    result = featviz_pytester.runpytest("--featviz-report-all")
    result.assert_outcomes(xfailed=1)
    result.stdout.fnmatch_lines(["*1 drifted (1 test(s), 1 layer(s); 1 in xfail tests, as expected)*"])
    data = json.loads((featviz_pytester.path / "featviz-report" / "report.json").read_text())
    assert {s["snapshot"]: s["xfail"] for s in data["snapshots"]} == {"moved": True, "steady": False}
    assert data["summary"]["drifted_xfail"] == 1
    summary = (featviz_pytester.path / "summary.md").read_text()
    assert "| drifted (xfail) |" in summary and "1 in xfail tests, as expected" in summary
    page = (featviz_pytester.path / "featviz-report" / "index.html").read_text()
    assert "drifted (xfail)" in page and "1 in xfail tests, as expected" in page


CAUGHT = """
import os
import pytest
import torch
from torch import nn
from pytest_featviz import FeatureDriftError


def model():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU(), nn.Conv2d(2, 2, 1))
    return net


def test_a_broken_model_is_caught(feature_snapshot):
    net = model()
    if not os.environ.get("MAKE_GOLDEN"):
        with torch.no_grad():
            net[0].weight.mul_(-1.2)
        with pytest.raises(FeatureDriftError) as raised:
            feature_snapshot(net, torch.ones(1, 3, 5, 5).cumsum(-1), layers=["0"])
        assert raised.value.result.first_drifted == "0"
    else:
        feature_snapshot(net, torch.ones(1, 3, 5, 5).cumsum(-1), layers=["0"])
        feature_snapshot(net, torch.ones(1, 3, 5, 5), layers=["2"], name="only-then")
    feature_snapshot(model(), torch.ones(1, 3, 5, 5), layers=["2"], name="later")


def test_caught_then_failed_otherwise(feature_snapshot):
    net = model()
    if not os.environ.get("MAKE_GOLDEN"):
        with torch.no_grad():
            net[0].weight.mul_(-1.2)
        with pytest.raises(FeatureDriftError):
            feature_snapshot(net, torch.ones(1, 3, 5, 5).cumsum(-1), layers=["0"])
        assert os.environ.get("FIXED"), "another check of this test failed"
    else:
        feature_snapshot(net, torch.ones(1, 3, 5, 5).cumsum(-1), layers=["0"])


def test_one_caught_one_not(feature_snapshot):
    net = model()
    if os.environ.get("MAKE_GOLDEN"):
        feature_snapshot(net, torch.ones(1, 3, 5, 5).cumsum(-1), layers=["0"], name="caught")
    else:
        with torch.no_grad():
            net[0].weight.mul_(-1.2)
        with pytest.raises(FeatureDriftError):
            feature_snapshot(net, torch.ones(1, 3, 5, 5).cumsum(-1), layers=["0"], name="caught")
    feature_snapshot(net, torch.ones(1, 3, 5, 5).cumsum(-1), layers=["0"], name="failed")
"""


EXPECTING = """
import os
import pytest
import torch
from torch import nn
from pytest_featviz import FeatureDriftError

X = torch.ones(1, 3, 5, 5).cumsum(-1)


def net():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU())
    if os.environ.get("REGRESSION"):
        with torch.no_grad():
            model[0].bias.add_(1.0)
    return model


@pytest.mark.xfail(reason="known regression: the golden holds the right maps")
def test_known_regression(feature_snapshot):
    feature_snapshot(net(), X, layers=["1"])
    assert not os.environ.get("REGRESSION")


def test_detects_the_regression(feature_snapshot):
    if os.environ.get("REGRESSION"):
        with pytest.raises(FeatureDriftError):
            feature_snapshot(net(), X, layers=["1"])
    else:
        feature_snapshot(net(), X, layers=["1"])


def test_accepted(feature_snapshot):
    feature_snapshot(net(), X, layers=["0"])
"""


@pytest.mark.parametrize("args", [(), ("-n", "2")], ids=["serial", "xdist"])
def test_an_update_that_rewrote_goldens_a_test_may_expect_to_drift_says_how_to_put_them_back(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...]
) -> None:
    """``--featviz-update`` rewrote the golden of a known regression kept as xfail (it then passed unexpectedly) and
    of a test that checks the regression is caught (it then failed: DID NOT RAISE), and called both ordinary drifts:
    the way back is printed for the goldens of such tests, and for no other."""
    featviz_pytester.makepyfile(test_expect=EXPECTING)
    featviz_pytester.runpytest("--featviz-update", *args).assert_outcomes(passed=2, xpassed=1)
    monkeypatch.setenv("REGRESSION", "1")
    # the golden of the known regression holds the right maps, the regression is caught, and test_accepted drifts
    featviz_pytester.runpytest(*args).assert_outcomes(passed=1, failed=1, xfailed=1)
    result = featviz_pytester.runpytest("--featviz-update", *args)
    result.assert_outcomes(passed=1, failed=1, xfailed=1)
    result.stdout.fnmatch_lines(
        [
            "3 drifted golden snapshot(s) rewritten (review their pictures in the diff before committing): *",
            "  2 of them in tests that failed or are marked xfail: if a golden held a drift its test expects (an"
            " xfail, a pytest.raises(FeatureDriftError)), put it back: git checkout --"
            " golden/test_expect/test_detects_the_regression/0 golden/test_expect/test_known_regression/0",
        ]
    )


@pytest.mark.parametrize("args", [(), ("-n", "2")], ids=["serial", "xdist"])
def test_a_drift_a_test_caught_is_expected_not_offered_for_acceptance(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...]
) -> None:
    # a test that checks a change is detected (pytest.raises(FeatureDriftError)) passed, yet the summary counted a
    # drift to accept, listed its later golden as not checked, and its promote command broke the test
    from pytest_featviz.cli import main

    featviz_pytester.makepyfile(test_neg=CAUGHT)
    monkeypatch.setenv("MAKE_GOLDEN", "1")
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=3)
    monkeypatch.delenv("MAKE_GOLDEN")
    goldens = featviz_pytester.path / "golden" / "test_neg"
    before = {p: p.read_bytes() for p in sorted(goldens.rglob("*.png"))}
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(featviz_pytester.path / "summary.md"))
    result = featviz_pytester.runpytest(*args)
    result.assert_outcomes(passed=1, failed=2)
    # a caught drift stays caught when its test fails for another reason (an assert, another snapshot's drift)
    result.stdout.fnmatch_lines(["*4 drifted (3 test(s), 4 layer(s); 3 caught by their tests), 0 missing"])
    # the golden it did not check this time is not "not checked" of a failing test (it is a stale one)
    assert "were not checked" not in result.stdout.str()
    result.stdout.fnmatch_lines(["once the report is reviewed, accept its 1 drifted test(s) with:  featviz promote*"])
    data = json.loads((featviz_pytester.path / "featviz-report" / "report.json").read_text())
    caught = {(s["test_id"].split("::")[1], s["snapshot"]): s["caught"] for s in data["snapshots"]}
    assert caught == {
        ("test_a_broken_model_is_caught", "0"): True,
        ("test_caught_then_failed_otherwise", "0"): True,
        ("test_one_caught_one_not", "caught"): True,
        ("test_one_caught_one_not", "failed"): False,
    }
    assert data["summary"]["drifted_caught"] == 3
    assert "| drifted (caught) |" in (featviz_pytester.path / "summary.md").read_text()
    assert "drifted (caught)" in (featviz_pytester.path / "featviz-report" / "index.html").read_text()
    monkeypatch.chdir(featviz_pytester.path)
    out = io.StringIO()
    assert main(["promote"], out=out) == 0  # only the drift no test expected
    assert out.getvalue().startswith("promoted golden/test_neg/test_one_caught_one_not/failed\n")
    after = {p: p.read_bytes() for p in before}
    assert [p.parent.name for p in before if after[p] != before[p]] == ["failed"]
    monkeypatch.setenv("FIXED", "1")
    featviz_pytester.runpytest(*args).assert_outcomes(passed=3)


COLLECTED = """
import os
import unittest
import pytest
import torch
from torch import nn
from pytest_featviz import FeatureDriftError

X = torch.ones(1, 3, 5, 5).cumsum(-1)


def model():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU())
    if os.environ.get("BREAK"):
        with torch.no_grad():
            net[0].weight.mul_(-1.2)
    return net


def test_messages(feature_snapshot):
    errors = []
    for name in ("a", "b"):
        try:
            feature_snapshot(model(), X, layers=["0"], name=name)
        except FeatureDriftError as error:
            errors.append(str(error))
    assert not errors, "\\n".join(errors)


def test_group(feature_snapshot):
    errors = []
    try:
        feature_snapshot(model(), X, layers=["0"])
    except FeatureDriftError as error:
        errors.append(error)
    if errors:
        raise ExceptionGroup("drifts", errors)


class TestCase(unittest.TestCase):
    @unittest.expectedFailure
    def test_known(self):
        self.snap(model(), X, layers=["1"])


@pytest.fixture(autouse=True)
def _snap(request, feature_snapshot):
    if request.instance is not None:
        request.instance.snap = feature_snapshot


def doctested():
    \"\"\"
    >>> _ = getfixture("feature_snapshot")(model(), X, layers=["0"])
    \"\"\"
"""


def test_a_drift_that_failed_its_test_through_another_error_is_not_counted_as_caught(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # drifts a test collected and failed with (their messages asserted on, an ExceptionGroup), a doctest's, and a
    # unittest expectedFailure's were labelled "caught by their tests": no promote line, and promote refused them
    featviz_pytester.makepyfile(test_collected=COLLECTED)
    featviz_pytester.runpytest("--featviz-update", "--doctest-modules").assert_outcomes(passed=3, failed=1)
    monkeypatch.setenv("BREAK", "1")
    result = featviz_pytester.runpytest("--doctest-modules")
    result.assert_outcomes(failed=3, xfailed=1)
    result.stdout.fnmatch_lines(
        [
            "*5 drifted (4 test(s), 5 layer(s); 1 in xfail tests, as expected), 0 missing",
            "once the report is reviewed, accept its 3 drifted test(s) with:  featviz promote*",
        ]
    )
    data = json.loads((featviz_pytester.path / "featviz-report" / "report.json").read_text())
    labels = {(s["test_id"].split("::")[-1], s["snapshot"]): (s["xfail"], s["caught"]) for s in data["snapshots"]}
    assert labels == {
        ("test_messages", "a"): (False, False),
        ("test_messages", "b"): (False, False),
        ("test_group", "0"): (False, False),
        ("test_known", "0"): (True, False),
        ("test_collected.doctested", "0"): (False, False),
    }


RERUN = """
import os
from pathlib import Path

import torch
from torch import nn


def test_moves(feature_snapshot):
    attempt = Path("attempt")
    attempt.write_text(str(int(attempt.read_text()) + 1 if attempt.exists() else 1))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 2, 1))
    first = attempt.read_text() == "1"
    drift = 2.0 if os.environ.get("FEATVIZ_TEST_DRIFT") else 1.0
    if os.environ.get("FEATVIZ_TEST_FIRST_ONLY") and not first:
        drift = 1.0
    feature_snapshot(model, (1.0 if first else drift) * torch.ones(1, 3, 5, 5).cumsum(-1), name="a")
    feature_snapshot(model, drift * torch.ones(1, 3, 5, 5).cumsum(-2), name="b")
"""

# What pytest-rerunfailures does, in short: run the test's protocol once more before the logged one.
RERUN_CONFTEST = """
from _pytest.runner import runtestprotocol


def pytest_runtest_protocol(item, nextitem):
    if item.config.getoption("featviz_update"):
        return None
    runtestprotocol(item, nextitem=nextitem, log=False)
    return None
"""


def test_a_test_run_again_leaves_only_its_last_attempt_s_files(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first attempt drifts at 'b'; the second drifts at 'a' and never reaches 'b': the first attempt's files
    for 'b' stayed in the report, listed nowhere."""
    featviz_pytester.makepyfile(test_rerun=RERUN)
    featviz_pytester.makeconftest(RERUN_CONFTEST)
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=1)
    (featviz_pytester.path / "attempt").unlink()
    monkeypatch.setenv("FEATVIZ_TEST_DRIFT", "1")
    featviz_pytester.runpytest().assert_outcomes(failed=1)
    snapshots = featviz_pytester.path / "featviz-report" / "snapshots" / "test_rerun" / "test_moves"
    assert (featviz_pytester.path / "attempt").read_text() == "2"
    assert sorted(p.name for p in snapshots.iterdir()) == ["a"]
    (featviz_pytester.path / "attempt").unlink()
    monkeypatch.setenv("FEATVIZ_TEST_FIRST_ONLY", "1")  # the second attempt passes: nothing is left behind
    featviz_pytester.runpytest().assert_outcomes(passed=1)
    assert not (featviz_pytester.path / "featviz-report").exists()


def test_report_dir_option_and_ini(drifted: pytest.Pytester) -> None:
    drifted.runpytest("--featviz-report-dir", "out/cli", "-k", "plain").assert_outcomes(failed=1, deselected=2)
    assert (drifted.path / "out/cli/index.html").is_file() and not (drifted.path / "featviz-report").exists()
    drifted.makeini("[pytest]\naddopts = -p no:cacheprovider\nfeatviz_report_dir = out/ini\n")
    drifted.runpytest("-k", "plain").assert_outcomes(failed=1, deselected=2)
    assert (drifted.path / "out/ini/report.json").is_file()


@pytest.mark.parametrize("args", [(), ("-n", "2")], ids=["serial", "xdist"])
def test_pytest_does_not_collect_in_the_report_dir(drifted: pytest.Pytester, args: tuple[str, ...]) -> None:
    """pytest walked the report directory while collecting; under xdist the controller clears the last report as soon
    as one worker has collected, and pytest 7 failed the other worker's collection on a picture it had just listed
    ("... is not a file"), then xdist on "Different tests were collected"."""
    drifted.runpytest(*args).assert_outcomes(passed=1, failed=2)
    planted = drifted.path / "featviz-report" / "snapshots" / "test_planted.py"
    planted.write_text("def test_planted():\n    pass\n")
    result = drifted.runpytest("--collect-only", "-q", *args)
    assert "test_planted" not in result.stdout.str() and "3 tests collected" in result.stdout.str()
    # named on the command line, it is collected as any directory is
    for named in (str(planted), "featviz-report"):
        assert "test_planted.py::test_planted" in drifted.runpytest("--collect-only", "-q", named).stdout.str()
    # a report directory that holds more than the report (--featviz-report-dir tests) is walked as usual
    (drifted.path / "featviz-report" / "test_beside.py").write_text("def test_beside():\n    pass\n")
    walked = drifted.runpytest("--collect-only", "-q", *args).stdout.str()
    assert "test_beside.py::test_beside" in walked and "test_planted.py::test_planted" in walked


def test_a_report_dir_that_cannot_be_written_is_said_and_the_tests_keep_their_outcomes(
    drifted: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A file where the report directory should be, put there once the session started (a file there before it is a
    # usage error at start-up): clearing the old report, the per-test mosaics, the session report and the step
    # summary all fail, as they would on a full disk or a read-only checkout, and none of them may stop the session.
    drifted.makeconftest(
        """
import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session):
    (session.config.rootpath / "featviz-report").write_text("in the way")
"""
    )
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(drifted.path / "featviz-report" / "summary.md"))
    result = drifted.runpytest("--featviz-report-all")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*(featviz could not write the report: *Not a directory*",
            "3 snapshot(s) checked: 1 matched, 2 drifted (2 test(s), 2 layer(s)), 0 missing",
            "featviz: could not remove the previous report in *featviz-report: *Not a directory*",
            "featviz: could not write the report in *featviz-report: *Not a directory*",
        ]
    )
    result.stdout.no_fnmatch_line("*INTERNALERROR*")
    result.stdout.no_fnmatch_line("report: *")
    assert (drifted.path / "featviz-report").read_text() == "in the way"


def test_a_step_summary_that_cannot_be_written_is_said(
    drifted: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(drifted.path / "summary.md" / "nested"))
    (drifted.path / "summary.md").write_text("a file, not a folder")
    result = drifted.runpytest()
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(
        ["report: featviz-report/index.html", "featviz: could not append to the GitHub step summary *Not a directory*"]
    )
    assert (drifted.path / "featviz-report/index.html").is_file()


def test_the_step_summary_is_written_where_the_report_cannot_be(
    drifted: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # another tool's page where the report goes: the report is refused, the job summary's table needs none of it
    (drifted.path / "featviz-report").mkdir()
    (drifted.path / "featviz-report" / "index.html").write_text("<html>coverage</html>")
    summary = drifted.path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = drifted.runpytest()
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(["featviz: could not write the report in featviz-report: *"])
    text = summary.read_text()
    assert "| `test_models.py::test_net[plain]` | `0` | drifted | `2` | 1 |" in text
    assert "No diff mosaics: featviz could not write the report in featviz-report: " in text
    assert "index.html" not in text.split("No diff mosaics")[0]  # no page named that was not written


def test_a_report_of_a_run_that_stopped_early_says_so(
    drifted: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # after Ctrl-C (a cancelled CI job) or -x the report read as complete: "2 checked, 2 drifted", 55 never ran
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(drifted.path / "summary.md"))
    drifted.runpytest("-x").assert_outcomes(failed=1)
    data = json.loads((drifted.path / "featviz-report" / "report.json").read_text())
    assert data["run"]["stopped"] is True
    said = "the run stopped before its end (Ctrl-C, a cancelled job, -x): tests after that did not run; torch "
    assert said in (drifted.path / "featviz-report" / "index.html").read_text()
    assert said in (drifted.path / "summary.md").read_text()
    drifted.runpytest().assert_outcomes(passed=1, failed=2)
    assert "stopped" not in json.loads((drifted.path / "featviz-report" / "report.json").read_text())["run"]
    # -x whose failure is the last test's: every test ran, and -x had set pytest's stop flag all the same
    drifted.runpytest("-x", "-k", "plain").assert_outcomes(failed=1, deselected=2)
    assert "stopped" not in json.loads((drifted.path / "featviz-report" / "report.json").read_text())["run"]


def test_junitxml_properties_and_attachments(drifted: pytest.Pytester) -> None:
    drifted.runpytest("--junitxml=junit.xml", "-o", "junit_logging=system-out", "-k", "plain")
    case = ET.parse(drifted.path / "junit.xml").find(".//testcase[@name='test_net[plain]']")
    assert case is not None
    properties = {p.get("name"): p.get("value") for p in case.iter("property")}
    mosaic = properties["featviz:0:mosaic:2"]
    assert mosaic is not None and Path(mosaic).name == "diff-2.png" and Path(mosaic).is_file()
    assert properties["featviz:0:outcome"] == "drifted" and properties["featviz:0:first_drifted"] == "2"
    assert float(properties["featviz:0:min_ssim"] or "nan") < 0.99
    out = case.findtext("system-out") or ""
    assert f"[[ATTACHMENT|{Path(mosaic).resolve()}]]" in out


def test_github_step_summary(drifted: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    summary = drifted.path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    drifted.runpytest().assert_outcomes(passed=1, failed=2)
    text = summary.read_text()
    assert text.startswith("earlier step\n### featviz")
    assert "| `test_models.py::test_net[plain]` | `0` | drifted | `2` | 1 |" in text
    assert "featviz-report/index.html" in text and "![" not in text


def test_pytest_html_gets_the_mosaic(drifted: pytest.Pytester) -> None:
    drifted.runpytest("--html=page.html", "--self-contained-html", "-k", "plain").assert_outcomes(
        failed=1, deselected=2
    )
    page = (drifted.path / "page.html").read_text()
    assert "featviz 0 mosaic:2" in page and "data:image/png;base64," in page


def test_serial_and_xdist_write_the_same_report(drifted: pytest.Pytester) -> None:
    drifted.runpytest().assert_outcomes(passed=1, failed=2)
    serial = (drifted.path / "featviz-report/report.json").read_text()
    result = drifted.runpytest("-n", "2")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(["report: featviz-report/index.html"])
    assert (drifted.path / "featviz-report/report.json").read_text() == serial
    manifest = (drifted.path / "featviz-report" / ".featviz-manifest").read_text().split()
    assert "index.html" in manifest and "snapshots/test_models/test_net[plain]/0/diff-2.png" in manifest


SUBTESTS = """
import os

import torch
from torch import nn


def test_sub(feature_snapshot, subtests):
    torch.manual_seed(int(os.environ.get("SEED", "0")))
    model = nn.Sequential(nn.Conv2d(1, 2, 3))
    for name in ("s0", "s1"):
        with subtests.test(msg=name):
            feature_snapshot(model, torch.ones(1, 1, 8, 8), layers=["0"], name=name)
"""


@needs_subtests
def test_pytest_html_shows_the_mosaics_of_snapshots_in_subtests(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    featviz_pytester.makepyfile(test_sub=SUBTESTS)
    featviz_pytester.runpytest("--featviz-update")
    monkeypatch.setenv("SEED", "3")
    featviz_pytester.runpytest("--html=page.html", "--self-contained-html")
    page = (featviz_pytester.path / "page.html").read_text()
    assert "featviz s0 mosaic:0" in page and "featviz s1 mosaic:0" in page


DEEP = """
import os
import torch
from torch import nn


def test_deep(feature_snapshot):
    torch.manual_seed(int(os.environ.get("FEATVIZ_TEST_DRIFT", "0")))  # other weights everywhere
    model = nn.Sequential(*(nn.Conv2d(2, 2, 3, padding=1) for _ in range(40)))
    feature_snapshot(model, torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(1)), layers="*")
"""


def test_a_drift_through_a_deep_model_is_described_in_a_bounded_message(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # layers="*" on a 100-block model all drifting gave a 1000-line message, every layer described and each
    # mosaic listed
    featviz_pytester.makepyfile(test_deep=DEEP)
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=1)
    monkeypatch.setenv("FEATVIZ_TEST_DRIFT", "1")
    result = featviz_pytester.runpytest()
    result.assert_outcomes(failed=1)
    text = result.stdout.str()
    described = [line for line in result.outlines if line.startswith("E         ") and " channels drifted: " in line]
    assert len(described) == 10
    drifted = json.loads((featviz_pytester.path / "featviz-report" / "report.json").read_text())["summary"]
    assert drifted["drifted_layers"] == 40  # every one drifted; the message describes ten and names the rest
    result.stdout.fnmatch_lines(
        [
            "E         ... and 30 more drifted layer(s), in the report: '10', '11', * '29' and 10 more",
            "E       diff mosaics of 30 more layer(s): in featviz-report/snapshots/test_deep/test_deep/0",
        ]
    )
    assert text.count("diff mosaic of layer ") == 10
    assert len(list((featviz_pytester.path / "featviz-report" / "snapshots").rglob("diff-*.png"))) == 40
