"""Unit tests of pytest_featviz.report: report.json, the Reporter; the record builders here also serve
test_outputs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from pytest_featviz import manifest, report
from pytest_featviz.records import (
    CREATED,
    DRIFT,
    DRIFTED,
    MATCH,
    MATCHED,
    MISSING,
    UNREADABLE,
    UPDATED,
    LayerResult,
    NoiseFloor,
    SnapshotResult,
)


def layer_record(name: str, ssim: tuple[float, ...], verdict: str = DRIFT) -> LayerResult:
    n = len(ssim)
    return LayerResult(
        name, verdict, (1, n, 7, 7), (1, n, 7, 7), tuple(range(n)), ssim, (0.0,) * n, (0.0,) * n, threshold=0.9,
        stat_tolerance=0.05, rms_tolerance=0.03,
    )  # fmt: skip


def snapshot_record(test_id: str, outcome: str, *layers: LayerResult, name: str = "0") -> SnapshotResult:
    return SnapshotResult(test_id, name, f"/g/{test_id}/{name}", outcome, layers, message=f"msg {test_id}")


# A layer whose tolerances were fitted to its TF32 noise floor, and one that was not compared channel by channel.
FITTED = dataclasses.replace(
    layer_record("a", (0.999,)),
    stat_delta=(0.02,),
    threshold=0.996,
    stat_tolerance=0.012,
    rms_tolerance=0.06,
    noise=NoiseFloor(ssim=0.99999, rms_error=0.004, stat_delta=0.0015),
)
RESHAPED = LayerResult("head", DRIFT, (1, 4), (1, 8), (0, 1), reason="normalize changed from minmax to sigmoid")
RUN = {
    "torch": "2.14.1",
    "mode": "check",
    "threshold": 0.99,
    "stat_tolerance": 0.03,
    "rms_tolerance": 0.15,
    "normalize": "minmax",
    "golden_dir": "/repo/golden",  # as the plugin gives it; the report makes it relative to the rootdir
}


def test_report_data_is_sorted_by_severity_with_a_fixed_key_order(tmp_path: Path) -> None:
    mild = snapshot_record("t.py::mild", DRIFTED, layer_record("a", (0.95, 0.85)), layer_record("b", (0.99,), MATCH))
    bad = snapshot_record("t.py::bad", DRIFTED, layer_record("a", (0.99,), MATCH), layer_record("b", (0.1, 0.95)))
    missing = snapshot_record("t.py::new", MISSING, LayerResult("a", "new", (1, 2), None))
    fine = snapshot_record("t.py::fine", MATCHED, layer_record("a", (0.99,), MATCH))
    data = report.report_data([missing, mild, fine, bad], tmp_path, Path("/"), report_all=False)
    assert list(data) == ["format", "root", "run", "summary", "unchecked", "snapshots"]
    assert [s["test_id"] for s in data["snapshots"]] == ["t.py::bad", "t.py::mild", "t.py::new"]
    assert data["summary"]["checked"] == 4 and data["summary"]["drifted_tests"] == 2
    bad_entry = data["snapshots"][0]
    assert list(bad_entry) == [
        "test_id", "snapshot", "outcome", "xfail", "caught", "first_drifted", "golden_dir", "current", "layers",
        "message",
    ]  # fmt: skip
    assert bad_entry["first_drifted"] == "b" and bad_entry["golden_dir"] == "g/t.py::bad/0"
    layer_b = bad_entry["layers"][1]
    assert layer_b["first_drifted"] and layer_b["min_ssim"] == 0.1 and layer_b["drifted_channels"] == [0]
    assert data["snapshots"][2]["layers"][0]["min_ssim"] is None  # no NaN in JSON
    json.dumps(data, allow_nan=False)
    everything = report.report_data([missing, mild, fine, bad], tmp_path, Path("/"), report_all=True)
    assert len(everything["snapshots"]) == 4


def test_an_unreadable_golden_is_reported_after_the_drifts_and_before_the_missing_goldens(tmp_path: Path) -> None:
    drifted = snapshot_record("t.py::z", DRIFTED, layer_record("a", (0.5,)))
    missing = snapshot_record("t.py::a", MISSING, LayerResult("a", "new", (1, 2), None))
    unreadable = snapshot_record("t.py::m", UNREADABLE)
    data = report.report_data([missing, unreadable, drifted], tmp_path, Path("/"), report_all=False)
    assert [(s["test_id"], s["outcome"]) for s in data["snapshots"]] == [
        ("t.py::z", DRIFTED),
        ("t.py::m", UNREADABLE),
        ("t.py::a", MISSING),
    ]
    entry = data["snapshots"][1]
    assert (entry["first_drifted"], entry["current"], entry["layers"], entry["message"]) == (
        None,
        None,
        [],
        "msg t.py::m",
    )
    assert data["summary"]["unreadable"] == 1 and data["summary"]["checked"] == 3
    # a run whose only trouble is an unreadable golden writes the report, which lists it
    assert report.write_session_report([unreadable], tmp_path / "r", Path("/")) == tmp_path / "r" / "index.html"


def test_a_layer_judged_by_its_noise_floor_records_the_floor_and_its_tolerances(tmp_path: Path) -> None:
    data = report.report_data([snapshot_record("t.py::fit", DRIFTED, FITTED)], tmp_path, Path("/"), False)
    layer = data["snapshots"][0]["layers"][0]
    assert layer["noise_floor"] == {"ssim": 0.99999, "rms_error": 0.004, "stat_delta": 0.0015}
    assert (layer["threshold"], layer["stat_tolerance"], layer["rms_tolerance"]) == (0.996, 0.012, 0.06)


def test_a_layer_not_compared_has_no_tolerances_and_every_number_is_finite(tmp_path: Path) -> None:
    odd = dataclasses.replace(layer_record("body", (float("nan"), 0.5)), stat_delta=(float("inf"), 0.0))
    data = report.report_data([snapshot_record("t.py::t", DRIFTED, RESHAPED, odd)], tmp_path, Path("/"), False)
    head, body = data["snapshots"][0]["layers"]
    assert (head["threshold"], head["stat_tolerance"], head["rms_tolerance"], head["min_ssim"]) == (None,) * 4
    assert (body["threshold"], body["stat_tolerance"], body["rms_tolerance"]) == (0.9, 0.05, 0.03)
    assert body["ssim"] == [None, 0.5] and body["stat_delta"] == [None, 0.0]
    json.dumps(data, allow_nan=False)  # what write_session_report writes: strict JSON


def test_the_report_says_what_the_run_was_with_its_goldens_relative_to_the_rootdir(tmp_path: Path) -> None:
    data = report.report_data(
        [snapshot_record("t.py::bad", DRIFTED, layer_record("a", (0.1,)))], tmp_path, Path("/repo"), False, RUN
    )
    assert data["run"] == {**RUN, "golden_dir": "golden"}


@pytest.mark.parametrize("outcome", [MATCHED, "created"])
def test_reporter_leaves_passing_snapshots_alone(tmp_path: Path, outcome: str) -> None:
    from pytest_featviz.records import Evidence

    def fresh() -> tuple[str, dict[str, bytes]]:
        raise AssertionError("not rendered for a passing snapshot")

    result = snapshot_record("t.py::a", outcome, layer_record("a", (0.99,), MATCH))
    evidence = Evidence(result, (), 8, fresh)
    assert report.Reporter(tmp_path / "r", Path("/g"))(evidence) is result
    assert not (tmp_path / "r").exists()


def test_report_all_writes_the_current_pictures_of_created_and_updated_snapshots_and_nothing_to_promote(
    tmp_path: Path,
) -> None:
    """With --featviz-report-all, a snapshot the run created or updated is in the report with its current pictures
    (an updated one's mosaics are drawn as a drift's); it has no current render for promote, whose golden is written."""
    from pytest_featviz.records import Evidence

    def fresh() -> tuple[str, dict[str, bytes]]:
        return json.dumps({"layers": [{"name": "conv", "file": "conv.png"}]}), {"conv.png": b"picture"}

    reporter = report.Reporter(tmp_path / "r", Path("/g"), report_all=True)
    created = reporter(
        Evidence(snapshot_record("t.py::new", CREATED, LayerResult("conv", "new", (1, 2), None)), (), 8, fresh)
    )
    updated = reporter(Evidence(snapshot_record("t.py::old", UPDATED, layer_record("conv", (0.5,))), (), 8, fresh))
    matched = reporter(
        Evidence(snapshot_record("t.py::same", MATCHED, layer_record("conv", (1.0,), MATCH)), (), 8, fresh)
    )
    for result in (created, updated):
        assert sorted(result.artifacts) == ["current:conv"]  # no sidecar: nothing for promote to write
        assert Path(result.artifacts["current:conv"]).read_bytes() == b"picture"
        assert not (reporter.snapshot_dir(result) / "current" / "snapshot.json").exists()
    assert matched.artifacts == {}
    data = report.report_data([matched, created, updated], tmp_path / "r", Path("/"), report_all=True)
    assert [(s["test_id"], s["outcome"], s["current"]) for s in data["snapshots"]] == [
        ("t.py::old", UPDATED, None),
        ("t.py::new", CREATED, None),
        ("t.py::same", MATCHED, None),
    ]
    assert data["snapshots"][1]["layers"][0]["current"] == "snapshots/t.py::new/0/current/conv.png"
    assert report.report_data([matched, created, updated], tmp_path / "r", Path("/"), False)["snapshots"] == []


def test_discarding_an_attempt_removes_its_files_and_only_its_own(tmp_path: Path) -> None:
    """pytest-rerunfailures runs a failed test again: the failed attempt's current render stayed in the report
    beside the attempt that passed (listed nowhere in index.html). Discarding that attempt's results removes their
    files and the folders they leave empty; another test's files, and files the plugin did not write, stay."""
    from pytest_featviz.records import Evidence

    def fresh() -> tuple[str, dict[str, bytes]]:
        sidecar = json.dumps({"layers": [{"name": "conv", "file": "conv.png"}]})
        return sidecar, {"conv.png": b"picture"}

    reporter = report.Reporter(tmp_path / "r", Path("/g"))
    a, b, other = (
        reporter(Evidence(snapshot_record(test, MISSING, name=name), (), 8, fresh))
        for test, name in (("t.py::a", "0"), ("t.py::a", "1"), ("t.py::b", "0"))
    )
    assert (reporter.snapshot_dir(a) / "current" / "conv.png").read_bytes() == b"picture"
    (reporter.snapshot_dir(a) / "notes.txt").write_text("mine")
    reporter.discard([a, b, snapshot_record("t.py::a", MATCHED, name="2")])  # the last one wrote nothing
    assert sorted(p.name for p in reporter.snapshot_dir(a).rglob("*")) == ["notes.txt"]
    assert not reporter.snapshot_dir(b).exists()
    assert (reporter.snapshot_dir(other) / "current" / "conv.png").is_file()
    manifest.tidy(tmp_path / "r")  # files of t.py::b are still listed: the manifest stays
    assert (tmp_path / "r" / manifest.MANIFEST).is_file()


def test_a_manifest_that_is_a_symbolic_link_is_never_written_through(tmp_path: Path) -> None:
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / manifest.MANIFEST).symlink_to(tmp_path / "outside")
    with pytest.raises(OSError, match="the report's manifest is a symbolic link"):
        report.write_session_report(
            [snapshot_record("t.py::a", DRIFTED, layer_record("a", (0.5,)))], tmp_path / "r", tmp_path
        )
    assert not (tmp_path / "outside").exists()
    assert not (tmp_path / "r" / report.REPORT_JSON).exists()  # nothing written before the refusal


@pytest.mark.parametrize("linked", ["snapshots", "snapshots/t.py::a"])
def test_a_folder_in_the_report_directory_that_is_a_symbolic_link_is_never_written_through(
    tmp_path: Path, linked: str
) -> None:
    """A link planted in the report directory (``featviz-report/snapshots -> ../golden``) had the report write its
    mosaics and a current render, with a sidecar, where it led: outside the report directory, into the golden
    directory of a check run. The snapshot's message says the report could not be written, and why."""
    from pytest_featviz.records import Evidence

    def fresh() -> tuple[str, dict[str, bytes]]:
        return json.dumps({"layers": [{"name": "conv", "file": "conv.png"}]}), {"conv.png": b"picture"}

    outside = tmp_path / "golden"
    outside.mkdir()
    (tmp_path / "r" / linked).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "r" / linked).symlink_to(outside, target_is_directory=True)
    reporter = report.Reporter(tmp_path / "r", Path("/g"))
    result = reporter(Evidence(snapshot_record("t.py::a", MISSING), (), 8, fresh))
    assert list(outside.iterdir()) == []
    assert result.artifacts == {}
    assert "(featviz could not write the report: [Errno 40] a folder in the report directory is a symbolic link" in (
        result.message
    )
    assert f"{tmp_path / 'r' / linked}" in result.message
