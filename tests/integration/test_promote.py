"""`featviz promote`: a reviewer accepts a drift from the report without re-running the model."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch  # noqa: F401  # loaded once here: in-process runs cannot import numpy twice

import pytest_featviz.snapshot  # noqa: F401  # loaded once here, so that the inner runs see the patched environment
from pytest_featviz import environment
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
    assert "1 golden snapshot(s) written from the current render" in out.getvalue()
    assert (golden / "0.png").read_bytes() != before
    assert not any(elsewhere.iterdir())  # nothing written where it ran
    monkeypatch.chdir(featviz_pytester.path)
    featviz_pytester.runpytest().assert_outcomes(passed=1)


TWO_LAYERS = """
import os
import torch
from torch import nn


def test_net(feature_snapshot):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
    if os.environ.get("FEATVIZ_TEST_DRIFT"):
        with torch.no_grad():
            model[0].weight.add_(1e-5)  # moves layer 0 a little, well within its tolerances
            model[2].weight[:2] *= -1  # drifts layer 2
    torch.manual_seed(1)
    feature_snapshot(model, torch.randn(1, 3, 9, 9), layers=["0", "2"])
"""


def _files(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def test_promote_writes_what_an_update_writes(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An update rewrites the drifted layers only; the report's current render (and so promote, or copying it) held
    every layer re-rendered, so the layers that still matched changed bytes for nothing, in the sidecar's numbers."""
    featviz_pytester.makepyfile(test_models=TWO_LAYERS)
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=1)
    golden = featviz_pytester.path / "golden" / "test_models" / "test_net" / "0"
    made = _files(golden)
    monkeypatch.setenv("FEATVIZ_TEST_DRIFT", "1")
    drifted = featviz_pytester.runpytest()
    drifted.assert_outcomes(failed=1)
    drifted.stdout.fnmatch_lines(["*drift starts at layer '2'*"])
    current = _files(featviz_pytester.path / "featviz-report/snapshots/test_models/test_net/0/current")
    assert main(["promote", "featviz-report"], out=io.StringIO()) == 0
    promoted = _files(golden)
    for name, data in made.items():
        golden.joinpath(name).write_bytes(data)
    featviz_pytester.runpytest("--featviz-update", "--featviz-report-all").assert_outcomes(passed=1)
    updated = _files(golden)
    assert promoted == updated == current  # and so is copying the current render, as the docs offer
    # the pictures the report shows of the update are the ones it wrote (it has no sidecar: nothing to promote)
    shown = _files(featviz_pytester.path / "featviz-report/snapshots/test_models/test_net/0/current")
    assert shown == {name: data for name, data in updated.items() if name.endswith(".png")}
    assert updated["0.png"] == made["0.png"] and updated["2.png"] != made["2.png"]
    entry = {layer["name"]: layer for layer in json.loads(updated["snapshot.json"])["layers"]}
    assert entry["0"] == {layer["name"]: layer for layer in json.loads(made["snapshot.json"])["layers"]}["0"]


def test_a_golden_that_changed_after_the_report_was_written_is_not_promoted(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A pull, a checkout or a teammate's update changed the golden after the run compared with it: promoting the
    # report's render replaced that golden unseen. The report records the golden it compared with.
    featviz_pytester.makepyfile(test_models=TEST_FILE)
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=1)
    sidecar = featviz_pytester.path / "golden" / "test_models" / "test_net" / "0" / "snapshot.json"
    compared = sidecar.read_text()
    monkeypatch.setenv("FEATVIZ_TEST_DRIFT", "1")
    featviz_pytester.runpytest().assert_outcomes(failed=1)
    changed = compared.replace('"bit_depth": 8,', '"bit_depth": 8,\n  "note": "a teammate\'s golden",')
    assert changed != compared
    sidecar.write_text(changed)
    out = io.StringIO()
    assert main(["promote"], out=out) == 1
    assert (
        "refused snapshots[0] ('test_models.py::test_net', snapshot '0'): the golden golden/test_models/test_net/0"
        " changed after the run that wrote this report compared with it (a pull, a checkout, another run?):"
        " promoting would replace it unseen; run pytest again and review the new report"
    ) in out.getvalue()
    assert sidecar.read_text() == changed
    picture = (sidecar.parent / "0.png").read_bytes()
    shutil.rmtree(sidecar.parent)  # deleted since (a prune, a rename): not brought back
    out = io.StringIO()
    assert main(["promote"], out=out) == 1
    assert "the golden golden/test_models/test_net/0 was deleted after the run" in out.getvalue()
    assert not sidecar.parent.exists()
    # the golden compared with, checked out with CRLF line endings (core.autocrlf): the same golden
    sidecar.parent.mkdir()
    (sidecar.parent / "0.png").write_bytes(picture)
    sidecar.write_bytes(compared.replace("\n", "\r\n").encode())
    out = io.StringIO()
    assert main(["promote"], out=out) == 0
    assert "promoted golden/test_models/test_net/0" in out.getvalue()
    out = io.StringIO()
    assert main(["promote"], out=out) == 0  # again: already the render, not "changed since"
    assert out.getvalue().splitlines()[-1] == (
        "0 golden snapshot(s) written from the current render; 1 already held it (promoted before: nothing to write)"
    )
    featviz_pytester.runpytest().assert_outcomes(passed=1)


def test_a_golden_created_after_the_report_found_none_is_not_promoted(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    featviz_pytester.makepyfile(test_models=TEST_FILE)
    featviz_pytester.runpytest().assert_outcomes(failed=1)  # missing: the report holds its current render
    golden = featviz_pytester.path / "golden" / "test_models" / "test_net" / "0"
    (featviz_pytester.path / "featviz-report").rename(featviz_pytester.path / "kept")
    monkeypatch.setenv("FEATVIZ_TEST_DRIFT", "1")  # a teammate created it from other code
    featviz_pytester.runpytest("--featviz-create").assert_outcomes(passed=1)
    theirs = (golden / "0.png").read_bytes()
    out = io.StringIO()
    assert main(["promote", "kept"], out=out) == 1
    assert "the golden golden/test_models/test_net/0 was created after the run that wrote this report found none" in (
        out.getvalue()
    )
    assert (golden / "0.png").read_bytes() == theirs


def test_promote_without_a_report_says_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["promote", str(tmp_path)], out=io.StringIO()) == 2
    assert f"no report.json in {tmp_path.resolve()}: run pytest first" in capsys.readouterr().err


def test_a_report_whose_rootdir_promote_does_not_trust_says_what_it_lacks(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # a project with no pytest configuration file (getting started) was told "which does not hold this report
    # directory and a pytest configuration file", although it held the report
    (featviz_pytester.path / "tox.ini").unlink()
    # a pyproject.toml without a pytest table is no pytest configuration file, and the message does not say it is one
    (featviz_pytester.path / "pyproject.toml").write_text('[project]\nname = "m"\n', encoding="utf-8")
    _drifted(featviz_pytester, monkeypatch)
    assert main(["promote"], out=io.StringIO()) == 1
    assert (
        "report.json names the rootdir ., which holds no pytest configuration file (pytest.ini, or a"
        " [tool.pytest.ini_options] or [tool.pytest] table in pyproject.toml, [pytest] in tox.ini, [tool:pytest] in"
        " setup.cfg), so the report alone does not say where the goldens are: pass --root with the project's rootdir"
    ) in capsys.readouterr().err
    assert main(["promote", "--root", "."], out=io.StringIO()) == 0  # as the command under a failure has it


def test_a_bare_promote_reads_the_report_directory_the_run_wrote(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # featviz_report_dir in the configuration: a bare promote from a subdirectory looked for ./featviz-report there
    featviz_pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\nfeatviz_report_dir = reports/fv\n")
    _drifted(featviz_pytester, monkeypatch)
    assert (featviz_pytester.path / "reports" / "fv" / "report.json").is_file()
    monkeypatch.chdir(featviz_pytester.mkdir("tests"))
    out = io.StringIO()
    assert main(["promote", "-k", NET], out=out) == 0
    assert out.getvalue().startswith("promoted ../golden/test_models/test_net/0\n")


def test_the_report_directory_of_a_bare_promote_is_the_one_pytest_writes(tmp_path: Path) -> None:
    from pytest_featviz.promote import default_report_dir

    project = tmp_path / "p"
    (project / "tests" / "unit").mkdir(parents=True)
    assert default_report_dir(project / "tests") == project / "tests" / "featviz-report"  # no rootdir marker at all
    (project / "pyproject.toml").write_text('[project]\nname = "m"\n')  # no pytest table: the rootdir all the same
    assert default_report_dir(project / "tests" / "unit") == project / "featviz-report"
    (project / "tests" / "tox.ini").write_text("[tox]\n")  # no [pytest] section: not pytest's configuration
    assert default_report_dir(project / "tests" / "unit") == project / "featviz-report"
    (project / "setup.cfg").write_text("[tool:pytest]\nfeatviz_report_dir = ../out/$FV_SUB\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FV_SUB", "fv")
        assert default_report_dir(project / "tests" / "unit") == tmp_path / "out" / "fv"
    (project / "tests" / "pytest.ini").write_text("[pytest]\n")  # the nearest configuration file wins
    assert default_report_dir(project / "tests" / "unit") == project / "tests" / "featviz-report"
    # the option in addopts wins over the ini key, relative to where pytest runs, as pytest takes it
    (project / "tests" / "pytest.ini").write_text(
        "[pytest]\naddopts = -q --featviz-report-dir build/fv --featviz-report-dir='build/f v'\n"
        "featviz_report_dir = x\n"
    )
    assert default_report_dir(project / "tests" / "unit") == project / "tests" / "unit" / "build" / "f v"
    (project / "tests" / "pytest.ini").unlink()
    (project / "setup.cfg").unlink()
    (project / "tests" / "setup.py").write_text("")  # no configuration file: setup.py's folder before pyproject's
    assert default_report_dir(project / "tests" / "unit") == project / "tests" / "featviz-report"


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


def test_the_summary_gives_the_command_that_accepts_the_drifts_and_it_leaves_expected_drifts_alone(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the summary gave counts only: a user with 4 drifted tests collected 4 commands from 4 tracebacks; and a bare
    # promote accepted the drift an xfail test expects, which then XPASSed
    featviz_pytester.makepyfile(
        test_models=TWO_TESTS.replace("import os", "import os\nimport pytest").replace(
            "def test_net2(", "@pytest.mark.xfail(reason='known drift')\ndef test_net2("
        )
    )
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=1, xpassed=1)
    goldens = featviz_pytester.path / "golden" / "test_models"
    before = {name: (goldens / name / "0" / "0.png").read_bytes() for name in ("test_net", "test_net2")}
    monkeypatch.setenv("FEATVIZ_TEST_DRIFT", "1")
    drifted = featviz_pytester.runpytest()
    drifted.assert_outcomes(failed=1, xfailed=1)
    drifted.stdout.fnmatch_lines(
        [
            "report: featviz-report/index.html",
            "once the report is reviewed, accept its 1 drifted test(s) with:  featviz promote featviz-report",
        ]
    )
    out = io.StringIO()
    assert main(["promote", "featviz-report"], out=out) == 0  # the command as printed
    assert out.getvalue() == (
        "promoted golden/test_models/test_net/0\n"
        "not promoted: the drift of 1 test(s) that expect it, marked xfail or catching the error"
        " (test_models.py::test_net2); promote one with -k and its whole test id\n"
        "1 golden snapshot(s) written from the current render; review and commit them\n"
    )
    assert (goldens / "test_net" / "0" / "0.png").read_bytes() != before["test_net"]
    assert (goldens / "test_net2" / "0" / "0.png").read_bytes() == before["test_net2"]
    # only the expected drift is left: no command to accept it, and promote accepts it when told its test
    expected = featviz_pytester.runpytest()
    expected.assert_outcomes(passed=1, xfailed=1)
    assert "accept its" not in expected.stdout.str()
    assert main(["promote", "featviz-report"], out=io.StringIO()) == 1
    assert main(["promote", "featviz-report", "-k", "test_models.py::test_net2"], out=io.StringIO()) == 0
    assert (goldens / "test_net2" / "0" / "0.png").read_bytes() != before["test_net2"]


REPEATED = """
import os
import pytest
import torch
from torch import nn
from pytest_featviz import FeatureDriftError

RUNS = []


def test_r(feature_snapshot):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    if os.environ.get("FEATVIZ_TEST_DRIFT"):
        with torch.no_grad():
            model[0].weight[:2] *= -1
    RUNS.append(1)
    if os.environ.get("FEATVIZ_TEST_DRIFT") and len(RUNS) == 1:  # the first run checks that the change is caught
        with pytest.raises(FeatureDriftError):
            feature_snapshot(model, torch.ones(1, 3, 9, 9).cumsum(-1), layers=["0"])
    else:
        feature_snapshot(model, torch.ones(1, 3, 9, 9).cumsum(-1), layers=["0"])
"""


def test_a_golden_another_run_of_its_test_expects_to_drift_is_not_promoted(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # two pytest-repeat runs share one golden: promoting the run that failed wrote the golden the other run checks
    # drifts from, and that run then failed
    featviz_pytester.makepyfile(test_rep=REPEATED)
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=1)
    golden = featviz_pytester.path / "golden" / "test_rep" / "test_r" / "0"
    before = _files(golden)
    monkeypatch.setenv("FEATVIZ_TEST_DRIFT", "1")
    featviz_pytester.runpytest("--count", "2", "-p", "no:randomly").assert_outcomes(passed=1, failed=1)
    status, output = _promote("featviz-report")
    assert status == 1
    assert (
        "refused snapshots[1] ('test_rep.py::test_r[2-2]', snapshot '0'): another run of its test shares the golden"
        in (output)
    )
    assert _files(golden) == before


# -- a report.json that is damaged or hostile -------------------------------------------------------------------------
#
# The report travels as a CI artifact and is promoted from anywhere: promote writes only strictly inside the golden
# directory and reads only inside the report directory, refuses a snapshot that would leave them (saying which and
# why, writing and deleting nothing for it), still promotes the others, and exits with status 1.

TWO_TESTS = TEST_FILE + TEST_FILE.split("\n\n\n", 1)[1].replace("test_net(", "test_net2(")
NET = "test_models.py::test_net"
DELETE = object()  # _edit removes the key
VICTIM = {"notes.txt": b"my notes\n", "holiday.png": b"\x89PNG\r\n\x1a\n not a golden"}


def _drifted(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project whose two tests (test_net, test_net2) drifted, with their report; returns the report directory."""
    pytester.makepyfile(test_models=TWO_TESTS)
    pytester.runpytest("--featviz-update").assert_outcomes(passed=2)
    monkeypatch.setenv("FEATVIZ_TEST_DRIFT", "1")
    pytester.runpytest().assert_outcomes(failed=2)
    return pytester.path / "featviz-report"


def _files(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` (through no symbolic link) with its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _victim(place: Path) -> Path:
    place.mkdir(parents=True)
    for name, data in VICTIM.items():
        (place / name).write_bytes(data)
    return place


def _edit(report_dir: Path, test_id: str, **changes: object) -> None:
    """Change the entry of ``test_id`` in ``report.json`` (a value of ``DELETE`` removes the key)."""
    path = report_dir / "report.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    entry = next(snapshot for snapshot in data["snapshots"] if snapshot["test_id"] == test_id)
    for key, value in changes.items():
        if value is DELETE:
            del entry[key]
        else:
            entry[key] = value
    path.write_text(json.dumps(data), encoding="utf-8")


def _promote(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    status = main(["promote", *args], out=out)
    return status, out.getvalue()


def _refused_one_promoted_other(status: int, output: str, golden: Path, before: dict[str, bytes]) -> None:
    """test_net refused (its golden as it was), test_net2 promoted, status 1."""
    assert status == 1, output
    assert f"refused snapshots[0] ({NET!r}, snapshot '0'): " in output
    assert "promoted golden/test_models/test_net2/0" in output
    assert "1 golden snapshot(s) written from the current render" in output
    assert "1 snapshot(s) refused (see above): nothing was written or deleted for them" in output
    assert _files(golden / "test_net") == {
        k[len("test_net/") :]: v for k, v in before.items() if k.startswith("test_net/")
    }
    assert (golden / "test_net2" / "0" / "0.png").read_bytes() != before["test_net2/0/0.png"]


@pytest.mark.parametrize("where", ["../victim", "victim", "golden/../victim", "absolute"])
def test_a_golden_dir_outside_the_golden_directory_is_refused_and_left_untouched(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    report_dir = _drifted(featviz_pytester, monkeypatch)
    root = featviz_pytester.path
    # "../victim": beside the project (outside the rootdir), as QA found it; else a folder of the project's own
    victim = _victim(root.parent / f"{root.name}-victim" if where == "../victim" else root / "victim")
    text = {"../victim": f"../{victim.name}", "absolute": str(victim)}.get(where, where)
    golden = root / "golden" / "test_models"
    before = _files(golden)
    _edit(report_dir, NET, golden_dir=text)
    status, output = _promote("featviz-report")
    _refused_one_promoted_other(status, output, golden, before)
    reason = "is an absolute path" if where == "absolute" else "leads out of the golden directory golden"
    assert f"golden_dir {text!r} {reason}" in output
    assert _files(victim) == VICTIM  # holiday.png kept, nothing new there
    assert sorted(p.name for p in victim.parent.iterdir() if p.name.startswith(f".{victim.name}")) == []


@pytest.mark.parametrize(
    ("update_dir", "reason"),
    [
        ("../victim", "is not a device's golden beside golden_dir"),
        ("golden/test_models/test_net2/0", "is not a device's golden beside golden_dir"),  # another test's golden
        ("golden/test_models/test_net/0@cuda/../../test_net2/0", "is not a device's golden beside golden_dir"),
        ("golden/test_models/test_net/0@", "is not a device's golden beside golden_dir"),
        ("golden/test_models/escape/0@cuda", "is not a device's golden beside golden_dir"),
    ],
)
def test_a_forged_update_dir_is_refused_unless_it_is_the_device_golden_beside_golden_dir(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, update_dir: str, reason: str
) -> None:
    # update_dir (keyed goldens) is where promote writes instead of golden_dir: it may only name 0@<device> beside 0
    report_dir = _drifted(featviz_pytester, monkeypatch)
    golden = featviz_pytester.path / "golden" / "test_models"
    before = _files(golden)
    _edit(report_dir, NET, update_dir=update_dir)
    status, output = _promote("featviz-report")
    _refused_one_promoted_other(status, output, golden, before)
    assert f"update_dir {update_dir!r} {reason} 'golden/test_models/test_net/0' (0@...)" in output


@pytest.mark.parametrize("forged", ["golden_dir", "root"])
def test_a_forged_report_cannot_name_a_golden_directory_outside_the_project(
    featviz_pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    forged: str,
) -> None:
    """A report whose ``run.golden_dir`` (or ``root``) leads out of the project, with its snapshots' paths to match,
    wrote there: the golden directory and the rootdir come from what is local (the project's configuration, --root,
    --golden-dir), never from report.json alone."""
    report_dir = _drifted(featviz_pytester, monkeypatch)
    root = featviz_pytester.path
    victim = _victim(root.parent / f"{root.name}-photos" / "holiday")
    data = json.loads((report_dir / "report.json").read_text(encoding="utf-8"))
    if forged == "root":  # the filesystem's root as the rootdir: every folder lies inside it
        data["root"] = "/".join([".."] * len(report_dir.resolve().parts[1:]))
        data["run"]["golden_dir"] = victim.parent.relative_to("/").as_posix()
        data["snapshots"][0]["golden_dir"] = f"{data['run']['golden_dir']}/holiday"
    else:
        data["run"]["golden_dir"] = f"../{victim.parent.name}"
        data["snapshots"][0]["golden_dir"] = f"../{victim.parent.name}/new"
        data["snapshots"][0]["replaces"] = ""  # no golden there when the run looked
    (report_dir / "report.json").write_text(json.dumps(data), encoding="utf-8")
    golden = root / "golden" / "test_models"
    before = _files(golden)
    status, output = _promote("featviz-report")
    err = capsys.readouterr().err
    reason = (
        "which holds no pytest configuration file (pytest.ini, or a [tool.pytest.ini_options] or [tool.pytest] table"
        " in pyproject.toml, [pytest] in tox.ini, [tool:pytest] in setup.cfg), so the report alone does not say where"
        " the goldens are: pass --root"
        if forged == "root"
        else "lies outside the rootdir"
    )
    assert status == 1 and reason in err, (output, err)
    assert _files(victim) == VICTIM and sorted(p.name for p in victim.parent.iterdir()) == ["holiday"]
    assert _files(golden) == before
    if forged == "golden_dir":  # the user may confirm it
        status, output = _promote("featviz-report", "--golden-dir", str(victim.parent))
        assert status == 1 and "promoted ../" in output and (victim.parent / "new" / "snapshot.json").is_file()


def test_promote_never_replaces_a_folder_of_pictures_without_a_sidecar(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    report_dir = _drifted(featviz_pytester, monkeypatch)
    victim = _victim(featviz_pytester.path / "golden" / "photos")
    golden = featviz_pytester.path / "golden" / "test_models"
    before = _files(golden)
    _edit(report_dir, NET, golden_dir="golden/photos")
    status, output = _promote("featviz-report")
    _refused_one_promoted_other(status, output, golden, before)
    assert "golden/photos holds pictures but no snapshot.json, so it is no golden promote replaces" in output
    assert _files(victim) == VICTIM


def test_a_golden_directory_outside_the_rootdir_is_promoted_into(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``featviz_golden_dir = ../shared``: promote refused the whole report ("leads out of the rootdir")."""
    project = featviz_pytester.mkdir("project")
    monkeypatch.chdir(project)
    (project / "tox.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\nfeatviz_golden_dir = ../shared\n")
    (project / "test_models.py").write_text(TWO_TESTS)
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=2)
    shared = featviz_pytester.path / "shared" / "test_models"
    before = _files(shared)
    monkeypatch.setenv("FEATVIZ_TEST_DRIFT", "1")
    featviz_pytester.runpytest().assert_outcomes(failed=2)
    status, output = _promote("featviz-report")
    assert status == 0, output
    assert "2 golden snapshot(s) written from the current render" in output
    after = _files(shared)
    assert sorted(after) == sorted(before) and after != before
    featviz_pytester.runpytest().assert_outcomes(passed=2)


@pytest.mark.parametrize("link", ["snapshot", "parent", "device golden"])
def test_a_symbolic_link_in_the_golden_directory_that_leads_out_of_it_is_refused(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, link: str
) -> None:
    report_dir = _drifted(featviz_pytester, monkeypatch)
    root = featviz_pytester.path
    victim = _victim(root.parent / f"{root.name}-outside" / "victim")  # its folder holds only it
    golden = root / "golden" / "test_models"
    before = _files(golden)
    # the snapshot's directory is the link, or a folder above it is, or the device golden a report's update_dir names
    if link == "device golden":
        (golden / "test_net" / "0@cuda").symlink_to(victim, target_is_directory=True)
        key, text = "update_dir", "golden/test_models/test_net/0@cuda"
    else:
        (golden / "escape").symlink_to(victim if link == "snapshot" else victim.parent, target_is_directory=True)
        key, text = "golden_dir", "golden/test_models/escape" + ("" if link == "snapshot" else f"/{victim.name}")
    _edit(report_dir, NET, **{key: text})
    status, output = _promote("featviz-report")
    _refused_one_promoted_other(status, output, golden, before)
    assert f"{key} {text!r} leads out of the golden directory golden through a symbolic link" in output
    assert _files(victim) == VICTIM
    assert [p.name for p in victim.parent.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("source", ["../outside", "absolute", "linked picture", "linked folder"])
def test_a_current_render_outside_the_report_directory_is_not_read(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    report_dir = _drifted(featviz_pytester, monkeypatch)
    root = featviz_pytester.path
    golden = root / "golden" / "test_models"
    before = _files(golden)
    current = report_dir / "snapshots" / "test_models" / "test_net" / "0" / "current"
    outside = root / "outside"  # a render someone left outside the report, complete and valid
    outside.mkdir()
    for path in current.iterdir():
        (outside / path.name).write_bytes(path.read_bytes())
    if source == "../outside":
        _edit(report_dir, NET, current="../outside")
        reason = "current '../outside' leads out of the report directory"
    elif source == "absolute":
        _edit(report_dir, NET, current=str(current))  # the report's own render, named absolutely
        reason = f"current {str(current)!r} is an absolute path"
    elif source == "linked picture":
        (current / "0.png").unlink()
        (current / "0.png").symlink_to(outside / "0.png")
        reason = "0.png leads out of the report directory"
    else:
        for path in current.iterdir():
            path.unlink()
        current.rmdir()
        current.symlink_to(outside, target_is_directory=True)
        reason = "leads out of the report directory featviz-report through a symbolic link"
    status, output = _promote("featviz-report")
    _refused_one_promoted_other(status, output, golden, before)
    assert reason in output


def _current(report_dir: Path, test: str = "test_net") -> Path:
    return report_dir / "snapshots" / "test_models" / test / "0" / "current"


def _listed_twice(text: str) -> str:
    data = json.loads(text)
    data["layers"].append(data["layers"][0])
    return json.dumps(data)


def _wrong_sha256(text: str) -> str:
    data = json.loads(text)
    data["layers"][0]["sha256"] = "0" * 64
    return json.dumps(data)


# A current render whose sidecar a golden's read refuses: promote wrote it over the sound golden ("promoted", status
# 0), which every later check then refused, and which --featviz-update would not write over either (format 2).
RENDERS_NO_GOLDEN_READS = {
    "format 2": (
        lambda text: text.replace('"format": 1', '"format": 2'),
        "sidecar {current}/snapshot.json has format 2, newer than this pytest-featviz reads (1); upgrade"
        " pytest-featviz",
    ),
    "wrong sha256": (
        _wrong_sha256,
        "picture {current}/0.png does not match its sidecar (edited, damaged or half-merged); re-create it with"
        " --featviz-update",
    ),
    "layer listed twice": (_listed_twice, "sidecar {current}/snapshot.json is malformed (layer '0': listed twice)"),
    "lone surrogate in test.file": (
        lambda text: text.replace('"test": {"file": "', '"test": {"file": "\\udc80', 1),
        "sidecar {current}/snapshot.json is malformed (test.file holds a lone UTF-16 surrogate: no text)",
    ),
}


@pytest.mark.parametrize("damage", list(RENDERS_NO_GOLDEN_READS))
def test_a_current_render_that_would_not_read_back_as_a_golden_is_refused(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    report_dir = _drifted(featviz_pytester, monkeypatch)
    golden = featviz_pytester.path / "golden" / "test_models"
    before = _files(golden)
    sidecar = _current(report_dir) / "snapshot.json"
    change, reason = RENDERS_NO_GOLDEN_READS[damage]
    damaged = change(sidecar.read_text(encoding="utf-8"))
    assert damaged != sidecar.read_text(encoding="utf-8")
    sidecar.write_text(damaged, encoding="utf-8")
    status, output = _promote()
    _refused_one_promoted_other(status, output, golden, before)
    current = "featviz-report/snapshots/test_models/test_net/0/current"
    assert (
        f"refused snapshots[0] ({NET!r}, snapshot '0'): its current render would not read back as a golden: golden"
        f" {reason.format(current=current)}\n"
    ) in output
    # the golden kept is the sound one the run compared with: a check of the old code still passes
    monkeypatch.delenv("FEATVIZ_TEST_DRIFT")
    featviz_pytester.runpytest("-k", "test_net and not test_net2").assert_outcomes(passed=1)


def test_a_current_render_sidecar_in_utf8_with_a_byte_order_mark_is_promoted_as_a_golden_reads_it(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # re-saved by Windows Notepad: a golden with a BOM reads, but promote refused its render as "not valid JSON"
    report_dir = _drifted(featviz_pytester, monkeypatch)
    golden = featviz_pytester.path / "golden" / "test_models"
    before = _files(golden)
    sidecar = _current(report_dir) / "snapshot.json"
    text = sidecar.read_text(encoding="utf-8")
    # UTF-16 (PowerShell's >): refused with the hint a golden gets
    sidecar.write_bytes(text.encode("utf-16"))
    status, output = _promote()
    _refused_one_promoted_other(status, output, golden, before)
    assert (
        "golden sidecar featviz-report/snapshots/test_models/test_net/0/current/snapshot.json is not UTF-8: it is"
        " UTF-16, as Windows PowerShell's > and Out-File save text; save it as UTF-8"
    ) in output
    sidecar.write_bytes(text.encode("utf-8-sig"))
    status, output = _promote("-k", NET)
    assert status == 0, output
    assert output.startswith("promoted golden/test_models/test_net/0\n"), output
    assert (golden / "test_net" / "0" / "snapshot.json").read_bytes() == text.encode("utf-8")  # as the writer does
    featviz_pytester.runpytest().assert_outcomes(passed=2)


@pytest.mark.parametrize("golden_sidecar", ["directory", "named pipe", "newer format"])
@pytest.mark.parametrize("where", [".", "sub"])
def test_a_golden_promote_will_not_replace_is_named_as_a_check_names_it(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, golden_sidecar: str, where: str
) -> None:
    # a sidecar that is a directory or a named pipe was "holds pictures but no snapshot.json" (the check: "is a
    # directory"), and the paths read "featviz-report/../golden/...", not the cwd-relative ones of promote's lines
    _drifted(featviz_pytester, monkeypatch)
    golden = featviz_pytester.path / "golden" / "test_models"
    sidecar = golden / "test_net" / "0" / "snapshot.json"
    if golden_sidecar == "newer format":
        sidecar.write_text(sidecar.read_text().replace('"format": 1', '"format": 7'))
        reason = "has format 7, newer than this pytest-featviz reads (1); upgrade pytest-featviz"
    else:
        sidecar.unlink()
        if golden_sidecar == "directory":
            sidecar.mkdir()
        else:
            os.mkfifo(sidecar)
        kind = "a directory" if golden_sidecar == "directory" else "a named pipe (FIFO)"
        reason = f"is {kind}, not a regular file, so pytest-featviz does not read it"
    before = _files(golden)
    monkeypatch.chdir(featviz_pytester.mkdir(where) if where != "." else featviz_pytester.path)
    up = "../" if where != "." else ""
    status, output = _promote(f"{up}featviz-report")
    assert status == 1, output
    assert (
        f"refused snapshots[0] ({NET!r}, snapshot '0'): golden sidecar {up}golden/test_models/test_net/0/snapshot.json"
        f" {reason}"
    ) in output
    assert f"promoted {up}golden/test_models/test_net2/0" in output
    assert "/../" not in output
    assert _files(golden / "test_net") == {k[len("test_net/") :]: v for k, v in before.items() if "net/" in k}
    if golden_sidecar != "newer format":  # the check says the same
        monkeypatch.chdir(featviz_pytester.path)
        checked = featviz_pytester.runpytest("-k", "test_net and not test_net2")
        checked.stdout.fnmatch_lines([f"*golden sidecar *golden/test_models/test_net/0/snapshot.json {reason}*"])


# Entries of report.json (or of a current render's sidecar) with a value of the wrong type, a missing key, a NUL byte,
# a lone surrogate: each refuses its snapshot with a message, never a traceback.
DAMAGED_ENTRIES: list[tuple[dict[str, object], str]] = [
    ({"golden_dir": 5}, "golden_dir is a number (5), not a path"),
    ({"golden_dir": DELETE}, "golden_dir is missing"),
    ({"golden_dir": None}, "golden_dir is null, not a path"),
    ({"golden_dir": "golden/test_models/test_net/0\x00"}, "holds a NUL byte"),
    ({"golden_dir": "golden/test_models/\ud800/0"}, "holds a lone surrogate"),
    ({"golden_dir": "golden"}, "golden_dir 'golden' is the golden directory golden itself, not a path inside it"),
    ({"current": ["x"]}, "current is a list, not a path"),
    ({"current": DELETE}, "current is missing"),
    ({"current": "snapshots/nowhere"}, "snapshots/nowhere/snapshot.json is missing from the report"),
]
# a layer file the golden reader refuses, in its words (a file promote would read or write outside the render)
NOT_WRITTEN = "is not a picture file name pytest-featviz writes"
DAMAGED_LAYER_FILES: list[tuple[object, str]] = [
    ("../../../../../golden/test_models/test_net2/0/0.png", "names a layer file outside its directory"),
    ("sub/0.png", "names a layer file by a path, not by its file name: 'sub/0.png'"),
    ("..\\0.png", "names a layer file outside its directory"),
    (".0.png", "names a hidden layer file, which pytest-featviz never writes: '.0.png'"),
    ("snapshot.json", f"file 'snapshot.json' {NOT_WRITTEN}"),
    (7, "is malformed (layer '0': file 7 is not a string)"),
    ("0.png\x00", f"file '0.png\\x00' {NOT_WRITTEN}"),
    ("\udc800.png", f"file '\\udc800.png' {NOT_WRITTEN}"),
]


def test_a_damaged_entry_refuses_its_snapshot_alone_with_a_message(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    report_dir = _drifted(featviz_pytester, monkeypatch)
    root = featviz_pytester.path
    golden = root / "golden" / "test_models"
    saved_report = (report_dir / "report.json").read_bytes()
    sidecar = report_dir / "snapshots" / "test_models" / "test_net" / "0" / "current" / "snapshot.json"
    saved_sidecar = sidecar.read_bytes()
    for changes, reason in DAMAGED_ENTRIES:
        _edit(report_dir, NET, **changes)
        output = _check_damaged(report_dir, golden, NET)
        assert reason in output, (changes, output)
        (report_dir / "report.json").write_bytes(saved_report)
    for file, reason in DAMAGED_LAYER_FILES:
        data = json.loads(saved_sidecar)
        data["layers"][0]["file"] = file
        sidecar.write_text(json.dumps(data), encoding="utf-8")
        assert reason in _check_damaged(report_dir, golden, NET), file
        sidecar.write_bytes(saved_sidecar)
    for text, reason in [("[", "is not valid JSON"), ('{"layers": 3}', "snapshot.json has no format version")]:
        sidecar.write_text(text, encoding="utf-8")
        assert reason in _check_damaged(report_dir, golden, NET), text
    sidecar.write_bytes(saved_sidecar)
    # the entry itself, or its test id, of the wrong type: the refusal names it by its place in the list
    data = json.loads(saved_report)
    data["snapshots"][0] = "oops"
    (report_dir / "report.json").write_text(json.dumps(data), encoding="utf-8")
    assert "refused snapshots[0]: is 'oops', not an object" in _check_damaged(report_dir, golden, None)
    data["snapshots"][0] = {**json.loads(saved_report)["snapshots"][0], "test_id": 7}
    (report_dir / "report.json").write_text(json.dumps(data), encoding="utf-8")
    assert "refused snapshots[0]: test_id is a number (7), not a string" in _check_damaged(report_dir, golden, None)


def _check_damaged(report_dir: Path, golden: Path, test_id: str | None) -> str:
    """Promote a report whose test_net entry is damaged: status 1, test_net's golden as it was, test_net2's
    promoted (then put back, for the next case), nothing written beside the project."""
    root = report_dir.parent
    around = sorted(p.name for p in root.parent.iterdir())
    before = _files(golden)
    status, output = _promote("featviz-report")
    assert status == 1, output
    assert "Traceback" not in output
    label = f"refused snapshots[0] ({test_id!r}, snapshot '0'): " if test_id else "refused snapshots[0]: "
    assert label in output, output
    assert "promoted golden/test_models/test_net2/0" in output, output
    after = _files(golden)
    assert {k: v for k, v in after.items() if not k.startswith("test_net2/")} == {
        k: v for k, v in before.items() if not k.startswith("test_net2/")
    }
    assert sorted(p.name for p in root.parent.iterdir()) == around
    for name, data in before.items():  # test_net2 back to its old golden, so that the next case promotes it again
        if name.startswith("test_net2/"):
            (golden / name).write_bytes(data)
    return output


# report.json as a whole cannot be used: said, and nothing written at all
DAMAGED_REPORTS: list[tuple[object, str]] = [
    (b"{not json", "report.json is not valid JSON"),
    (b"\xff\xfe{}", "report.json is not UTF-8 text"),
    (b"[" * 100_000, "report.json is not valid JSON"),
    ([1, 2], "report.json is a list, not a JSON object"),
    ({"format": 99}, "report.json has format 99, newer than this pytest-featviz reads (1)"),
    ({"format": "1"}, "report.json is damaged: 'format' is '1'"),
    ({"snapshots": {}}, "report.json is damaged: 'snapshots' is an object, not a list"),
    ({"snapshots": DELETE}, "report.json is damaged: 'snapshots' is missing, not a list"),
    ({"root": 5}, "root is a number (5), not a path (pass --root to say where the goldens are)"),
    ({"root": "..\x00"}, "root '..\\x00' holds a NUL byte"),
    ({"root": DELETE}, "report.json does not say where its goldens are (an older report): pass --root"),
    ({"run": "x"}, "report.json is damaged: 'run' is 'x', not an object"),
    ({"run": {"golden_dir": 3}}, "run.golden_dir is a number (3), not a path"),
    ({"run": {}}, "run.golden_dir is missing"),
    ({"run": {"golden_dir": "\ud800"}}, "run.golden_dir '\\ud800' holds a lone surrogate"),
    ({"run": {"golden_dir": "/tmp"}}, "run.golden_dir '/tmp' is an absolute path"),
]


def test_a_report_that_cannot_be_used_is_refused_whole_and_writes_nothing(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    report_dir = _drifted(featviz_pytester, monkeypatch)
    root = featviz_pytester.path
    saved = (report_dir / "report.json").read_bytes()
    before, around = _files(root / "golden"), sorted(p.name for p in root.parent.iterdir())
    for change, reason in DAMAGED_REPORTS:
        if isinstance(change, bytes):
            (report_dir / "report.json").write_bytes(change)
        elif isinstance(change, dict):
            data = json.loads(saved)
            for key, value in change.items():
                if value is DELETE:
                    del data[key]
                else:
                    data[key] = value
            (report_dir / "report.json").write_text(json.dumps(data), encoding="utf-8")
        else:
            (report_dir / "report.json").write_text(json.dumps(change), encoding="utf-8")
        status, output = _promote("featviz-report")
        err = capsys.readouterr().err
        assert status == 1, (change, output, err)
        assert f"featviz promote: cannot promote from featviz-report: {reason}" in err, (change, err)
        assert "promoted" not in output
        assert _files(root / "golden") == before
        assert sorted(p.name for p in root.parent.iterdir()) == around
    (report_dir / "report.json").write_bytes(saved)
    # an empty -k (an unset shell variable) would select every snapshot: refused too
    assert _promote("featviz-report", "-k", "")[0] == 2  # a usage error, as argparse's own
    assert "featviz promote: error: -k is empty: give a test id" in capsys.readouterr().err
    assert _files(root / "golden") == before


# -- what must keep working -------------------------------------------------------------------------------------------


def test_promote_finds_goldens_in_a_custom_golden_dir_for_nested_test_directories(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    featviz_pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\nfeatviz_golden_dir = tests/golden\n")
    featviz_pytester.mkpydir("tests").joinpath("unit").mkdir()
    (featviz_pytester.path / "tests" / "unit" / "test_models.py").write_text(TEST_FILE)
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=1)
    golden = featviz_pytester.path / "tests" / "golden" / "tests" / "unit" / "test_models" / "test_net" / "0"
    before = (golden / "0.png").read_bytes()
    monkeypatch.setenv("FEATVIZ_TEST_DRIFT", "1")
    featviz_pytester.runpytest().assert_outcomes(failed=1)
    assert json.loads((featviz_pytester.path / "featviz-report" / "report.json").read_text())["run"]["golden_dir"] == (
        "tests/golden"
    )
    monkeypatch.chdir(featviz_pytester.mkdir("elsewhere"))
    status, output = _promote("../featviz-report")
    assert status == 0, output
    assert "promoted ../tests/golden/tests/unit/test_models/test_net/0" in output
    assert (golden / "0.png").read_bytes() != before
    monkeypatch.chdir(featviz_pytester.path)
    featviz_pytester.runpytest().assert_outcomes(passed=1)


def test_promote_writes_through_a_golden_directory_that_is_a_symbolic_link(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the project's own link (goldens kept on a shared drive): the golden directory is where it leads
    shared = featviz_pytester.path.parent / f"{featviz_pytester.path.name}-shared-golden"
    shared.mkdir()
    (featviz_pytester.path / "golden").symlink_to(shared, target_is_directory=True)
    report_dir = _drifted(featviz_pytester, monkeypatch)
    before = _files(shared)
    status, output = _promote(str(report_dir))
    assert status == 0, output
    assert "2 golden snapshot(s) written from the current render" in output
    after = _files(shared)
    assert (
        after.keys() == before.keys()
        and after["test_models/test_net/0/0.png"] != before["test_models/test_net/0/0.png"]
    )
    featviz_pytester.runpytest().assert_outcomes(passed=2)


def test_promote_takes_a_rootdir_named_through_a_symbolic_link(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pytest --rootdir=<a link to the project>: the golden paths, relative to the link, leave it as written
    report_dir = _drifted(featviz_pytester, monkeypatch)
    project = featviz_pytester.path
    link = project.parent / f"{project.name}-link"
    link.symlink_to(project, target_is_directory=True)
    data = json.loads((report_dir / "report.json").read_text(encoding="utf-8"))
    data["root"] = f"../../{link.name}"
    data["run"]["golden_dir"] = f"../{project.name}/golden"
    for entry in data["snapshots"]:
        entry["golden_dir"] = f"../{project.name}/{entry['golden_dir']}"
    (report_dir / "report.json").write_text(json.dumps(data), encoding="utf-8")
    before = _files(project / "golden")
    status, output = _promote("featviz-report")
    assert status == 0, output
    assert "2 golden snapshot(s) written from the current render" in output
    assert _files(project / "golden").keys() == before.keys() and _files(project / "golden") != before


@pytest.mark.parametrize(
    ("args", "options"),
    [
        (["-c", "ci.ini"], ["--root", "."]),  # no standard configuration file in the rootdir
        (["--rootdir", "tests"], ["--root", "tests", "--golden-dir", "golden"]),  # report and goldens outside it
    ],
    ids=["-c", "--rootdir"],
)
def test_the_printed_promote_command_confirms_what_promote_would_not_take_from_the_report(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, args: list[str], options: list[str]
) -> None:
    # pasted as printed, the command was refused: "report.json names the rootdir ., which does not hold this report
    # directory and a pytest configuration file: pass --root ..."
    project = featviz_pytester.path
    if args[0] == "-c":
        (project / "tox.ini").rename(project / "ci.ini")
        featviz_pytester.makepyfile(test_models=TEST_FILE)
    else:
        (project / "tests").mkdir()
        (project / "tests" / "test_models.py").write_text(TEST_FILE, encoding="utf-8")
    featviz_pytester.runpytest(*args, "--featviz-update").assert_outcomes(passed=1)
    golden = project / "golden" / "test_models" / "test_net" / "0"
    before = _files(golden)
    monkeypatch.setenv("FEATVIZ_TEST_DRIFT", "1")
    result = featviz_pytester.runpytest(*args)
    result.assert_outcomes(failed=1)
    printed = re.search(r"promote it with `([^`]*)`", result.stdout.str())
    assert printed is not None
    command = shlex.split(printed.group(1))
    assert command == ["featviz", "promote", "featviz-report", *options, "-k", "test_models.py::test_net"]
    status, output = _promote(*command[2:])
    assert status == 0, output
    assert _files(golden) != before
    featviz_pytester.runpytest(*args).assert_outcomes(passed=1)


def test_the_paths_a_failure_shows_are_relative_to_where_pytest_ran_when_the_test_changed_directory(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a test that chdirs into a subdirectory printed `featviz promote ../featviz-report ...`, which failed pasted, and
    # `golden: ../golden/...`
    chdir = TEST_FILE.replace("def test_net(feature_snapshot):", "def test_net(feature_snapshot, monkeypatch):")
    chdir = chdir.replace(
        "    torch.manual_seed(0)\n",
        "    os.makedirs('sub', exist_ok=True)\n    monkeypatch.chdir('sub')\n    torch.manual_seed(0)\n",
        1,
    )
    featviz_pytester.makepyfile(test_models=chdir)
    missing = featviz_pytester.runpytest()
    missing.stdout.fnmatch_lines(["*(looked for golden/test_models/test_net/0/snapshot.json)"])
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=1)
    monkeypatch.setenv("FEATVIZ_TEST_DRIFT", "1")
    result = featviz_pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "E *golden: golden/test_models/test_net/0",
            "*diff mosaic of layer '0': featviz-report/snapshots/test_models/test_net/0/diff-0.png",
            "*current render: featviz-report/snapshots/test_models/test_net/0/current (promote it with"
            " `featviz promote featviz-report -k test_models.py::test_net`*",
        ]
    )


def test_promote_writes_the_devices_own_golden_where_update_would_when_the_shared_one_drifted(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # keyed goldens on, no cuda golden yet: the run on cuda checks the shared one, and --featviz-update would write
    # 0@cuda and leave the shared one alone; promote did the opposite, writing cuda's render over the shared one
    featviz_pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\nfeatviz_golden_key = device\n")
    featviz_pytester.makepyfile(test_models=TEST_FILE)
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=1)  # the shared golden, on the cpu
    golden = featviz_pytester.path / "golden" / "test_models" / "test_net"
    shared = _files(golden / "0")
    with monkeypatch.context() as cuda:
        cuda.setattr(environment, "device_type", lambda model, inputs: "cuda")
        cuda.setenv("FEATVIZ_TEST_DRIFT", "1")
        result = featviz_pytester.runpytest()
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines(["*--featviz-update would write golden/test_models/test_net/0@cuda*"])
        report = json.loads((featviz_pytester.path / "featviz-report" / "report.json").read_text(encoding="utf-8"))
        assert [entry["update_dir"] for entry in report["snapshots"]] == ["golden/test_models/test_net/0@cuda"]
        status, output = _promote("featviz-report")
        assert status == 0, output
        assert "promoted golden/test_models/test_net/0@cuda" in output
        assert _files(golden / "0") == shared  # the shared golden is left alone, as --featviz-update leaves it
        sidecar = json.loads((golden / "0@cuda" / "snapshot.json").read_text(encoding="utf-8"))
        assert sidecar["environment"]["device"] == "cuda"
        featviz_pytester.runpytest().assert_outcomes(passed=1)  # cuda, against its own golden now
    featviz_pytester.runpytest().assert_outcomes(passed=1)  # the cpu, the old code: the shared golden still matches


def test_promote_writes_a_device_keyed_golden(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    featviz_pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\nfeatviz_golden_key = device\n")
    featviz_pytester.makepyfile(test_models=TEST_FILE)
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=1)  # the shared golden
    golden = featviz_pytester.path / "golden" / "test_models" / "test_net"
    monkeypatch.setattr(environment, "device_type", lambda model, inputs: "cuda")
    monkeypatch.setenv("FEATVIZ_TEST_DRIFT", "1")
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=1)  # drifted on cuda: the cuda golden
    shared, keyed = _files(golden / "0"), _files(golden / "0@cuda")
    monkeypatch.delenv("FEATVIZ_TEST_DRIFT")
    featviz_pytester.runpytest().assert_outcomes(failed=1)  # cuda, against its own golden
    status, output = _promote("featviz-report")
    assert status == 0, output
    assert "promoted golden/test_models/test_net/0@cuda" in output
    assert _files(golden / "0") == shared and _files(golden / "0@cuda") != keyed
    featviz_pytester.runpytest().assert_outcomes(passed=1)
