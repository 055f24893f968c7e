"""Unit tests of pytest_featviz.report: diff mosaics, the manifest, report.json, index.html, CI outputs, promote."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from pytest_featviz import report
from pytest_featviz.records import (
    DRIFT,
    DRIFTED,
    MATCH,
    MATCHED,
    MISSING,
    LayerResult,
    NoiseFloor,
    SnapshotResult,
)


def _layer(name: str, ssim: tuple[float, ...], verdict: str = DRIFT) -> LayerResult:
    n = len(ssim)
    return LayerResult(
        name, verdict, (1, n, 7, 7), (1, n, 7, 7), tuple(range(n)), ssim, (0.0,) * n, (0.0,) * n, threshold=0.9,
        stat_tolerance=0.05, rms_tolerance=0.03,
    )  # fmt: skip


def _result(test_id: str, outcome: str, *layers: LayerResult, name: str = "0") -> SnapshotResult:
    return SnapshotResult(test_id, name, f"/g/{test_id}/{name}", outcome, layers, message=f"msg {test_id}")


def test_diff_mosaic_upscales_a_7x7_map_and_draws_golden_current_difference() -> None:
    rng = np.random.default_rng(0)
    golden = rng.integers(0, 256, (3, 7, 7), dtype=np.uint8)
    current = golden.copy()
    current[1] = 255 - current[1]
    image = report.diff_mosaic("layer1", golden, current, [(1, 5, "SSIM 0.1200", True), (0, 2, "SSIM 0.9900", False)])
    scale = report.panel_scale((7, 7))
    assert scale == 10  # 7 px -> 70 px: a small map stays visible
    assert image.shape == (2 * report.LINE + report.GAP + 2 * (70 + report.GAP) + report.GAP, 110 + 3 * 70 + 16, 3)
    top, left = 2 * report.LINE + report.GAP, report.LABEL_WIDTH + report.GAP
    # Row 0 shows tile position 1 (the worst channel first): golden, then current, nearest-upscaled.
    golden_panel = image[top : top + 70, left : left + 70, 0]
    current_panel = image[top : top + 70, left + 74 : left + 144, 0]
    assert np.array_equal(golden_panel, np.kron(golden[1], np.ones((10, 10), dtype=np.uint8)))
    assert np.array_equal(current_panel, np.kron(current[1], np.ones((10, 10), dtype=np.uint8)))
    # Row 1 (an unchanged tile): the heatmap is the colormap's zero colour everywhere.
    row1 = top + 70 + report.GAP
    heat = image[row1 : row1 + 70, left + 148 : left + 218]
    assert (heat == np.array(report._VIRIDIS[0], dtype=np.uint8)).all()


def test_diff_mosaic_caps_rows_and_counts_the_rest() -> None:
    tiles = np.zeros((12, 32, 32), dtype=np.uint16)
    rows = [(i, i, "SSIM 0.5000", True) for i in range(12)]
    image = report.diff_mosaic("x", tiles, tiles + 1000, rows, bit_depth=16, max_rows=3)
    assert report.panel_scale((32, 32)) == 2
    assert image.shape[0] == 2 * report.LINE + report.GAP + 3 * (64 + report.GAP) + report.LINE + report.GAP
    footer = image[-report.LINE - report.GAP : -report.GAP]
    assert (footer != np.array(report.BACKGROUND, dtype=np.uint8)).any()  # the "... and 9 more" line is drawn


def test_remove_stale_removes_only_listed_files(tmp_path: Path) -> None:
    ours = tmp_path / "snapshots" / "t" / "diff-a.png"
    ours.parent.mkdir(parents=True)
    ours.write_bytes(b"x")
    theirs = tmp_path / "notes.txt"
    theirs.write_text("keep")
    outside = tmp_path.parent / f"{tmp_path.name}-outside.txt"
    outside.write_text("keep")
    report._record(tmp_path, [ours])
    (tmp_path / report.MANIFEST).open("a").write(f"../{outside.name}\n")
    assert report.remove_stale(tmp_path) == [ours.resolve()]
    assert not ours.exists() and not (tmp_path / "snapshots").exists()
    assert theirs.read_text() == "keep" and outside.read_text() == "keep"
    assert not (tmp_path / report.MANIFEST).exists()
    assert report.remove_stale(tmp_path) == []


def test_report_data_is_sorted_by_severity_with_a_fixed_key_order(tmp_path: Path) -> None:
    mild = _result("t.py::mild", DRIFTED, _layer("a", (0.95, 0.85)), _layer("b", (0.99,), MATCH))
    bad = _result("t.py::bad", DRIFTED, _layer("a", (0.99,), MATCH), _layer("b", (0.1, 0.95)))
    missing = _result("t.py::new", MISSING, LayerResult("a", "new", (1, 2), None))
    fine = _result("t.py::fine", MATCHED, _layer("a", (0.99,), MATCH))
    data = report.report_data([missing, mild, fine, bad], tmp_path, Path("/"), report_all=False)
    assert list(data) == ["format", "root", "run", "summary", "snapshots"]
    assert [s["test_id"] for s in data["snapshots"]] == ["t.py::bad", "t.py::mild", "t.py::new"]
    assert data["summary"]["checked"] == 4 and data["summary"]["drifted_tests"] == 2
    bad_entry = data["snapshots"][0]
    assert list(bad_entry) == [
        "test_id", "snapshot", "outcome", "first_drifted", "golden_dir", "current", "layers", "message"
    ]  # fmt: skip
    assert bad_entry["first_drifted"] == "b" and bad_entry["golden_dir"] == "g/t.py::bad/0"
    layer_b = bad_entry["layers"][1]
    assert layer_b["first_drifted"] and layer_b["min_ssim"] == 0.1 and layer_b["drifted_channels"] == [0]
    assert data["snapshots"][2]["layers"][0]["min_ssim"] is None  # no NaN in JSON
    json.dumps(data, allow_nan=False)
    everything = report.report_data([missing, mild, fine, bad], tmp_path, Path("/"), report_all=True)
    assert len(everything["snapshots"]) == 4


def test_a_layer_judged_by_its_noise_floor_shows_the_floor_and_its_tolerances(tmp_path: Path) -> None:
    fitted = dataclasses.replace(
        _layer("a", (0.999,)),
        stat_delta=(0.02,),
        threshold=0.996,
        stat_tolerance=0.012,
        rms_tolerance=0.06,
        noise=NoiseFloor(ssim=0.99999, rms_error=0.004, stat_delta=0.0015),
    )
    data = report.report_data([_result("t.py::fit", DRIFTED, fitted)], tmp_path, Path("/"), False)
    layer = data["snapshots"][0]["layers"][0]
    assert layer["noise_floor"] == {"ssim": 0.99999, "rms_error": 0.004, "stat_delta": 0.0015}
    assert (layer["threshold"], layer["stat_tolerance"], layer["rms_tolerance"]) == (0.996, 0.012, 0.06)
    page = report.render_index(data)
    assert (
        "tolerances fitted to its TF32 noise floor: SSIM &gt;= 0.996, statistics &lt;= 0.012, picture &lt;= 0.06"
        in page
    )


def test_a_layer_not_compared_has_no_tolerances_and_every_number_is_finite(tmp_path: Path) -> None:
    reshaped = LayerResult("head", DRIFT, (1, 4), (1, 8), (0, 1), reason="normalize changed from minmax to sigmoid")
    odd = dataclasses.replace(_layer("body", (float("nan"), 0.5)), stat_delta=(float("inf"), 0.0))
    data = report.report_data([_result("t.py::t", DRIFTED, reshaped, odd)], tmp_path, Path("/"), False)
    head, body = data["snapshots"][0]["layers"]
    assert (head["threshold"], head["stat_tolerance"], head["rms_tolerance"], head["min_ssim"]) == (None,) * 4
    assert (body["threshold"], body["stat_tolerance"], body["rms_tolerance"]) == (0.9, 0.05, 0.03)
    assert body["ssim"] == [None, 0.5] and body["stat_delta"] == [None, 0.0]
    json.dumps(data, allow_nan=False)  # what write_session_report writes: strict JSON
    assert "<td>normalize changed from minmax to sigmoid</td>" in report.render_index(data)


def test_index_escapes_every_name(tmp_path: Path) -> None:
    evil = "t.py::test[<script>alert(1)</script>&\"']"
    data = report.report_data(
        [_result(evil, DRIFTED, _layer("<b>layer</b>", (0.1,)), name="<i>n</i>")], tmp_path, Path("/"), False
    )
    page = report.render_index(data)
    assert "<script>alert" not in page and "<b>layer" not in page and "<i>n" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&amp;&quot;&#x27;" in page
    assert "http://" not in page and "https://" not in page  # opens with no network
    assert 'class="drift first"' in page and "first drift" in page


RUN = {
    "torch": "2.14.1",
    "mode": "check",
    "threshold": 0.99,
    "stat_tolerance": 0.03,
    "rms_tolerance": 0.15,
    "normalize": "minmax",
    "golden_dir": "/repo/golden",  # as the plugin gives it; the report makes it relative to the rootdir
}


def test_the_report_says_what_the_run_was_and_how_to_create_missing_goldens(tmp_path: Path) -> None:
    missing = [_result(f"t.py::new{i}", MISSING, LayerResult("a", "new", (1, 2), None)) for i in range(12)]
    data = report.report_data(
        [*missing, _result("t.py::bad", DRIFTED, _layer("a", (0.1,)))], tmp_path, Path("/repo"), False, RUN
    )
    assert data["run"] == {**RUN, "golden_dir": "golden"}
    line = (
        "torch 2.14.1, check mode, goldens in golden; configured tolerances: SSIM &gt;= 0.99, statistics change &lt;="
        " 0.03, picture change &lt;= 0.15"
    )
    assert line in report.render_index(data)
    text = report.step_summary(data, tmp_path / "index.html")
    assert "Missing goldens: create them locally with `pytest --featviz-update t.py::new0 " in text
    assert "t.py::new7` (and 2 more), review and commit them." in text  # ten ids, in the report's order
    assert "t.py::bad" not in text.split("Missing")[1]  # a drift is not accepted along with them
    assert "torch 2.14.1, check mode, goldens in golden; configured tolerances: SSIM >= 0.99" in text


def test_step_summary_is_bounded_markdown_without_images(tmp_path: Path) -> None:
    results = [_result(f"t.py::test_{i}|x", DRIFTED, _layer("a", (0.5,))) for i in range(400)]
    data = report.report_data(results, tmp_path, Path("/"), False)
    text = report.step_summary(data, tmp_path / "index.html")
    assert text.startswith("### featviz") and "![" not in text and "data:" not in text
    assert len(text.encode()) < report.STEP_SUMMARY_LIMIT
    assert "| … and 350 more |" in text and "test_0\\|x" in text
    assert report.step_summary(report.report_data([], tmp_path, Path("/"), False), tmp_path) == ""


def test_promote_copies_the_current_render_into_the_golden_dir(tmp_path: Path) -> None:
    current = tmp_path / "report" / "snapshots" / "t" / "current"
    current.mkdir(parents=True)
    sidecar = json.dumps({"layers": [{"name": "conv", "file": "conv.png"}]})
    (current / "snapshot.json").write_text(sidecar)
    (current / "conv.png").write_bytes(b"png")
    data = {"snapshots": [{"test_id": "t.py::a", "current": "snapshots/t/current", "golden_dir": "golden/t/a/0"}]}
    (tmp_path / "report" / "report.json").write_text(json.dumps(data))
    old = tmp_path / "golden" / "t" / "a" / "0"
    old.mkdir(parents=True)
    (old / "gone.png").write_bytes(b"old")
    assert report.promote(tmp_path / "report", tmp_path, select="nothing") == []
    assert report.promote(tmp_path / "report", tmp_path) == [(old, True)]
    assert (old / "conv.png").read_bytes() == b"png" and (old / "snapshot.json").read_text() == sidecar
    assert not (old / "gone.png").exists()
    assert report.promote(tmp_path / "report", tmp_path) == [(old, False)]  # again: nothing changes


def test_promote_never_writes_over_a_git_lfs_pointer(tmp_path: Path) -> None:
    current = tmp_path / "report" / "snapshots" / "t" / "current"
    current.mkdir(parents=True)
    (current / "snapshot.json").write_text(json.dumps({"layers": [{"name": "conv", "file": "conv.png"}]}))
    (current / "conv.png").write_bytes(b"png")
    data = {"snapshots": [{"test_id": "t.py::a", "current": "snapshots/t/current", "golden_dir": "golden/t/a/0"}]}
    (tmp_path / "report" / "report.json").write_text(json.dumps(data))
    golden = tmp_path / "golden" / "t" / "a" / "0"
    golden.mkdir(parents=True)
    pointer = b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 12\n"
    (golden / "conv.png").write_bytes(pointer)
    with pytest.raises(ValueError, match=r"conv\.png is a Git LFS pointer, not the file"):
        report.promote(tmp_path / "report", tmp_path)
    assert (golden / "conv.png").read_bytes() == pointer


@pytest.mark.parametrize("outcome", [MATCHED, "created"])
def test_reporter_leaves_passing_snapshots_alone(tmp_path: Path, outcome: str) -> None:
    from pytest_featviz.records import Evidence

    def fresh() -> tuple[str, dict[str, bytes]]:
        raise AssertionError("not rendered for a passing snapshot")

    result = _result("t.py::a", outcome, _layer("a", (0.99,), MATCH))
    evidence = Evidence(result, (), 8, fresh)
    assert report.Reporter(tmp_path / "r", Path("/g"))(evidence) is result
    assert not (tmp_path / "r").exists()
