"""What a reader sees of a session's drift: the static ``index.html`` and the GitHub job summary, both rendered
from the content of ``report.json``, and per test the JUnit properties, the Jenkins / Azure DevOps attachment lines
and the pytest-html extras, taken from its result records.

Everything here turns records or report data into text (or pytest-html extras); which files are written, and where,
is :mod:`pytest_featviz.report`'s business. Nothing heavy is imported; pytest-html only when its extras are asked for.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import quote

from pytest_featviz.records import (
    CREATED,
    DRIFTED,
    FAILING,
    MATCHED,
    MISSING,
    SEVERITY,
    UNREADABLE,
    UPDATED,
    SnapshotResult,
    broken_score,
    display_path,
    printable,
    score_beyond,
)

STEP_SUMMARY_ROWS = 50
UNREADABLE_ROWS = 20  # of the job summary's list of goldens that could not be read, each with its whole error
UNCHECKED_SHOWN = 50  # of the goldens the failing tests did not reach, on the page and in the job summary
STEP_SUMMARY_LIMIT = 64 * 1024  # GitHub accepts 1 MiB per step; stay far below it


# ------------------------------------------------------------------------------------------------ index.html


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _src(path: str) -> str:
    return _e(quote(path, safe="/"))


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def _scores(layer: dict[str, Any]) -> tuple[str, str, str, str]:
    """The cells of a layer's lowest SSIM, threshold, largest statistics change and largest picture change. A score
    beyond its limit has the digits that tell it apart from that limit (a drifted layer read "1.0000" against a
    threshold of 0.99999), and the statistics and picture changes, which have no column for their tolerance, name it
    (they differ per layer, by marker or noise floor)."""
    ssim, threshold = _cell(layer["min_ssim"]), "–" if layer["threshold"] is None else f"{layer['threshold']:g}"
    if layer["min_ssim"] is not None and layer["threshold"] is not None and layer["min_ssim"] < layer["threshold"]:
        ssim, threshold = score_beyond(layer["min_ssim"], layer["threshold"], 4)
    changes = []
    for key, limit in (("max_stat_delta", "stat_tolerance"), ("max_rms_error", "rms_tolerance")):
        value, tolerance = layer[key], layer[limit]
        if value is not None and tolerance is not None and value > tolerance:
            changes.append(html.escape(broken_score(value, tolerance, 4, above=True)))
        else:
            changes.append(_cell(value))
    return ssim, threshold, changes[0], changes[1]


def worst_score(layers: Iterable[Mapping[str, Any]]) -> str | None:
    """The score of ``layers`` (report entries) that went furthest towards or past its limit, with that limit:
    ``statistics change 0.089 > 0.03``, ``SSIM 0.9864 < 0.99``, ``picture change 0.21 > 0.15``; ``None`` when none
    was compared channel by channel. A statistics-only drift read "min SSIM 1.0000", as if nothing had changed."""
    found: tuple[float, str] | None = None
    for layer in layers:
        if layer["threshold"] is None:
            continue
        candidates = [
            (layer["max_stat_delta"], layer["stat_tolerance"], "statistics change"),
            (layer["max_rms_error"], layer["rms_tolerance"], "picture change"),
        ]
        if layer["min_ssim"] is not None:
            candidates.append((1.0 - layer["min_ssim"], 1.0 - layer["threshold"], "SSIM"))
        for value, limit, what in candidates:
            if value is None or limit is None:  # not finite (NaN in the activation, which its own message names)
                continue
            share = value / limit if limit > 0 else (math.inf if value > 0 else 0.0)
            if what == "SSIM":
                score, limit_shown = layer["min_ssim"], layer["threshold"]
                broken = broken_score(score, limit_shown, 4, above=False)
                text = f"SSIM {broken if value > limit else f'{score:.4f} >= {limit_shown:g}'}"
            else:
                text = f"{what} {broken_score(value, limit, 3, True) if value > limit else f'{value:.3f} <= {limit:g}'}"
            if found is None or share > found[0]:
                found = (share, text)
    return None if found is None else found[1]


def _noise_note(layer: dict[str, Any]) -> str:
    """Under ``reason``: the tolerances a layer judged by its noise floor was held to (they differ per layer)."""
    if layer["noise_floor"] is None:
        return ""
    return (
        f"tolerances fitted to its TF32 noise floor: SSIM >= {layer['threshold']:g},"
        f" statistics <= {layer['stat_tolerance']:g}, picture <= {layer['rms_tolerance']:g}"
    )


def _snapshot_html(snapshot: dict[str, Any]) -> str:
    if snapshot["outcome"] == UNREADABLE:  # no layers were compared: the error, which says why and what to do
        return (
            f'<div class="snapshot {UNREADABLE}"><h3>snapshot {_e(snapshot["snapshot"])}'
            f' <span class="outcome">{UNREADABLE}</span></h3><p>golden <code>{_e(snapshot["golden_dir"])}/</code>'
            f" could not be read:</p><pre>{_e(snapshot['message'])}</pre></div>"
        )
    rows, figures = [], []
    for layer in snapshot["layers"]:
        first = layer["first_drifted"]
        drifted = len(layer["drifted_channels"])
        badge = ' <span class="badge">first drift</span>' if first else ""
        ssim, threshold, statistics, picture = _scores(layer)
        rows.append(
            f'<tr class="{_e(layer["verdict"])}{" first" if first else ""}">'
            f"<td>{_e(layer['layer'])}{badge}</td>"
            f"<td>{_e(layer['verdict'])}</td><td>{_e('x'.join(map(str, layer['shape'] or [])) or '–')}</td>"
            f"<td>{drifted} / {len(layer['channels'])}</td><td>{ssim}</td>"
            f"<td>{_cell(layer['mean_ssim'])}</td><td>{threshold}</td><td>{statistics}</td><td>{picture}</td>"
            f"<td>{_e(layer['reason'] or _noise_note(layer))}</td></tr>"
        )
        for kind in ("mosaic", "current"):
            if layer[kind] and (kind == "mosaic" or _current_shown(snapshot["outcome"], layer["mosaic"] is not None)):
                caption = f"{'diff' if kind == 'mosaic' else 'current render'}: layer {layer['layer']}"
                figures.append(
                    f'<figure class="{kind}"><a href="{_src(layer[kind])}"><img src="{_src(layer[kind])}"'
                    f' alt="{_e(caption)}"></a><figcaption>{_e(caption)}</figcaption></figure>'
                )
    current = (
        f'<p class="current">current render: <a href="{_src(snapshot["current"])}/snapshot.json">'
        f"{_e(snapshot['current'])}/</a> &rarr; golden <code>{_e(snapshot['golden_dir'])}/</code></p>"
        if snapshot["current"]
        else ""
    )
    if snapshot["outcome"] in (CREATED, UPDATED):  # nothing to promote: this run wrote its golden
        written = snapshot.get("update_dir") or snapshot["golden_dir"]
        current = f'<p class="current">{_e(snapshot["outcome"])} by this run: golden <code>{_e(written)}/</code></p>'
    return (
        f'<div class="snapshot {_e(snapshot["outcome"])}"><h3>snapshot {_e(snapshot["snapshot"])}'
        f' <span class="outcome">{_e(_outcome(snapshot))}</span></h3>'
        "<table><thead><tr><th>layer</th><th>verdict</th><th>shape</th><th>drifted channels</th><th>min SSIM</th>"
        "<th>mean SSIM</th><th>threshold</th><th>max stat &Delta;</th><th>max RMS</th><th>reason</th></tr></thead>"
        f'<tbody>{"".join(rows)}</tbody></table>{current}<div class="figures">{"".join(figures)}</div>'
        f"<details><summary>message</summary><pre>{_e(snapshot['message'])}</pre></details></div>"
    )


def _current_shown(outcome: str, mosaic: bool) -> bool:
    """Whether a layer's current picture is shown (page, pytest-html): where there is nothing it was compared with, a
    missing or created snapshot's, and an updated one's layer without a diff mosaic (new, reshaped, or its golden
    picture damaged); a drifted snapshot's current render is linked whole, for promote."""
    return outcome in (MISSING, CREATED) or (outcome == UPDATED and not mosaic)


def _outcome(snapshot: Mapping[str, Any]) -> str:
    """A snapshot's outcome as shown: ``drifted (xfail)`` where its test expected to fail, ``drifted (caught)`` where
    its test caught the error."""
    if snapshot.get("xfail"):
        return f"{snapshot['outcome']} (xfail)"
    return f"{snapshot['outcome']} (caught)" if snapshot.get("caught") else str(snapshot["outcome"])


def _worst_outcome(snapshots: Sequence[dict[str, Any]]) -> str:
    outcomes = {snapshot["outcome"] for snapshot in snapshots}
    return next((o for o in SEVERITY if o in outcomes), MATCHED)


def render_index(data: dict[str, Any]) -> str:
    """The static ``index.html`` of a report: no network, every name escaped, tests most severe first (the order
    of ``report.json``), a filter box by test name (also read from ``#filter=...`` in the address)."""
    tests: dict[str, list[dict[str, Any]]] = {}
    for snapshot in data["snapshots"]:
        tests.setdefault(snapshot["test_id"], []).append(snapshot)
    sections = [
        # the test's worst outcome colours its border (--featviz-report-all also lists tests that matched)
        f'<section class="test {_e(_worst_outcome(snapshots))}" data-test="{_e(test_id.lower())}">'
        f"<h2>{_e(test_id)}</h2>" + "".join(_snapshot_html(s) for s in snapshots) + "</section>"
        for test_id, snapshots in tests.items()
    ]
    summary = checked_line(data["summary"])
    written = [f"{data['summary'][o]} {o}" for o in (CREATED, UPDATED) if data["summary"].get(o)]
    if written:  # --featviz-create, --featviz-update
        summary += ", " + ", ".join(written)
    if data.get("run"):
        summary += ". " + run_line(data["run"])
    unchecked = data.get("unchecked") or []
    if unchecked:  # what the page does not show, above what it does
        shown = ", ".join(f"<code>{_e(path)}</code>" for path in unchecked[:UNCHECKED_SHOWN])
        more = (
            f" and {len(unchecked) - UNCHECKED_SHOWN} more (report.json lists them)"
            if len(unchecked) > UNCHECKED_SHOWN
            else ""
        )
        sections.insert(0, f'<p class="unchecked">{_e(unchecked_sentence(len(unchecked)))}: {shown}{more}</p>')
    template = Template(resources.files("pytest_featviz").joinpath("templates/index.html").read_text("utf-8"))
    return template.substitute(summary=_e(summary), tests=len(tests), body="\n".join(sections))


def unchecked_sentence(count: int) -> str:
    """What the terminal, the page and the job summary say of the goldens the failing tests did not reach."""
    return (
        f"{count} golden snapshot(s) of the failing tests were not checked: a test stops at its first drifted,"
        " missing or unreadable snapshot (accept that drift, create or repair that golden, then run again)"
    )


def checked_line(counts: Mapping[str, int], creating: bool = False) -> str:
    """The check's counts as one sentence (terminal, page, job summary), from ``report.summary_counts``:
    ``3 snapshot(s) checked: 1 matched, 2 drifted (2 test(s), 3 layer(s); 1 in xfail tests, as expected), 0 missing``,
    and ``, 1 unreadable`` where a golden could not be read. ``creating`` (``--featviz-create``, which creates the
    missing goldens): the missing are counted only when some are (a golden it could not write)."""
    xfail, caught, unreadable = (
        counts.get("drifted_xfail", 0),
        counts.get("drifted_caught", 0),
        counts.get(UNREADABLE, 0),
    )
    return (
        f"{counts['checked']} snapshot(s) checked: {counts[MATCHED]} matched, {counts[DRIFTED]} drifted"
        f" ({counts['drifted_tests']} test(s), {counts['drifted_layers']} layer(s)"
        + (f"; {xfail} in xfail tests, as expected" if xfail else "")
        + (f"; {caught} caught by their tests" if caught else "")
        + ")"
        + (f", {counts[MISSING]} missing" if counts[MISSING] or not creating else "")
        + (f", {unreadable} unreadable" if unreadable else "")
    )


def run_line(run: Mapping[str, Any]) -> str:
    """``torch 2.14.1, check mode, goldens in golden; configured tolerances ...``: what the run was, in words; first
    that it stopped before its end, where it did (the report holds only the tests it reached)."""
    stopped = "the run stopped before its end (Ctrl-C, a cancelled job, -x): tests after that did not run; "
    return (
        f"{stopped if run.get('stopped') else ''}torch {run['torch']}, {run['mode']} mode, goldens in"
        f" {run['golden_dir']}; configured tolerances: SSIM >= {run['threshold']:g}, statistics change <="
        f" {run['stat_tolerance']:g}, picture change <= {run['rms_tolerance']:g}"
        " (a marker or call may set others; each layer shows the ones it was judged by)"
    )


# -------------------------------------------------------------------------- job summary, JUnit, pytest-html


_MARKDOWN = re.compile(r"([\\*_~\[\]|])")  # what markdown reads as emphasis, a link or a table cell's end


def _md(text: str, limit: int = 120) -> str:
    """``text`` as markdown prose on one line, reading as written: a backtick would open a code span (it becomes a
    quote), ``*``, ``_`` and ``~`` emphasis (``test_x[__dunder__]`` read as bold), brackets a link and a pipe end a
    table cell (each is escaped with a backslash), and GitHub renders ``<b>`` and ``&amp;`` as HTML (escaped after
    shortening, so that no entity or escape is cut)."""
    text = " ".join(str(text).split()).replace("`", "'")
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return _MARKDOWN.sub(r"\\\1", text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _fence(text: str, least: int = 1) -> str:
    """Backticks that no run of backticks in ``text`` closes: one more than its longest run, ``least`` at least."""
    longest = max((len(run) for run in re.findall("`+", text)), default=0)
    return "`" * max(least, longest + 1)


def _code(text: str, limit: int | None = None, *, cell: bool = False) -> str:
    """``text`` verbatim as a markdown code span (a test id, a path), shortened to ``limit`` with "…" where one is
    given; in a table ``cell`` a pipe is escaped, which GitHub reads back there, and only there, even in code."""
    text = " ".join(str(text).splitlines())  # a code span is one line; spaces inside it stay as they are
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    if cell:
        text = text.replace("|", "\\|")
    fence = _fence(text)
    pad = " " if text.startswith(("`", " ")) or text.endswith(("`", " ")) else ""  # one space each side is dropped
    return f"{fence}{pad}{text}{pad}{fence}"


def step_summary(
    data: dict[str, Any], index: Path | None, create: str | None = None, unwritten: str | None = None
) -> str:
    """A compact markdown table of the drifted, missing and unreadable snapshots for ``GITHUB_STEP_SUMMARY``: no images
    (GitHub strips data URIs), at most ``STEP_SUMMARY_ROWS`` rows and ``STEP_SUMMARY_LIMIT`` bytes.

    ``create``: the command that creates the missing goldens, as the terminal summary says it
    (``session.create_missing``: the run's golden options, no drift accepted).
    ``index``: the report's page, named at the end; ``None`` where it could not be written, and ``unwritten`` says
    why."""
    counts = data["summary"]
    lines = [
        "### featviz: feature-map drift",
        "",
        checked_line(counts) + (f", {counts[CREATED]} created (--featviz-create)" if counts.get(CREATED) else "") + ".",
        "",
        "| test | snapshot | outcome | first drifted layer | drifted layers | worst score |",
        "|---|---|---|---|---|---|",
    ]
    shown = [s for s in data["snapshots"] if s["outcome"] in FAILING]
    if not shown:
        return ""
    for snapshot in shown[:STEP_SUMMARY_ROWS]:
        compared = snapshot["outcome"] == DRIFTED  # a missing snapshot has nothing it drifted from
        drifted = [layer for layer in snapshot["layers"] if layer["verdict"] != "match"] if compared else []
        first = _code(snapshot["first_drifted"], 60, cell=True) if snapshot["first_drifted"] else "–"
        lines.append(
            f"| {_code(snapshot['test_id'], 120, cell=True)} | {_code(snapshot['snapshot'], 40, cell=True)} |"
            f" {_outcome(snapshot)} | {first} | {len(drifted) if compared else '–'} |"
            f" {_md(worst_score(drifted) or '–', 60)} |"
        )
    if len(shown) > STEP_SUMMARY_ROWS:
        lines.append(f"| … and {len(shown) - STEP_SUMMARY_ROWS} more | | | | | |")
    unreadable = [s for s in shown if s["outcome"] == UNREADABLE]
    if unreadable:  # why each could not be read, and the fix its message gives (git lfs pull, --featviz-update)
        lines += ["", "Goldens that could not be read:", ""]
        lines += [
            f"- {_code(s['golden_dir'], 200)}: {_md('; '.join(s['message'].splitlines()), 1000)}"
            for s in unreadable[:UNREADABLE_ROWS]
        ]
        if len(unreadable) > UNREADABLE_ROWS:
            lines.append(f"- … and {len(unreadable) - UNREADABLE_ROWS} more (in the report)")
    unchecked = data.get("unchecked") or []
    if unchecked:
        listed = ", ".join(_code(path, 200) for path in unchecked[:UNCHECKED_SHOWN])
        more = (
            f" and {len(unchecked) - UNCHECKED_SHOWN} more (in the report)" if len(unchecked) > UNCHECKED_SHOWN else ""
        )
        lines += ["", f"{unchecked_sentence(len(unchecked))}: {listed}{more}."]
    if create is not None:
        # the command as the terminal prints it, whole: a fenced block keeps its quotes, backticks and spaces
        fence = _fence(create, 3)
        lines += ["", "Missing goldens: create them locally with", "", f"{fence}console", create, fence, ""]
        lines.append("then review and commit them.")
    if data.get("run"):
        lines += ["", _md(run_line(data["run"]), 400) + "."]
    if index is not None:
        where = (
            f"Diff mosaics and current renders: {_code(display_path(index), 200)} (upload the report directory as a"
            " build artifact, for example with `actions/upload-artifact`, to look at them)."
        )
    else:  # the table needs nothing from the report directory; the pictures do
        where = f"No diff mosaics: featviz {_md(unwritten or 'could not write the report', 600)}."
    lines += ["", where, ""]
    text = printable("\n".join(lines))  # a test id's lone surrogates
    encoded = text.encode("utf-8")
    return text if len(encoded) <= STEP_SUMMARY_LIMIT else encoded[:STEP_SUMMARY_LIMIT].decode("utf-8", "ignore")


def append_step_summary(path: Path, text: str) -> None:
    """Append ``text`` to the job summary file GitHub names in ``GITHUB_STEP_SUMMARY`` (nothing when empty)."""
    if not text:
        return
    with open(path, "a", encoding="utf-8") as stream:
        stream.write(text)


def junit_properties(results: Iterable[SnapshotResult]) -> list[tuple[str, object]]:
    """``(name, value)`` pairs for the JUnit XML ``<properties>`` of a test: per snapshot its outcome, the lowest
    SSIM of the layers compared, the first drifted layer, and every file of its report."""
    properties: list[tuple[str, object]] = []
    for r in results:
        properties.append((f"featviz:{r.name}:outcome", r.outcome))
        ssims = [layer.min_ssim for layer in r.layers if layer.ssim]
        if ssims:
            properties.append((f"featviz:{r.name}:min_ssim", f"{min(ssims):.4f}"))
        from pytest_featviz.report import score_fields  # report imports this module

        worst = worst_score(score_fields(layer) for layer in r.drifted_layers)
        if worst is not None:
            properties.append((f"featviz:{r.name}:worst_score", worst))
        if r.first_drifted is not None:
            properties.append((f"featviz:{r.name}:first_drifted", r.first_drifted))
        properties.extend((f"featviz:{r.name}:{role}", path) for role, path in sorted(r.artifacts.items()))
    return properties


def attachment_lines(results: Iterable[SnapshotResult]) -> str:
    """``[[ATTACHMENT|path]]`` lines (absolute paths) of the pictures, which Jenkins and Azure DevOps pick up
    from a test's output in the JUnit XML."""
    return "".join(
        f"[[ATTACHMENT|{Path(path).resolve()}]]\n"
        for r in results
        for role, path in sorted(r.artifacts.items())
        if path.endswith(".png")
    )


def html_extras(results: Iterable[SnapshotResult]) -> list[Any]:
    """pytest-html extras: the diff mosaics (and the current pictures of missing and created snapshots, and of an
    updated one's layers without a mosaic) as inline PNGs."""
    from pytest_html import extras

    found = []
    for result in results:
        for role, path in sorted(result.artifacts.items()):
            shown = role.startswith("current:") and _current_shown(
                result.outcome, f"mosaic:{role.removeprefix('current:')}" in result.artifacts
            )
            if role.startswith("mosaic:") or shown:
                content = base64.b64encode(Path(path).read_bytes()).decode("ascii")
                found.append(extras.png(content, name=f"featviz {result.name} {role}"))
    return found
