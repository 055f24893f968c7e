"""session: how the session tracker counts records that arrive with test reports (reruns, subtests, duplicate ids)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from pytest_featviz.config import Settings
from pytest_featviz.records import MATCHED, MISSING, SnapshotResult
from pytest_featviz.session import SessionTracker, _create_missing


def _report(node: str, run: tuple[str, int], *names: str, when: str = "call", outcome: str = "passed") -> object:
    records = [SnapshotResult(node, name, f"golden/{name}", MATCHED).to_dict() for name in names]
    return SimpleNamespace(nodeid=node, when=when, outcome=outcome, featviz=records, featviz_run=list(run))


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


def test_the_command_for_missing_goldens_leaves_out_a_test_that_also_drifted() -> None:
    def missing(node: str) -> SnapshotResult:
        message = f"no golden ...\ncreate it with:  pytest --featviz-update -c ci.ini {node}"
        return SnapshotResult(node, "new", "golden/x", MISSING, message=message)

    line = _create_missing([missing("t.py::a"), missing("t.py::b")], {"t.py::b"})
    assert line.startswith("create the missing goldens with:  pytest --featviz-update -c ci.ini t.py::a;")
    assert line.endswith("t.py::b also drifted: review that drift before --featviz-update on it, which accepts both")
