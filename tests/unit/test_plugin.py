"""plugin: the options the printed commands repeat, so that a pasted command finds the test the run found; which
report carries pytest-html's pictures; what of the report and golden directories collection skips."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pytest_featviz import golden, manifest, report
from pytest_featviz.plugin import (
    GOLDEN_SUFFIXES,
    REPORT_ENTRIES,
    _collecting_options,
    holds_only_goldens,
    html_phase,
    judges_stale,
)


@pytest.mark.parametrize(
    ("args", "repeated"),
    [
        (["-p", "featviz", "--disable-plugin-autoload", "-q"], ["-p", "featviz", "--disable-plugin-autoload"]),
        (["-pno:randomly", "-x", "tests"], ["-pno:randomly"]),
        (
            ["--import-mode", "importlib", "--import-mode=append"],
            ["--import-mode", "importlib", "--import-mode=append"],
        ),
        (["--doctest-modules", "tests"], ["--doctest-modules"]),
        (["-v", "--pdb", "--", "-p", "x"], []),  # nothing after --
        (["-p"], []),  # a -p with no value (pytest refuses it anyway)
        (["-o", "python_functions=check_*", "-o", "junit_family=xunit1"], ["-o", "python_functions=check_*"]),
        (
            ["-opython_files=t_*.py", "--override-ini=testpaths=x", "-ojunit_family=x"],
            ["-opython_files=t_*.py", "--override-ini=testpaths=x"],
        ),
        (["--override-ini", "python_classes=Check"], ["--override-ini", "python_classes=Check"]),
    ],
)
def test_the_options_without_which_a_test_is_not_found_are_repeated(args: list[str], repeated: list[str]) -> None:
    assert _collecting_options(args) == repeated


@pytest.mark.parametrize(
    ("installed", "phase"),
    [("4.0.0", "call"), ("4.1.1", "call"), ("4.2.0", "teardown"), ("5.0", "teardown"), ("4.2.0rc1", "teardown")],
)
def test_pytest_html_before_4_2_gets_the_pictures_with_the_call_report(
    monkeypatch: pytest.MonkeyPatch, pytestconfig: pytest.Config, installed: str, phase: str
) -> None:
    """pytest-html before 4.2 drops a passed teardown report with its extras: pictures sent with it never showed."""
    monkeypatch.setattr(pytestconfig.pluginmanager, "hasplugin", lambda name: name == "html")
    monkeypatch.setattr("importlib.metadata.version", lambda name: installed if name == "pytest-html" else "0")
    assert html_phase(pytestconfig) == phase
    monkeypatch.setattr(pytestconfig.pluginmanager, "hasplugin", lambda name: False)
    assert html_phase(pytestconfig) is None


def test_the_report_entries_pytest_does_not_walk_are_what_the_report_writes() -> None:
    written = {report.REPORT_JSON, report.INDEX_HTML, report.GITIGNORE, report.SNAPSHOTS, manifest.MANIFEST}
    assert written == REPORT_ENTRIES


def test_the_golden_suffixes_cover_the_sidecar() -> None:
    assert golden.SIDECAR.endswith(GOLDEN_SUFFIXES)


@pytest.fixture
def goldens(tmp_path: Path) -> Path:
    snapshot = tmp_path / "golden" / "tests" / "test_m" / "test_x[a]" / "0"
    snapshot.mkdir(parents=True)
    for name in ("snapshot.json", "layer1.0.conv1.png", "fc.PNG"):
        (snapshot / name).write_bytes(b"x")
    (tmp_path / "golden" / ".gitattributes").write_text("*.png binary\n")
    return tmp_path / "golden"


def test_a_tree_of_pictures_and_sidecars_holds_only_goldens(goldens: Path) -> None:
    assert holds_only_goldens(goldens)


@pytest.mark.parametrize(
    "planted",
    ["tests/test_m/test_x[a]/test_planted.py", "conftest.py", "README.md", "tests/.hidden.py", "tests/values.npy"],
)
def test_any_other_file_among_the_goldens_has_pytest_walk_them(goldens: Path, planted: str) -> None:
    (goldens / planted).write_text("def test_planted():\n    pass\n")
    assert not holds_only_goldens(goldens)


def test_folders_pytest_does_not_walk_are_not_looked_into(goldens: Path) -> None:
    (goldens / "tests" / "build").mkdir()
    (goldens / "tests" / "build" / "test_built.py").write_text("")
    assert not holds_only_goldens(goldens)
    assert holds_only_goldens(goldens, ["build", ".*"])


def test_a_linked_folder_or_a_missing_directory_has_pytest_walk_as_usual(goldens: Path, tmp_path: Path) -> None:
    assert not holds_only_goldens(tmp_path / "missing")
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", goldens / "tests" / "linked", target_is_directory=True)
    assert not holds_only_goldens(goldens)


def test_a_folder_the_os_refuses_to_list_holds_nothing_to_collect(
    goldens: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pytest walked into it and stopped the session with a collection error: every test was lost for one golden."""
    refused = {goldens / "tests" / "test_m" / "test_x[a]"}
    scandir = os.scandir

    def listing(path: Path) -> object:
        if Path(path) in refused:
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", listing)
    assert holds_only_goldens(goldens)
    (goldens / "tests" / "conftest.py").write_text("")  # what else the folder holds still counts
    assert not holds_only_goldens(goldens)
    refused.add(goldens)
    assert holds_only_goldens(goldens)


@pytest.mark.parametrize(
    ("options", "judged"),
    [
        ({}, True),
        ({"collectonly": True}, False),
        ({"setuponly": True}, False),
        ({"setupplan": True}, False),
        ({"lf": True}, False),
        ({"stepwise": True}, False),
        ({"stepwise_skip": True}, False),
        ({"featviz_prune": True}, True),
    ],
)
def test_runs_that_cannot_tell_stale_goldens_do_not_look_for_them(
    monkeypatch: pytest.MonkeyPatch, pytestconfig: pytest.Config, options: dict[str, bool], judged: bool
) -> None:
    monkeypatch.setattr(pytestconfig, "getoption", lambda name, default=None: options.get(name, default))
    assert judges_stale(pytestconfig) is judged
