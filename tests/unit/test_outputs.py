"""Unit tests of pytest_featviz.outputs: index.html and the GitHub step summary, rendered from report data."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from pytest_featviz import outputs, report
from pytest_featviz.records import CREATED, DRIFTED, MATCHED, MISSING, UNREADABLE, UPDATED, LayerResult, SnapshotResult
from unit.test_report import FITTED, RESHAPED, RUN, layer_record, snapshot_record


def test_the_index_shows_the_tolerances_a_layer_judged_by_its_noise_floor_was_held_to(tmp_path: Path) -> None:
    data = report.report_data([snapshot_record("t.py::fit", DRIFTED, FITTED)], tmp_path, Path("/"), False)
    page = outputs.render_index(data)
    assert (
        "tolerances fitted to its TF32 noise floor: SSIM &gt;= 0.996, statistics &lt;= 0.012, picture &lt;= 0.06"
        in page
    )


def test_the_index_says_why_a_layer_was_not_compared(tmp_path: Path) -> None:
    data = report.report_data([snapshot_record("t.py::t", DRIFTED, RESHAPED)], tmp_path, Path("/"), False)
    assert "<td>normalize changed from minmax to sigmoid</td>" in outputs.render_index(data)


def test_the_index_shows_a_score_beyond_its_limit_with_the_digits_that_tell_them_apart(tmp_path: Path) -> None:
    # a drifted layer read min SSIM "1.0000" beside its threshold 0.99999, and a statistics-only drift "0.0011" with
    # no tolerance to compare it with
    layer = dataclasses.replace(
        layer_record("a", (0.999984, 1.0)), threshold=0.99999, stat_delta=(0.00106272, 0.0), stat_tolerance=0.0010627
    )
    data = report.report_data([snapshot_record("t.py::t", DRIFTED, layer)], tmp_path, Path("/"), False)
    page = outputs.render_index(data)
    assert "<td>0.99998</td><td>1.0000</td><td>0.99999</td><td>0.00106272 &gt; 0.0010627</td><td>0.0000</td>" in page


def test_the_outputs_show_an_unreadable_golden_with_the_error_its_test_failed_with(tmp_path: Path) -> None:
    unreadable = SnapshotResult(
        "t.py::t", "0", "/repo/golden/t/t/0", UNREADABLE, message="golden sidecar <x> is not valid JSON\nre-create it"
    )
    data = report.report_data([unreadable], tmp_path, Path("/repo"), False)
    page = outputs.render_index(data)
    assert '<section class="test unreadable" data-test="t.py::t">' in page
    assert (
        "<code>golden/t/t/0/</code> could not be read:</p><pre>golden sidecar &lt;x&gt; is not valid JSON\nre-create it"
        in (page)
    )
    assert "<table>" not in page  # no layer was compared
    line = "1 snapshot(s) checked: 0 matched, 0 drifted (0 test(s), 0 layer(s)), 0 missing, 1 unreadable"
    assert line in page
    assert outputs.step_summary(data, tmp_path / "index.html").splitlines()[2:7] == [
        line + ".",
        "",
        "| test | snapshot | outcome | first drifted layer | drifted layers | worst score |",
        "|---|---|---|---|---|---|",
        "| `t.py::t` | `0` | unreadable | – | – | – |",
    ]
    # none unreadable: the sentence is as it always was
    assert outputs.checked_line(report.summary_counts([])).endswith("0 missing")


def test_index_escapes_every_name(tmp_path: Path) -> None:
    evil = "t.py::test[<script>alert(1)</script>&\"']"
    data = report.report_data(
        [snapshot_record(evil, DRIFTED, layer_record("<b>layer</b>", (0.1,)), name="<i>n</i>")],
        tmp_path,
        Path("/"),
        False,
    )
    page = outputs.render_index(data)
    assert "<script>alert" not in page and "<b>layer" not in page and "<i>n" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&amp;&quot;&#x27;" in page
    assert "http://" not in page and "https://" not in page  # opens with no network
    assert 'class="drift first"' in page and "first drift" in page


def test_the_outputs_say_what_the_run_was_and_how_to_create_missing_goldens(tmp_path: Path) -> None:
    missing = [snapshot_record(f"t.py::new{i}", MISSING, LayerResult("a", "new", (1, 2), None)) for i in range(12)]
    data = report.report_data(
        [*missing, snapshot_record("t.py::bad", DRIFTED, layer_record("a", (0.1,)))],
        tmp_path,
        Path("/repo"),
        False,
        RUN,
    )
    line = (
        "torch 2.14.1, check mode, goldens in golden; configured tolerances: SSIM &gt;= 0.99, statistics change &lt;="
        " 0.03, picture change &lt;= 0.15"
    )
    assert line in outputs.render_index(data)
    command = "pytest --featviz-create -c ci.ini " + " ".join(f"t.py::new{i}" for i in range(10))
    text = outputs.step_summary(data, tmp_path / "index.html", command)  # as session.create_missing makes it
    assert (
        f"Missing goldens: create them locally with\n\n```console\n{command}\n```\n\nthen review and commit them."
        in text
    )
    assert "Missing goldens" not in outputs.step_summary(data, tmp_path / "index.html")
    assert "torch 2.14.1, check mode, goldens in golden; configured tolerances: SSIM &gt;= 0.99" in text


def test_the_step_summary_gives_commands_and_ids_verbatim(tmp_path: Path) -> None:
    """The create command was cut at 400 characters (an open quote, tests missing) and changed on the way: a
    backtick became a quote, two spaces one, and a pipe got a backslash that GitHub shows outside a table."""
    ids = ["t.py::test_m[a|b]", "t.py::test_m[c`d]", "t.py::test_m[two  spaces]"]
    ids += [f"t.py::test_backbone_variants[resnet18-imagenet-variant-{i:02d}-channels_last]" for i in range(8)]
    missing = [snapshot_record(i, MISSING, LayerResult("a", "new", (1, 2), None)) for i in ids]
    data = report.report_data(missing, tmp_path, Path("/repo"), False)
    command = "pytest --featviz-create " + " ".join(f"'{i}'" for i in ids)
    text = outputs.step_summary(data, tmp_path / "index.html", command)
    assert f"\n```console\n{command}\n```\n" in text and len(command) > 400
    rows = [line for line in text.splitlines() if line.startswith("| `") and "test_m" in line]
    assert rows == [
        "| `t.py::test_m[a\\|b]` | `0` | missing | – | – | – |",  # escaped in a table cell, where GitHub reads it back
        "| ``t.py::test_m[c`d]`` | `0` | missing | – | – | – |",
        "| `t.py::test_m[two  spaces]` | `0` | missing | – | – | – |",
    ]
    unreadable = SnapshotResult("t.py::t", "0", "/repo/golden/t/a|b/0", UNREADABLE, message="cannot read")
    listed = outputs.step_summary(report.report_data([unreadable], tmp_path, Path("/repo"), False), tmp_path)
    assert "- `golden/t/a|b/0`: cannot read" in listed  # outside a table a backslash would show


def test_the_step_summary_shows_snapshot_and_layer_names_as_they_are(tmp_path: Path) -> None:
    """The snapshot and first drifted layer cells were prose: GitHub rendered ``<b>`` as bold and ``&amp;`` as ``&``,
    and a backtick became a quote."""
    record = snapshot_record("t.py::t", DRIFTED, layer_record("<b>l`1</b>&amp;", (0.1,)), name="we|rd`name <b>&amp;")
    text = outputs.step_summary(report.report_data([record], tmp_path, Path("/"), False), tmp_path / "index.html")
    row = next(line for line in text.splitlines() if line.startswith("| `t.py::t`"))
    assert row.split(" | ")[1:4] == ["``we\\|rd`name <b>&amp;``", "drifted", "``<b>l`1</b>&amp;``"]


def test_the_step_summary_s_prose_reads_as_written() -> None:
    """Found by QA: a damaged golden's message in the job summary rendered test_x[__dunder__] as bold "dunder", and
    the re-create command copied from the page named another test."""
    text = (
        "golden/t/test_x[__dunder__]/0/a*b.png: re-create it with:  pytest --featviz-update 't.py::test_x[__dunder__]'"
    )
    assert outputs._md(text, 1000) == (
        "golden/t/test\\_x\\[\\_\\_dunder\\_\\_\\]/0/a\\*b.png: re-create it with: pytest --featviz-update"
        " 't.py::test\\_x\\[\\_\\_dunder\\_\\_\\]'"
    )
    assert outputs._md("a|b ~c~ \\d <e>&f", 1000) == "a\\|b \\~c\\~ \\\\d &lt;e&gt;&amp;f"


def test_step_summary_is_bounded_markdown_without_images(tmp_path: Path) -> None:
    results = [snapshot_record(f"t.py::test_{i}|x", DRIFTED, layer_record("a", (0.5,))) for i in range(400)]
    data = report.report_data(results, tmp_path, Path("/"), False)
    text = outputs.step_summary(data, tmp_path / "index.html")
    assert text.startswith("### featviz") and "![" not in text and "data:" not in text
    assert len(text.encode()) < outputs.STEP_SUMMARY_LIMIT
    assert "| … and 350 more |" in text and "test_0\\|x" in text
    assert outputs.step_summary(report.report_data([], tmp_path, Path("/"), False), tmp_path) == ""


def test_a_test_whose_snapshots_an_update_wrote_is_coloured_as_written_not_as_matched(tmp_path: Path) -> None:
    """--featviz-report-all in an update run: a test whose only other snapshot matched kept the green "matched" border,
    and its updated and created snapshots' outcome badges were drift red."""
    snapshots = [
        SnapshotResult("t.py::t", "0", "/repo/golden/t/t/0", MATCHED),
        SnapshotResult("t.py::t", "1", "/repo/golden/t/t/1", UPDATED),
        SnapshotResult("t.py::u", "0", "/repo/golden/t/u/0", CREATED),
    ]
    page = outputs.render_index(report.report_data(snapshots, tmp_path, Path("/repo"), True))
    assert '<section class="test updated" data-test="t.py::t">' in page
    assert '<section class="test created" data-test="t.py::u">' in page
    assert ".updated .outcome, .created .outcome { background: #37b; }" in page


def test_the_step_summary_and_junit_name_the_score_that_failed(tmp_path: Path) -> None:
    """A statistics-only drift read "min SSIM 1.0000" in the job summary and in JUnit, as if nothing had changed."""
    statistics = dataclasses.replace(layer_record("pool", (1.0, 1.0)), stat_delta=(0.089, 0.01), stat_tolerance=0.03)
    picture = dataclasses.replace(layer_record("conv", (0.95,)), rms_error=(0.2,), rms_tolerance=0.15)
    ssim = layer_record("head", (0.5,))  # SSIM 0.5 against 0.9: further past its limit than a picture change of 0.2
    records = [
        snapshot_record("t.py::stats", DRIFTED, statistics),
        snapshot_record(
            "t.py::both", DRIFTED, picture, dataclasses.replace(ssim, rms_error=(0.2,), rms_tolerance=0.15)
        ),
        snapshot_record("t.py::reshaped", DRIFTED, RESHAPED),
    ]
    rows = outputs.step_summary(report.report_data(records, tmp_path, Path("/"), False), tmp_path / "index.html")
    cells = {line.split(" | ")[0]: line.split(" | ")[-1] for line in rows.splitlines() if line.startswith("| `")}
    assert cells == {
        "| `t.py::stats`": "statistics change 0.089 &gt; 0.03 |",
        "| `t.py::both`": "SSIM 0.5000 &lt; 0.9 |",
        "| `t.py::reshaped`": "– |",  # not compared channel by channel: its reason is in the report
    }
    properties = dict(outputs.junit_properties(records[:1]))
    assert (properties["featviz:0:min_ssim"], properties["featviz:0:worst_score"]) == (
        "1.0000",
        "statistics change 0.089 > 0.03",
    )
    assert "featviz:0:worst_score" not in dict(outputs.junit_properties(records[2:]))
    # a dead channel come alive: three significant digits, as in the message (not "500000000000.000")
    alive = dataclasses.replace(statistics, stat_delta=(5e11, 0.01))
    assert dict(outputs.junit_properties([snapshot_record("t.py::alive", DRIFTED, alive)]))[
        "featviz:0:worst_score"
    ] == ("statistics change 5e+11 > 0.03")
    page = outputs.render_index(
        report.report_data([snapshot_record("t.py::alive", DRIFTED, alive)], tmp_path, Path("/"), False)
    )
    assert "<td>5e+11 &gt; 0.03</td>" in page
    # a non-finite score (NaN in the activation) is no worst score; the others still are
    nan = dataclasses.replace(statistics, stat_delta=(math.nan, 0.01))
    assert dict(outputs.junit_properties([snapshot_record("t.py::nan", DRIFTED, nan)]))["featviz:0:worst_score"] == (
        "picture change 0.000 <= 0.03"
    )
