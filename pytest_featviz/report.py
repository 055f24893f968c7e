"""The drift report's files: each snapshot's diff mosaics and current render, the session's ``report.json`` and
``index.html``.

A :class:`Reporter` receives each check's :class:`~pytest_featviz.records.Evidence` (in the process that ran the
test, an xdist worker included), writes that snapshot's files under ``<report dir>/snapshots/`` and returns the
result with ``artifacts`` and the mosaic paths in its message. At session end the controller merges the result
records into ``report.json`` and ``index.html``. Every file is written through the manifest
(:mod:`pytest_featviz.manifest`), so the next session removes exactly those files and nothing else. The pictures are
drawn by :mod:`pytest_featviz.diffmosaic` and the page and CI texts rendered by :mod:`pytest_featviz.outputs`; numpy
and Pillow are imported only when a picture is drawn.
"""

from __future__ import annotations

import json
import math
import os
import shlex
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from pytest_featviz.diffmosaic import channel_label, diff_mosaic, encode_rgb
from pytest_featviz.manifest import only_ours, refuse_foreign, remove_listed, write_ours, write_recorded
from pytest_featviz.outputs import render_index
from pytest_featviz.records import (
    CREATED,
    DRIFTED,
    FAILING,
    MISSING,
    OUTCOMES,
    SEVERITY,
    UPDATED,
    Evidence,
    LayerResult,
    SnapshotResult,
    display_path,
)

REPORT_FORMAT = 1
REPORT_JSON = "report.json"
INDEX_HTML = "index.html"
GITIGNORE = ".gitignore"
GITIGNORE_TEXT = "# Written by pytest-featviz: the drift report is evidence of one run, not something to commit.\n*\n"
SNAPSHOTS = "snapshots"
MOSAICS_LISTED = 10  # diff mosaic paths a failure message lists; the others are in the same folder
CURRENT = "current"


# ----------------------------------------------------------------------------------------------- per snapshot


def wanted(result: SnapshotResult, report_all: bool) -> bool:
    """Whether ``result`` is in the report: drifted, missing and unreadable snapshots (the last with no files of their
    own), and with ``--featviz-report-all`` every snapshot checked: the matched ones, and those this run created or
    updated (``--featviz-create``, ``--featviz-update``), whose new goldens are the ones to review."""
    return report_all or result.outcome in FAILING


class Reporter:
    """The ``reporter`` of :class:`~pytest_featviz.fixture.FeatureSnapshot`: ``Evidence -> SnapshotResult``.

    Writes the diff mosaic of each drifted layer and the current render of a drifted or missing snapshot into
    ``<report_dir>/snapshots/<the snapshot's path below the golden directory>/``; with ``report_all`` also those of
    a snapshot this run updated (the golden it replaced against the current render) and the current pictures of one
    it created or updated, without the sidecar that promote would write (the golden directory holds them already).
    ``run``: for a run of a repeating plugin (``test_a[2-3]``, whose goldens are ``test_a``'s), the test's name in
    the golden path and the run's own name, which takes its place in the report path, so that each run's evidence
    stays its own.
    """

    def __init__(
        self,
        report_dir: Path,
        golden_root: Path,
        report_all: bool = False,
        run: tuple[str, str] | None = None,
        rootdir: Path | None = None,
        invocation_dir: Path | None = None,
    ) -> None:
        self.report_dir = report_dir
        self.golden_root = golden_root
        self.report_all = report_all
        self.run = run
        self.rootdir = rootdir  # the run's: what the printed promote command must confirm (--root, --golden-dir)
        self.invocation_dir = invocation_dir  # where pytest ran: the paths to paste are relative to it
        self._promote_command: str | None = None

    def snapshot_dir(self, result: SnapshotResult) -> Path:
        from pytest_featviz.goldenpath import sanitize_name

        try:
            below = Path(result.golden_dir).relative_to(self.golden_root)
        except ValueError:
            below = Path(sanitize_name(result.test_id), sanitize_name(result.name))
        else:
            if self.run is not None and len(below.parts) >= 2 and below.parts[-2] == sanitize_name(self.run[0]):
                below = below.parent.parent / sanitize_name(self.run[1]) / below.name
        return self.report_dir / SNAPSHOTS / below

    def __call__(self, evidence: Evidence) -> SnapshotResult:
        result = evidence.result
        if not wanted(result, self.report_all):
            return result
        try:
            artifacts = self._write(evidence)
        except OSError as exc:
            return replace(result, message=_join(result.message, f"(featviz could not write the report: {exc})"))
        start = self.invocation_dir
        mosaics = _mosaics(artifacts)
        lines = [
            f"diff mosaic of layer {role[7:]!r}: {display_path(path, start)}" for role, path in mosaics[:MOSAICS_LISTED]
        ]
        if len(mosaics) > MOSAICS_LISTED:
            folder = display_path(Path(mosaics[0][1]).parent, start)
            lines.append(f"diff mosaics of {len(mosaics) - MOSAICS_LISTED} more layer(s): in {folder}")
        if CURRENT in artifacts:
            lines.append(
                f"current render: {display_path(Path(artifacts[CURRENT]).parent, start)}"
                f" (promote it with `{self.promote_command()} -k {shlex.quote(result.test_id)}`, or copy its files"
                " into the golden directory)"
            )
        return replace(result, artifacts=artifacts, message=_join(result.message, *lines))

    def promote_command(self) -> str:
        """``featviz promote <report dir>``, with the ``--root`` and ``--golden-dir`` that promote needs told for
        this run's report (:func:`pytest_featviz.promote.command_options`)."""
        if self._promote_command is None:
            from pytest_featviz.promote import command_options

            words = [display_path(self.report_dir, self.invocation_dir)]
            if self.rootdir is not None:
                words += command_options(self.report_dir, self.rootdir, self.golden_root, self.invocation_dir)
            self._promote_command = shlex.join(["featviz", "promote", *words])
        return self._promote_command

    def discard(self, results: Iterable[SnapshotResult]) -> None:
        """Remove what was written for ``results``, an earlier attempt of a test that runs again
        (pytest-rerunfailures): its mosaics and current renders, of the snapshots the new attempt checks again and of
        those it never reaches, would stay in the report beside the last attempt, listed nowhere."""
        for result in results:
            # the folder the attempt wrote, told by its files (a repeated run's is not the golden path's)
            folders = {
                Path(path).parent.parent if role.startswith(CURRENT) else Path(path).parent
                for role, path in result.artifacts.items()
            }
            for folder in folders:
                if folder.is_dir():
                    remove_listed(self.report_dir, folder)

    def _write(self, evidence: Evidence) -> dict[str, str]:
        from pytest_featviz.goldenpath import sanitize_name

        def write_atomic(path: Path, data: bytes) -> None:
            write_ours(self.report_dir, path, data)

        result = evidence.result
        # the session's report.json and index.html go beside what a test writes: where a file of someone else's
        # holds their place (a report directory pointed at a site), nothing is written, and every message says so
        refuse_foreign(self.report_dir, self.report_dir / REPORT_JSON, self.report_dir / INDEX_HTML)
        target = self.snapshot_dir(result)
        artifacts: dict[str, str] = {}
        pictures = {picture.name: picture for picture in evidence.layers}
        for layer in result.layers:
            picture = pictures.get(layer.name)
            if picture is None or picture.golden_tiles is None or picture.current_tiles is None or not layer.ssim:
                continue
            failing = [i for i in range(len(layer.ssim)) if layer.channel_failed(i)]
            if failing:
                positions = layer.worst_channels(len(failing))
            elif self.report_all:
                positions = sorted(range(len(layer.ssim)), key=lambda i: (layer.ssim[i], i))
            else:
                continue
            image = diff_mosaic(
                layer.name,
                picture.golden_tiles,
                picture.current_tiles,
                [(i, layer.channels[i], channel_label(layer, i), layer.channel_failed(i)) for i in positions],
                evidence.bit_depth,
            )
            path = target / f"diff-{sanitize_name(layer.name)}.png"
            write_atomic(path, encode_rgb(image))
            artifacts[f"mosaic:{layer.name}"] = str(path)
        if result.outcome in (DRIFTED, MISSING, CREATED, UPDATED):
            sidecar, files = evidence.fresh()
            names = {entry["file"]: entry["name"] for entry in json.loads(sidecar)["layers"]}
            for file, data in sorted(files.items()):
                write_atomic(target / CURRENT / file, data)
                artifacts[f"current:{names.get(file, file)}"] = str(target / CURRENT / file)
            # A created or updated snapshot's golden is written already: no sidecar, so nothing for promote to take
            # (it promotes the entries with a current render; this one would only write its golden again).
            if result.outcome in (DRIFTED, MISSING):
                write_atomic(target / CURRENT / "snapshot.json", sidecar.encode("utf-8"))
                artifacts[CURRENT] = str(target / CURRENT / "snapshot.json")
        return artifacts


def _join(message: str, *lines: str) -> str:
    return "\n".join(part for part in (message, *lines) if part)


def _mosaics(artifacts: dict[str, str]) -> list[tuple[str, str]]:
    return [(role, path) for role, path in artifacts.items() if role.startswith("mosaic:")]


# ---------------------------------------------------------------------------------------------- the whole run


def score_fields(layer: LayerResult) -> dict[str, float | None]:
    """A layer's scores and the limits it was judged by, as its ``report.json`` entry holds them (and
    :func:`pytest_featviz.outputs.worst_score` reads them)."""
    compared = bool(layer.ssim)  # a layer not compared channel by channel (new, gone, reshaped): judged by no limit
    return {
        "min_ssim": _number(layer.min_ssim),
        "mean_ssim": _number(layer.mean_ssim),
        "threshold": _number(layer.threshold) if compared else None,
        "max_stat_delta": _number(layer.max_stat_delta),
        "stat_tolerance": _number(layer.stat_tolerance) if compared else None,
        "max_rms_error": _number(layer.max_rms_error),
        "rms_tolerance": _number(layer.rms_tolerance) if compared else None,
    }


def _number(value: float) -> float | None:
    """``value`` as ``report.json`` holds it: to 6 significant digits (6 decimals made a statistics change of
    0.00106272 and its tolerance of 0.0010627 one number), and ``null`` where there is none (NaN) or it is not
    finite."""
    return float(f"{value:.6g}") if math.isfinite(value) else None


def _severity(result: SnapshotResult) -> tuple[int, float, int, str, str]:
    """Sort key, most severe first: drifted before unreadable before missing before updated before created before
    matched, then by lowest SSIM (a layer that could not be compared counts as SSIM -1), then by the number of drifted
    layers."""
    rank = SEVERITY.index(result.outcome) if result.outcome in SEVERITY else len(SEVERITY)
    lowest = min((layer.min_ssim if layer.ssim else -1.0 for layer in result.drifted_layers), default=1.0)
    if result.outcome == MISSING:
        lowest = 1.0
    return rank, lowest, -len(result.drifted_layers), result.test_id, result.name


def _relative(path: str, base: Path) -> str:
    try:
        return Path(os.path.relpath(path, base)).as_posix()
    except ValueError:
        return Path(path).as_posix()


def summary_counts(results: Sequence[SnapshotResult]) -> dict[str, int]:
    """Snapshots checked and per outcome, and the drifted tests and layers."""
    counts = Counter(result.outcome for result in results)
    drifted = [r for r in results if r.outcome == DRIFTED]
    return {
        "checked": len(results),
        **{outcome: counts[outcome] for outcome in OUTCOMES},
        "drifted_tests": len({r.test_id for r in drifted}),
        "drifted_layers": sum(len(r.drifted_layers) for r in drifted),
        "drifted_xfail": sum(r.xfail for r in drifted),  # of the drifted snapshots, those of xfail tests (expected)
        "drifted_caught": sum(r.caught for r in drifted),  # and those whose test caught the error
        "missing_tests": len({r.test_id for r in results if r.outcome == MISSING}),
    }


def report_data(
    results: Sequence[SnapshotResult],
    report_dir: Path,
    root: Path,
    report_all: bool,
    run: Mapping[str, Any] | None = None,
    unchecked: Sequence[Path] = (),
) -> dict[str, Any]:
    """The content of ``report.json``: plain values in a fixed key order, snapshots most severe first; paths are
    relative to the report directory, golden directories relative to ``root``. ``run`` says what the run was
    (torch version, mode, configured tolerances, golden directory); ``unchecked``, the golden snapshots of the
    failing tests that they did not reach (:func:`pytest_featviz.unchecked.unreached_snapshots`). No times, no worker
    names, so a serial run and an xdist run give the same file."""
    snapshots = []
    for result in sorted((r for r in results if wanted(r, report_all)), key=_severity):
        layers = []
        for layer in result.layers:
            mosaic = result.artifacts.get(f"mosaic:{layer.name}")
            current = result.artifacts.get(f"current:{layer.name}")
            layers.append(
                {
                    "layer": layer.name,
                    "verdict": layer.verdict,
                    "first_drifted": layer.name == result.first_drifted,
                    "shape": list(layer.shape) if layer.shape is not None else None,
                    "golden_shape": list(layer.golden_shape) if layer.golden_shape is not None else None,
                    "channels": list(layer.channels),
                    "drifted_channels": [layer.channels[i] for i in layer.worst_channels(len(layer.ssim))],
                    **score_fields(layer),
                    # the TF32 noise the tolerances above were fitted to; null: the configured tolerances
                    "noise_floor": (
                        {key: _number(value) for key, value in layer.noise.to_dict().items()}
                        if layer.noise is not None
                        else None
                    ),
                    "ssim": [_number(v) for v in layer.ssim],
                    "stat_delta": [_number(v) for v in layer.stat_delta],
                    "rms_error": [_number(v) for v in layer.rms_error],
                    "reason": layer.reason,
                    "mosaic": _relative(mosaic, report_dir) if mosaic else None,
                    "current": _relative(current, report_dir) if current else None,
                }
            )
        current_dir = result.artifacts.get(CURRENT)
        snapshots.append(
            {
                "test_id": result.test_id,
                "snapshot": result.name,
                "outcome": result.outcome,
                "xfail": result.xfail,
                "caught": result.caught,
                "first_drifted": result.first_drifted,
                "golden_dir": _relative(result.golden_dir, root),
                # where --featviz-update would write it, when not golden_dir (the device's own golden)
                **({"update_dir": _relative(result.update_dir, root)} if result.update_dir else {}),
                # the digest of the golden that promoting it writes over, as the run read it ("": none)
                **({"replaces": result.replaces} if result.replaces is not None else {}),
                # an update or create run could not write its golden (its message says why): the verdict stays
                **({"unwritten": True} if result.unwritten else {}),
                "current": _relative(str(Path(current_dir).parent), report_dir) if current_dir else None,
                "layers": layers,
                "message": result.message,
            }
        )
    return {
        "format": REPORT_FORMAT,
        # where the snapshots' golden_dir paths start, relative to the report directory: `featviz promote` finds the
        # goldens from wherever it runs
        "root": _relative(str(root), report_dir),
        "run": {**run, "golden_dir": _relative(str(run["golden_dir"]), root)} if run is not None else None,
        "summary": summary_counts(results),
        # what this report does not show: a test stops at its first failing snapshot, and promote covers only that
        "unchecked": [_relative(str(path), root) for path in unchecked],
        "snapshots": snapshots,
    }


def write_session_report(
    results: Sequence[SnapshotResult],
    report_dir: Path,
    root: Path,
    report_all: bool = False,
    run: Mapping[str, Any] | None = None,
    unchecked: Sequence[Path] = (),
) -> Path | None:
    """Write ``report.json`` and ``index.html`` when anything drifted, was missing or unreadable (always with
    ``report_all`` and at least one snapshot); returns the path of ``index.html``, or ``None`` when nothing was
    written."""
    if not any(wanted(r, report_all) for r in results):
        return None
    data = report_data(results, report_dir, root, report_all, run, unchecked)
    text = json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    refuse_foreign(report_dir, report_dir / REPORT_JSON, report_dir / INDEX_HTML)  # both or neither
    # A test id from a folder named in bytes that are not UTF-8 holds lone surrogates: written as their JSON escape
    # (\udce9), which reads back as the same id.
    write_recorded(report_dir, report_dir / REPORT_JSON, text.encode("utf-8", "backslashreplace"))
    write_recorded(report_dir, report_dir / INDEX_HTML, render_index(data).encode("utf-8", "backslashreplace"))
    # Like .pytest_cache: `git add -A` after a failing run leaves the report out. Only in a folder of the report's
    # own: in one that holds other files (--featviz-report-dir tests), `*` would hide them from git too.
    if not (report_dir / GITIGNORE).exists() and only_ours(report_dir):
        write_recorded(report_dir, report_dir / GITIGNORE, GITIGNORE_TEXT.encode("utf-8"))
    return report_dir / INDEX_HTML
