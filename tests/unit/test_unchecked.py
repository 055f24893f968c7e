"""unchecked: the goldens of failing tests that a run did not check, listed once each and in one order."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from pytest_featviz.records import DRIFTED, MATCHED, MISSING, UNREADABLE, SnapshotResult
from pytest_featviz.unchecked import unreached_snapshots


def _golden(directory: Path, device: str = "cpu") -> Path:
    directory.mkdir(parents=True)
    (directory / "snapshot.json").write_text(json.dumps({"environment": {"device": device}}), encoding="utf-8")
    return directory


@pytest.fixture
def test_two(tmp_path: Path) -> Path:
    """A test's golden folder with snapshots first and second, each shared and keyed for the cpu."""
    folder = tmp_path / "golden" / "test_a" / "test_two"
    for name in ("first", "second"):
        _golden(folder / name)
        _golden(folder / f"{name}@cpu")
    return folder


def test_a_keyed_golden_and_its_shared_one_are_one_unchecked_snapshot(test_two: Path) -> None:
    # the test drifted at 'first' on the cpu (its keyed golden): 'second' was not checked, and is one snapshot, named
    # as the cpu checks it (its own golden)
    results = [SnapshotResult("test_a.py::test_two", "first", str(test_two / "first@cpu"), DRIFTED, device="cpu")]
    assert unreached_snapshots(results, keyed=True) == [test_two / "second@cpu"]
    # the test stopped at its missing first snapshot (no golden of its own nor shared): the cpu's second all the same
    missing = [SnapshotResult("test_a.py::test_two", "first", str(test_two / "first"), MISSING, device="cpu")]
    for name in ("first", "first@cpu"):
        shutil.rmtree(test_two / name)
    assert unreached_snapshots(missing, keyed=True) == [test_two / "second@cpu"]
    # on a device with no golden of its own, the shared one it falls back to
    assert unreached_snapshots([replace(missing[0], device="cuda")], keyed=True) == [test_two / "second"]
    # without keys, second@cpu is a snapshot of its own
    assert unreached_snapshots(results, keyed=False) == [test_two / "second", test_two / "second@cpu"]


def test_the_unchecked_snapshots_are_listed_in_one_order_whatever_order_the_results_came_in(tmp_path: Path) -> None:
    # under xdist the records arrive in the order the workers finish, not the serial order
    results = []
    for test in ("test_p[1]", "test_p[2]", "test_q"):
        folder = tmp_path / "golden" / "test_b" / test
        for name in ("a", "b", "c"):
            _golden(folder / name)
        results.append(SnapshotResult(f"test_b.py::{test}", "a", str(folder / "a"), DRIFTED))
    results.append(SnapshotResult("test_b.py::test_q", "b", str(tmp_path / "golden/test_b/test_q/b"), MATCHED))
    serial = unreached_snapshots(results, keyed=False)
    assert serial == sorted(serial) and len(serial) == 5
    assert unreached_snapshots(results[::-1], keyed=False) == serial
    assert unreached_snapshots([results[2], results[0], results[3], results[1]], keyed=False) == serial


def test_an_xfail_test_s_expected_drift_lists_nothing_to_accept(test_two: Path) -> None:
    drifted = SnapshotResult("test_a.py::test_two", "first", str(test_two / "first"), DRIFTED)
    assert unreached_snapshots([drifted], keyed=False) == [test_two / "first@cpu", test_two / "second"] + [
        test_two / "second@cpu"
    ]
    # its xfail marker expected the drift: "accept that drift" would be wrong advice
    assert unreached_snapshots([replace(drifted, xfail=True)], keyed=False) == []


def test_a_test_stopped_by_an_unreadable_golden_lists_the_goldens_it_did_not_reach(test_two: Path) -> None:
    results = [SnapshotResult("test_a.py::test_two", "first", str(test_two / "first"), UNREADABLE)]
    assert unreached_snapshots(results, keyed=False) == [
        test_two / "first@cpu",
        test_two / "second",
        test_two / "second@cpu",
    ]
