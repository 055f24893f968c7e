"""session: how the session tracker counts records that arrive with test reports (reruns, subtests, duplicate ids)."""

from __future__ import annotations

import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest

from pytest_featviz.config import Settings
from pytest_featviz.records import CREATED, DRIFTED, MATCHED, MISSING, UNREADABLE, UPDATED, SnapshotResult
from pytest_featviz.session import SessionTracker, _create_missing, create_missing


def _report(
    node: str, run: tuple[str, int], *names: str, when: str = "call", outcome: str = "passed", snapshot: str = MATCHED
) -> object:
    records = [SnapshotResult(node, name, f"golden/{name}", snapshot).to_dict() for name in names]
    return SimpleNamespace(nodeid=node, when=when, outcome=outcome, featviz=records, featviz_run=list(run))


def _summary(tracker: SessionTracker) -> list[str]:
    """The lines of the tracker's ``featviz`` terminal section."""
    lines: list[str] = []
    terminal = SimpleNamespace(write_sep=lambda *args, **kwargs: None, write_line=lambda line, **_: lines.append(line))
    tracker.pytest_terminal_summary(terminal)
    return lines


def test_only_the_last_run_of_an_item_counts() -> None:
    tracker = SessionTracker(Settings(golden_dir=Path("golden")))
    first, second = ("w:1", 1), ("w:1", 2)
    tracker.pytest_runtest_logreport(_report("t.py::a", first, "setup", when="setup"))  # type: ignore[arg-type]
    tracker.pytest_runtest_logreport(_report("t.py::a", first, "s1"))  # type: ignore[arg-type]  # a subtest
    tracker.pytest_runtest_logreport(_report("t.py::a", first, outcome="rerun"))  # type: ignore[arg-type]
    tracker.pytest_runtest_logreport(_report("t.py::a", second, "setup", when="setup"))  # type: ignore[arg-type]
    tracker.pytest_runtest_logreport(_report("t.py::a", second, "s1"))  # type: ignore[arg-type]
    assert [r.name for r in tracker.results] == ["setup", "s1"]


def test_two_items_with_one_node_id_both_count() -> None:
    # pytest gives tests outside the rootdir node ids that need not be unique
    tracker = SessionTracker(Settings(golden_dir=Path("golden")))
    tracker.pytest_runtest_logreport(_report("::test_x", ("w:1", 1), "0"))  # type: ignore[arg-type]
    tracker.pytest_runtest_logreport(_report("::test_x", ("w:2", 1), "0"))  # type: ignore[arg-type]
    assert len(tracker.results) == 2


def test_goldens_written_by_a_run_that_is_repeated_count_as_written() -> None:
    # --featviz-update: the first run of each test creates or rewrites its golden and fails after it, so
    # pytest-rerunfailures runs it again, and the second run finds the golden matching. The files were written.
    tracker = SessionTracker(Settings(golden_dir=Path("golden"), update=True))
    for node, wrote in (("t.py::new", CREATED), ("t.py::moved", UPDATED)):
        repeated = _report(node, (node, 1), node, outcome="rerun", snapshot=wrote)
        tracker.pytest_runtest_logreport(repeated)  # type: ignore[arg-type]
        tracker.pytest_runtest_logreport(_report(node, (node, 2), node))  # type: ignore[arg-type]
    assert _summary(tracker) == [
        "2 snapshot(s) compared: 2 matched, 0 drifted, 0 without a golden (created)",  # the last runs
        "goldens: 1 created, 1 updated, 0 unchanged (in golden)",
        "1 drifted golden snapshot(s) rewritten (review their pictures in the diff before committing):"
        " golden/t.py::moved",
    ]


def test_an_update_that_rewrote_goldens_of_failed_or_xfail_tests_says_how_to_put_them_back() -> None:
    """A golden holding a drift its test expects (a known regression kept as xfail, a test that checks the drift is
    caught) was rewritten like any other: the xfail test then passed unexpectedly, the other failed (DID NOT RAISE),
    and the summary called both ordinary drifts. Passing tests' goldens and those a run created are not listed."""
    tracker = SessionTracker(Settings(golden_dir=Path("golden"), update=True))
    reports = [
        _report("t.py::xpass", ("w:1", 1), "x y", snapshot=UPDATED),
        _report("t.py::caught", ("w:2", 1), "c", outcome="failed", snapshot=UPDATED),
        _report("t.py::new", ("w:3", 1), "n", outcome="failed", snapshot=CREATED),
        _report("t.py::fine", ("w:4", 1), "f", snapshot=UPDATED),
    ]
    reports[0].wasxfail = "known regression"  # type: ignore[attr-defined]
    for report in reports:
        tracker.pytest_runtest_logreport(report)  # type: ignore[arg-type]
    lines: list[str] = []
    config = SimpleNamespace(invocation_params=SimpleNamespace(dir=Path.cwd()))
    terminal = SimpleNamespace(
        write_sep=lambda *a, **k: None, write_line=lambda line, **_: lines.append(line), config=config
    )
    tracker.pytest_terminal_summary(terminal)
    assert lines[2:] == [
        "3 drifted golden snapshot(s) rewritten (review their pictures in the diff before committing): golden/c,"
        " golden/f, golden/x y",
        "  2 of them in tests that failed or are marked xfail: if a golden held a drift its test expects (an xfail,"
        " a pytest.raises(FeatureDriftError)), put it back: git checkout -- golden/c 'golden/x y'",
    ]


def test_the_way_back_names_goldens_an_earlier_run_of_a_failed_test_rewrote() -> None:
    """Under pytest-rerunfailures the run that rewrote the golden is a "rerun" report and the last run, which failed,
    finds it matching: no way back was printed. A test that failed once and then passed is not listed."""
    tracker = SessionTracker(Settings(golden_dir=Path("golden"), update=True))
    for node, last in (("t.py::caught", "failed"), ("t.py::flaky", "passed")):
        tracker.pytest_runtest_logreport(
            _report(node, (node, 1), node.split("::")[1], outcome="rerun", snapshot=UPDATED)
        )  # type: ignore[arg-type]
        tracker.pytest_runtest_logreport(_report(node, (node, 2), node.split("::")[1], outcome=last))  # type: ignore[arg-type]
    lines: list[str] = []
    config = SimpleNamespace(invocation_params=SimpleNamespace(dir=Path.cwd()))
    terminal = SimpleNamespace(
        write_sep=lambda *a, **k: None, write_line=lambda line, **_: lines.append(line), config=config
    )
    tracker.pytest_terminal_summary(terminal)
    assert lines[-1].endswith("put it back: git checkout -- golden/caught")


def test_each_golden_is_counted_once_by_what_happened_to_it() -> None:
    # pytest-repeat's runs of a test share its golden; under xdist two of them may both create it
    tracker = SessionTracker(Settings(golden_dir=Path("golden"), update=True))
    runs = [("a", CREATED), ("a", CREATED), ("a", MATCHED), ("a", UPDATED)]
    runs += [("b", MATCHED), ("b", UPDATED), ("c", MATCHED)]
    for number, (test, outcome) in enumerate(runs):
        item = _report(f"t.py::{test}", (f"w:{number}", 1), test, snapshot=outcome)
        tracker.pytest_runtest_logreport(item)  # type: ignore[arg-type]
    assert _summary(tracker) == [
        "7 snapshot(s) compared: 3 matched, 2 drifted (rewritten), 2 without a golden (created)",  # the calls
        "goldens: 1 created, 1 updated, 1 unchanged (in golden)",
        # named once each, as counted: golden a was created by this run (then rewritten by a later run of it)
        "1 drifted golden snapshot(s) rewritten (review their pictures in the diff before committing): golden/b",
    ]


def test_an_update_names_the_drifted_goldens_it_rewrote_apart_from_damaged_ones() -> None:
    # a run meant to re-create a damaged golden (its message's command) also rewrites that test's drifted goldens:
    # the summary named only the damaged one, and the drifts were accepted unseen
    tracker = SessionTracker(Settings(golden_dir=Path("golden"), update=True))
    records = [SnapshotResult("t.py::a", "0", "golden/a/0", UPDATED, recreated=True).to_dict()]
    records += [SnapshotResult("t.py::a", str(n), f"golden/a/{n}", UPDATED).to_dict() for n in range(1, 8)]
    records.append(SnapshotResult("t.py::a", "8", "golden/a/8", MATCHED).to_dict())
    report = SimpleNamespace(nodeid="t.py::a", when="call", outcome="passed", featviz=records)
    tracker.pytest_runtest_logreport(report)  # type: ignore[arg-type]
    assert _summary(tracker)[2:] == [
        "1 damaged golden snapshot(s) re-created from this run (what was damaged could not be compared, and the rest"
        " is rewritten as it is now: review their pictures before committing): golden/a/0",
        "7 drifted golden snapshot(s) rewritten (review their pictures in the diff before committing): golden/a/1,"
        " golden/a/2, golden/a/3, golden/a/4, golden/a/5 and 2 more",
    ]


@pytest.mark.parametrize(
    ("tests", "line"),
    [
        ("a", "1 drifted (written as the device's own golden, the shared golden left as it was)"),
        ("ac", "2 drifted (written as the device's own goldens, the shared goldens left as they were)"),
        ("ab", "2 drifted (1 rewritten; 1 written as the device's own golden, the shared golden left as it was)"),
    ],
    ids=["keyed", "two keyed", "mixed"],
)
def test_a_drift_written_as_the_device_s_own_golden_is_not_called_rewritten(tests: str, line: str) -> None:
    # environment-keyed goldens: a drift of the shared golden on cuda writes 0@cuda (tests a and c) and leaves the
    # shared one as it was; the line said "rewritten" while the goldens line below it said "created". Test b had its
    # own golden for cuda, which it rewrote.
    tracker = SessionTracker(Settings(golden_dir=Path("golden"), update=True, golden_key="device"))
    for test in tests:
        keyed = None if test == "b" else f"golden/{test}/0@cuda"
        record = SnapshotResult(f"t.py::{test}", "0", f"golden/{test}/0", UPDATED, update_dir=keyed).to_dict()
        report = SimpleNamespace(nodeid=f"t.py::{test}", when="call", outcome="passed", featviz=[record])
        tracker.pytest_runtest_logreport(report)  # type: ignore[arg-type]
    created = len(tests) - tests.count("b")
    assert _summary(tracker)[:2] == [
        f"{len(tests)} snapshot(s) compared: 0 matched, {line}, 0 without a golden (created)",
        f"goldens: {created} created, {len(tests) - created} updated, 0 unchanged (in golden)",
    ]


@pytest.mark.parametrize("setup_only", [False, True])
def test_setup_only_names_no_golden_a_test_body_would_have_checked(tmp_path: Path, setup_only: bool) -> None:
    # a fixture's snapshot drifted under --setup-only: the test's body, and its snapshot, were never to run
    for name in ("fixture", "body"):
        (tmp_path / "golden" / "t" / "test_a" / name).mkdir(parents=True)
        (tmp_path / "golden" / "t" / "test_a" / name / "snapshot.json").write_text("{}", encoding="utf-8")
    tracker = SessionTracker(Settings(golden_dir=tmp_path / "golden"), setup_only=setup_only)
    drifted = SnapshotResult("t.py::test_a", "fixture", str(tmp_path / "golden/t/test_a/fixture"), DRIFTED)
    report = SimpleNamespace(nodeid="t.py::test_a", when="setup", outcome="failed", featviz=[drifted.to_dict()])
    tracker.pytest_runtest_logreport(report)  # type: ignore[arg-type]
    unchecked = [line for line in _summary(tracker) if "were not checked" in line]
    assert unchecked == ([] if setup_only else [unchecked[0]])
    assert setup_only or unchecked[0].endswith("golden/t/test_a/body")


def test_the_command_for_missing_goldens_creates_them_with_each_test_s_own_options() -> None:
    """--featviz-create rewrites no golden, so a test that also drifted is named too: the command fails on that
    drift and shows it (the --featviz-update of before had to leave such a test out)."""

    def missing(node: str) -> SnapshotResult:
        message = f"no golden ...\ncreate it with:  pytest --featviz-create -c ci.ini {shlex.quote(node)}"
        return SnapshotResult(node, "new", "golden/x", MISSING, message=message)

    records = [missing("t.py::a"), missing("t.py::b"), missing("t.py::a")]
    assert (
        _create_missing(records)
        == "create the missing goldens with:  pytest --featviz-create -c ci.ini t.py::a t.py::b"
    )
    # every missing test is named (150 missing got a command naming 10): files or a folder would also create the
    # goldens of tests the run deselected (-m "not gpu"), or miss those of another root (pytest . ../tests2)
    many = [missing(f"t.py::t{i}") for i in range(13)] + [missing("../other/u.py::u[a b]")]
    named = ["pytest", "--featviz-create", "-c", "ci.ini", *(f"t.py::t{i}" for i in range(13)), "../other/u.py::u[a b]"]
    assert create_missing(many) == shlex.join(named)
    assert create_missing([SnapshotResult("t.py::c", "new", "golden/x", MISSING, message="no golden")]) is None


def test_the_summary_names_each_unreadable_golden_once_with_its_error(tmp_path: Path) -> None:
    # pytest-repeat's three runs of a test meet its one damaged golden three times; seven goldens show five. The
    # error is there too: a test marked xfail hides its own.
    tracker = SessionTracker(Settings(golden_dir=tmp_path / "golden", report_dir=tmp_path / "report"))

    def report(node: str, golden: str) -> object:
        message = f"golden sidecar {golden}/snapshot.json is not valid JSON\nre-create it with:  pytest ..."
        record = SnapshotResult(node, "0", golden, UNREADABLE, message=message)
        return SimpleNamespace(nodeid=node, when="call", outcome="failed", featviz=[record.to_dict()])

    for run in range(3):
        tracker.pytest_runtest_logreport(report(f"t.py::t[{run}-3]", "golden/g0"))  # type: ignore[arg-type]
    for index in range(1, 7):
        tracker.pytest_runtest_logreport(report(f"t.py::u{index}", f"golden/g{index}"))  # type: ignore[arg-type]
    lines = _summary(tracker)
    assert lines[0] == "9 snapshot(s) checked: 0 matched, 0 drifted (0 test(s), 0 layer(s)), 0 missing, 9 unreadable"
    assert lines[1:8] == [
        "7 golden snapshot(s) could not be read (the failing test says how to fix each):",
        *(f"  golden/g{i}: golden sidecar golden/g{i}/snapshot.json is not valid JSON" for i in range(5)),
        "  and 2 more",
    ]
