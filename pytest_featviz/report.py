"""Drift reports: diff mosaics, current renders, report.json, index.html, and the terminal, JUnit, pytest-html and
GitHub outputs.

A :class:`Reporter` receives each check's :class:`~pytest_featviz.records.Evidence` (in the process that ran the
test, an xdist worker included), writes that snapshot's files under ``<report dir>/snapshots/`` and returns the
result with ``artifacts`` and the mosaic paths in its message. At session end the controller merges the result
records into ``report.json`` and ``index.html``. Every file written is listed in a manifest, so the next session
removes exactly those files and nothing else. numpy and Pillow are imported only when a picture is drawn.
"""

from __future__ import annotations

import base64
import errno
import html
import json
import math
import os
import shlex
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from importlib import resources
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from pytest_featviz.records import (
    DRIFTED,
    MATCHED,
    MISSING,
    OUTCOMES,
    Evidence,
    LayerResult,
    SnapshotResult,
    display_path,
)

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

REPORT_FORMAT = 1
MANIFEST = ".featviz-manifest"
REPORT_JSON = "report.json"
INDEX_HTML = "index.html"
GITIGNORE = ".gitignore"
GITIGNORE_TEXT = "# Written by pytest-featviz: the drift report is evidence of one run, not something to commit.\n*\n"
SNAPSHOTS = "snapshots"
CURRENT = "current"
MAX_ROWS = 8  # drifted channels drawn per diff mosaic; the rest are counted in its last line
MIN_PANEL = 64  # small maps are upscaled (nearest) until their longer side reaches this many pixels
MAX_SCALE = 16
LABEL_WIDTH = 110
GAP = 4
LINE = 14
BACKGROUND = (30, 30, 30)
STEP_SUMMARY_ROWS = 50
MISSING_IDS = 10  # test ids in the step summary's command that creates missing goldens
STEP_SUMMARY_LIMIT = 64 * 1024  # GitHub accepts 1 MiB per step; stay far below it
# Viridis at nine stops: perceptually uniform and readable for the colour-blind.
_VIRIDIS = (
    (68, 1, 84), (71, 44, 122), (59, 81, 139), (44, 113, 142), (33, 144, 141),
    (39, 173, 129), (92, 200, 99), (170, 220, 50), (253, 231, 37),
)  # fmt: skip


# ----------------------------------------------------------------------------------------------- per snapshot


def wanted(result: SnapshotResult, report_all: bool) -> bool:
    """Whether ``result`` gets report files: drifted and missing snapshots, and every checked one with
    ``--featviz-report-all``."""
    return result.outcome in (DRIFTED, MISSING) or (report_all and result.outcome == MATCHED)


class Reporter:
    """The ``reporter`` of :class:`~pytest_featviz.snapshot.FeatureSnapshot`: ``Evidence -> SnapshotResult``.

    Writes the diff mosaic of each drifted layer and the current render of a drifted or missing snapshot into
    ``<report_dir>/snapshots/<the snapshot's path below the golden directory>/``.
    """

    def __init__(self, report_dir: Path, golden_root: Path, report_all: bool = False) -> None:
        self.report_dir = report_dir
        self.golden_root = golden_root
        self.report_all = report_all

    def snapshot_dir(self, result: SnapshotResult) -> Path:
        from pytest_featviz.golden import sanitize_name

        try:
            below = Path(result.golden_dir).relative_to(self.golden_root)
        except ValueError:
            below = Path(sanitize_name(result.test_id), sanitize_name(result.name))
        return self.report_dir / SNAPSHOTS / below

    def __call__(self, evidence: Evidence) -> SnapshotResult:
        result = evidence.result
        if not wanted(result, self.report_all):
            return result
        try:
            artifacts = self._write(evidence)
        except OSError as exc:
            return replace(result, message=_join(result.message, f"(featviz could not write the report: {exc})"))
        lines = [f"diff mosaic of layer {role[7:]!r}: {display_path(path)}" for role, path in _mosaics(artifacts)]
        if CURRENT in artifacts:
            lines.append(
                f"current render: {display_path(Path(artifacts[CURRENT]).parent)}"
                f" (promote it with `featviz promote {shlex.quote(display_path(self.report_dir))} -k"
                f" {shlex.quote(result.test_id)}`, or copy its files into the golden directory)"
            )
        return replace(result, artifacts=artifacts, message=_join(result.message, *lines))

    def _write(self, evidence: Evidence) -> dict[str, str]:
        from pytest_featviz.golden import sanitize_name

        def write_atomic(path: Path, data: bytes) -> None:
            _write_ours(self.report_dir, path, data)

        result = evidence.result
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
            write_atomic(path, _encode_rgb(image))
            artifacts[f"mosaic:{layer.name}"] = str(path)
        if result.outcome in (DRIFTED, MISSING):
            sidecar, files = evidence.fresh()
            names = {entry["file"]: entry["name"] for entry in json.loads(sidecar)["layers"]}
            for file, data in sorted(files.items()):
                write_atomic(target / CURRENT / file, data)
                artifacts[f"current:{names.get(file, file)}"] = str(target / CURRENT / file)
            write_atomic(target / CURRENT / "snapshot.json", sidecar.encode("utf-8"))
            artifacts[CURRENT] = str(target / CURRENT / "snapshot.json")
        return artifacts


def _join(message: str, *lines: str) -> str:
    return "\n".join(part for part in (message, *lines) if part)


def _mosaics(artifacts: dict[str, str]) -> list[tuple[str, str]]:
    return [(role, path) for role, path in artifacts.items() if role.startswith("mosaic:")]


def _encode_rgb(image: npt.NDArray[np.uint8]) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image, mode="RGB").save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def panel_scale(tile_shape: tuple[int, int]) -> int:
    """The nearest-neighbour upscale factor of a tile in a diff mosaic: small maps grow to about ``MIN_PANEL``."""
    return max(1, min(MAX_SCALE, math.ceil(MIN_PANEL / max(tile_shape))))


def channel_label(layer: LayerResult, position: int) -> str:
    """The score a diff mosaic prints under a channel: its SSIM, or the score that failed when SSIM passed (a
    statistics-only drift must not show a passing SSIM in red)."""
    ssim = layer.ssim[position]
    if ssim >= layer.threshold and layer.stat_delta[position] > layer.stat_tolerance:
        return f"stats {layer.stat_delta[position]:.3f}"
    if ssim >= layer.threshold and layer.rms_error[position] > layer.rms_tolerance:
        return f"picture {layer.rms_error[position]:.3f}"
    return f"SSIM {ssim:.4f}"


def diff_mosaic(
    layer: str,
    golden_tiles: npt.NDArray[Any],
    current_tiles: npt.NDArray[Any],
    rows: Sequence[tuple[int, int, str, bool]],
    bit_depth: int = 8,
    max_rows: int = MAX_ROWS,
) -> npt.NDArray[np.uint8]:
    """An RGB picture of one layer: a row per channel, golden | current | difference heatmap.

    ``rows`` holds ``(tile position, channel index, score label, failed)`` in the order to draw (the label from
    :func:`channel_label`, red when the channel failed); only the first
    ``max_rows`` are drawn and the rest are counted on a last line. The heatmap is ``sqrt(|golden - current|)``
    of the full grey range through viridis, so equal colours mean equal change.
    """
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    level = float((1 << bit_depth) - 1)
    height, width = int(golden_tiles.shape[1]), int(golden_tiles.shape[2])
    scale = panel_scale((height, width))
    panel_h, panel_w = height * scale, width * scale
    row_h = max(panel_h, 2 * LINE)
    shown, more = list(rows[:max_rows]), max(0, len(rows) - max_rows)
    canvas_w = LABEL_WIDTH + 3 * panel_w + 4 * GAP
    canvas_h = 2 * LINE + GAP + len(shown) * (row_h + GAP) + (LINE if more else 0) + GAP
    canvas = Image.new("RGB", (canvas_w, canvas_h), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    draw.text((GAP, 1), _fit(draw, f"layer {layer}", canvas_w - 2 * GAP, font), fill=(235, 235, 235), font=font)
    for column, title in enumerate(("golden", "current", "difference")):
        x = LABEL_WIDTH + GAP + column * (panel_w + GAP)
        draw.text((x, LINE + 1), _fit(draw, title, panel_w, font), fill=(190, 190, 190), font=font)
    lut = _viridis_lut()
    for row, (position, channel, label, failed) in enumerate(shown):
        golden = golden_tiles[position].astype(np.float64) / level
        current = current_tiles[position].astype(np.float64) / level
        difference = np.sqrt(np.abs(golden - current))
        panels = [np.repeat(np.round(p * 255).astype(np.uint8)[..., None], 3, axis=2) for p in (golden, current)] + [
            lut[np.round(difference * 255).astype(np.intp)]
        ]
        top = 2 * LINE + GAP + row * (row_h + GAP)
        draw.text((GAP, top), f"channel {channel}", fill=(235, 235, 235), font=font)
        colour = (255, 110, 110) if failed else (150, 220, 150)
        draw.text((GAP, top + LINE), label, fill=colour, font=font)
        for column, panel in enumerate(panels):
            big = np.repeat(np.repeat(panel, scale, axis=0), scale, axis=1)
            canvas.paste(Image.fromarray(big, mode="RGB"), (LABEL_WIDTH + GAP + column * (panel_w + GAP), top))
    if more:
        text = f"... and {more} more channel(s) not shown"
        draw.text((GAP, canvas_h - GAP - LINE), text, fill=(235, 235, 235), font=font)
    return np.asarray(canvas, dtype=np.uint8)


def _fit(draw: Any, text: str, width: int, font: Any) -> str:
    while text and draw.textlength(text, font=font) > width:
        text = text[:-2] + "…" if len(text) > 2 else ""
    return text


def _viridis_lut() -> npt.NDArray[np.uint8]:
    import numpy as np

    stops = np.linspace(0.0, 1.0, len(_VIRIDIS))
    anchors = np.array(_VIRIDIS, dtype=np.float64)
    levels = np.linspace(0.0, 1.0, 256)
    lut = np.stack([np.interp(levels, stops, anchors[:, c]) for c in range(3)], axis=1)
    return np.round(lut).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ the manifest


def _record(report_dir: Path, paths: Iterable[str | Path]) -> None:
    """Add ``paths`` to the manifest of files this plugin wrote. One short line per ``write`` in append mode, so
    xdist workers can add to it at the same time."""
    lines = "".join(Path(os.path.relpath(path, report_dir)).as_posix() + "\n" for path in paths)
    if lines:
        report_dir.mkdir(parents=True, exist_ok=True)
        with open(report_dir / MANIFEST, "a", encoding="utf-8") as stream:
            stream.write(lines)


def _refuse_foreign(report_dir: Path, *paths: Path) -> None:
    """Raise ``FileExistsError`` when one of ``paths`` holds a file this plugin did not write: one the manifest
    does not list (what the previous report wrote was removed at session start; what this session wrote is listed).
    A report directory pointed at a folder of someone else's files (``--featviz-report-dir site``) leaves them be."""
    present = [path for path in paths if path.exists() or path.is_symlink()]
    if not present:
        return
    try:
        listed = set((report_dir / MANIFEST).read_text(encoding="utf-8").splitlines())
    except FileNotFoundError:
        listed = set()
    for path in present:
        if Path(os.path.relpath(path, report_dir)).as_posix() not in listed:
            raise FileExistsError(
                errno.EEXIST,
                "a file pytest-featviz did not write is in the way (it never overwrites one); choose another"
                " --featviz-report-dir",
                str(path),
            )


def _write_ours(report_dir: Path, path: Path, data: bytes) -> None:
    """:func:`_write_recorded` where :func:`_refuse_foreign` allows it."""
    _refuse_foreign(report_dir, path)
    _write_recorded(report_dir, path, data)


def _write_recorded(report_dir: Path, path: Path, data: bytes) -> None:
    """``write_atomic``, and the file recorded in the manifest at once, so that a report cut short by an error is
    still cleared by the next session."""
    from pytest_featviz.durable import write_atomic

    write_atomic(path, data)
    _record(report_dir, [path])


def remove_stale(report_dir: Path) -> list[Path]:
    """Remove the files an earlier session wrote (as listed in its manifest) and the folders they leave empty.

    Files the manifest does not list, or that lie outside ``report_dir``, are never touched. Returns what was
    removed.
    """
    manifest = report_dir / MANIFEST
    try:
        listed = manifest.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    root = report_dir.resolve()
    removed: list[Path] = []
    folders: set[Path] = set()
    for line in sorted(set(listed)):
        path = (report_dir / line).resolve()
        if not line or not path.is_relative_to(root) or path == root or not path.is_file():
            continue
        path.unlink()
        removed.append(path)
        folders.update(p for p in path.parents if p.is_relative_to(root) and p != root)
    manifest.unlink()
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    if report_dir.is_dir() and not any(report_dir.iterdir()):
        report_dir.rmdir()
    return removed


# ---------------------------------------------------------------------------------------------- the whole run


def _number(value: float) -> float | None:
    """``value`` as ``report.json`` holds it: rounded, and ``null`` where there is none (NaN) or it is not finite."""
    return round(value, 6) if math.isfinite(value) else None


def _severity(result: SnapshotResult) -> tuple[int, float, int, str, str]:
    """Sort key, most severe first: drifted before missing before the rest, then by lowest SSIM (a layer that
    could not be compared counts as SSIM -1), then by the number of drifted layers."""
    rank = {DRIFTED: 0, MISSING: 1}.get(result.outcome, 2)
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
        "missing_tests": len({r.test_id for r in results if r.outcome == MISSING}),
    }


def report_data(
    results: Sequence[SnapshotResult],
    report_dir: Path,
    root: Path,
    report_all: bool,
    run: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The content of ``report.json``: plain values in a fixed key order, snapshots most severe first; paths are
    relative to the report directory, golden directories relative to ``root``. ``run`` says what the run was
    (torch version, mode, configured tolerances, golden directory). No times, no worker names, so a serial run and
    an xdist run give the same file."""
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
                    "min_ssim": _number(layer.min_ssim),
                    "mean_ssim": _number(layer.mean_ssim),
                    # a layer not compared channel by channel (new, gone, reshaped) was judged by no tolerance
                    "threshold": _number(layer.threshold) if layer.ssim else None,
                    "max_stat_delta": _number(layer.max_stat_delta),
                    "stat_tolerance": _number(layer.stat_tolerance) if layer.ssim else None,
                    "max_rms_error": _number(layer.max_rms_error),
                    "rms_tolerance": _number(layer.rms_tolerance) if layer.ssim else None,
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
                "first_drifted": result.first_drifted,
                "golden_dir": _relative(result.golden_dir, root),
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
        "snapshots": snapshots,
    }


def write_session_report(
    results: Sequence[SnapshotResult],
    report_dir: Path,
    root: Path,
    report_all: bool = False,
    run: Mapping[str, Any] | None = None,
) -> Path | None:
    """Write ``report.json`` and ``index.html`` when anything drifted or was missing (always with
    ``report_all`` and at least one snapshot); returns the path of ``index.html``, or ``None`` when nothing was
    written."""
    if not any(wanted(r, report_all) for r in results):
        return None
    data = report_data(results, report_dir, root, report_all, run)
    text = json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    _refuse_foreign(report_dir, report_dir / REPORT_JSON, report_dir / INDEX_HTML)  # both or neither
    _write_recorded(report_dir, report_dir / REPORT_JSON, text.encode("utf-8"))
    _write_recorded(report_dir, report_dir / INDEX_HTML, render_index(data).encode("utf-8"))
    if not (report_dir / GITIGNORE).exists():  # like .pytest_cache: `git add -A` after a failing run leaves it out
        _write_recorded(report_dir, report_dir / GITIGNORE, GITIGNORE_TEXT.encode("utf-8"))
    return report_dir / INDEX_HTML


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _src(path: str) -> str:
    return _e(quote(path, safe="/"))


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def _noise_note(layer: dict[str, Any]) -> str:
    """Under ``reason``: the tolerances a layer judged by its noise floor was held to (they differ per layer)."""
    if layer["noise_floor"] is None:
        return ""
    return (
        f"tolerances fitted to its TF32 noise floor: SSIM >= {layer['threshold']:g},"
        f" statistics <= {layer['stat_tolerance']:g}, picture <= {layer['rms_tolerance']:g}"
    )


def _snapshot_html(snapshot: dict[str, Any]) -> str:
    rows, figures = [], []
    for layer in snapshot["layers"]:
        first = layer["first_drifted"]
        drifted = len(layer["drifted_channels"])
        badge = ' <span class="badge">first drift</span>' if first else ""
        threshold = "–" if layer["threshold"] is None else f"{layer['threshold']:g}"  # not compared: no threshold
        rows.append(
            f'<tr class="{_e(layer["verdict"])}{" first" if first else ""}">'
            f"<td>{_e(layer['layer'])}{badge}</td>"
            f"<td>{_e(layer['verdict'])}</td><td>{_e('x'.join(map(str, layer['shape'] or [])) or '–')}</td>"
            f"<td>{drifted} / {len(layer['channels'])}</td><td>{_cell(layer['min_ssim'])}</td>"
            f"<td>{_cell(layer['mean_ssim'])}</td><td>{threshold}</td>"
            f"<td>{_cell(layer['max_stat_delta'])}</td><td>{_cell(layer['max_rms_error'])}</td>"
            f"<td>{_e(layer['reason'] or _noise_note(layer))}</td></tr>"
        )
        for kind in ("mosaic", "current"):
            if layer[kind] and (kind == "mosaic" or snapshot["outcome"] == MISSING):
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
    return (
        f'<div class="snapshot {_e(snapshot["outcome"])}"><h3>snapshot {_e(snapshot["snapshot"])}'
        f' <span class="outcome">{_e(snapshot["outcome"])}</span></h3>'
        "<table><thead><tr><th>layer</th><th>verdict</th><th>shape</th><th>drifted channels</th><th>min SSIM</th>"
        "<th>mean SSIM</th><th>threshold</th><th>max stat &Delta;</th><th>max RMS</th><th>reason</th></tr></thead>"
        f'<tbody>{"".join(rows)}</tbody></table>{current}<div class="figures">{"".join(figures)}</div>'
        f"<details><summary>message</summary><pre>{_e(snapshot['message'])}</pre></details></div>"
    )


def _worst_outcome(snapshots: Sequence[dict[str, Any]]) -> str:
    outcomes = {snapshot["outcome"] for snapshot in snapshots}
    return next((o for o in (DRIFTED, MISSING) if o in outcomes), MATCHED)


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
    counts = data["summary"]
    summary = (
        f"{counts['checked']} snapshot(s) checked: {counts[MATCHED]} matched, {counts[DRIFTED]} drifted"
        f" ({counts['drifted_tests']} test(s), {counts['drifted_layers']} layer(s)), {counts[MISSING]} missing"
    )
    if data.get("run"):
        summary += ". " + run_line(data["run"])
    template = Template(resources.files("pytest_featviz").joinpath("templates/index.html").read_text("utf-8"))
    return template.substitute(summary=_e(summary), tests=len(tests), body="\n".join(sections))


def run_line(run: Mapping[str, Any]) -> str:
    """``torch 2.14.1, check mode, goldens in golden; configured tolerances ...``: what the run was, in words."""
    return (
        f"torch {run['torch']}, {run['mode']} mode, goldens in {run['golden_dir']}; configured tolerances: SSIM >="
        f" {run['threshold']:g}, statistics change <= {run['stat_tolerance']:g}, picture change <="
        f" {run['rms_tolerance']:g} (a marker or call may set others; each layer shows the ones it was judged by)"
    )


# ------------------------------------------------------------------------------------------ terminal and CI


def _md(text: str, limit: int = 120) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|").replace("`", "'")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def step_summary(data: dict[str, Any], index: Path) -> str:
    """A compact markdown table of the drifted and missing snapshots for ``GITHUB_STEP_SUMMARY``: no images
    (GitHub strips data URIs), at most ``STEP_SUMMARY_ROWS`` rows and ``STEP_SUMMARY_LIMIT`` bytes."""
    counts = data["summary"]
    lines = [
        "### featviz: feature-map drift",
        "",
        f"{counts['checked']} snapshot(s) checked: {counts[DRIFTED]} drifted ({counts['drifted_tests']} test(s),"
        f" {counts['drifted_layers']} layer(s)), {counts[MISSING]} missing.",
        "",
        "| test | snapshot | outcome | first drifted layer | drifted layers | min SSIM |",
        "|---|---|---|---|---|---|",
    ]
    shown = [s for s in data["snapshots"] if s["outcome"] in (DRIFTED, MISSING)]
    if not shown:
        return ""
    for snapshot in shown[:STEP_SUMMARY_ROWS]:
        compared = snapshot["outcome"] == DRIFTED  # a missing snapshot has nothing it drifted from
        drifted = [layer for layer in snapshot["layers"] if layer["verdict"] != "match"] if compared else []
        ssims = [layer["min_ssim"] for layer in drifted if layer["min_ssim"] is not None]
        lines.append(
            f"| `{_md(snapshot['test_id'])}` | {_md(snapshot['snapshot'], 40)} | {snapshot['outcome']} |"
            f" {_md(snapshot['first_drifted'] or '–', 60)} | {len(drifted) if compared else '–'} |"
            f" {f'{min(ssims):.4f}' if ssims else '–'} |"
        )
    if len(shown) > STEP_SUMMARY_ROWS:
        lines.append(f"| … and {len(shown) - STEP_SUMMARY_ROWS} more | | | | | |")
    missing = list(dict.fromkeys(s["test_id"] for s in shown if s["outcome"] == MISSING))
    if missing:
        command = shlex.join(["pytest", "--featviz-update", *missing[:MISSING_IDS]])
        more = f" (and {len(missing) - MISSING_IDS} more)" if len(missing) > MISSING_IDS else ""
        lines += ["", f"Missing goldens: create them locally with `{_md(command, 400)}`{more}, review and commit them."]
    if data.get("run"):
        lines += ["", _md(run_line(data["run"]), 400) + "."]
    lines += [
        "",
        f"Diff mosaics and current renders: `{_md(display_path(index), 200)}` (upload the report directory as a build"
        " artifact, for example with `actions/upload-artifact`, to look at them).",
        "",
    ]
    text = "\n".join(lines)
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
    """pytest-html extras: the diff mosaics (and current renders of missing snapshots) as inline PNGs."""
    from pytest_html import extras

    found = []
    for result in results:
        for role, path in sorted(result.artifacts.items()):
            if role.startswith("mosaic:") or (role.startswith("current:") and result.outcome == MISSING):
                content = base64.b64encode(Path(path).read_bytes()).decode("ascii")
                found.append(extras.png(content, name=f"featviz {result.name} {role}"))
    return found


# --------------------------------------------------------------------------------------------------- promote


def promote(report_dir: Path, root: Path | None = None, select: str | None = None) -> list[tuple[Path, bool]]:
    """Copy the current renders of a report into the golden directories (what ``--featviz-update`` would have
    written), for the snapshots of the test whose id is ``select``, else of every test whose id contains it (all
    when ``None``): a whole node id pasted from a failure selects that test alone. Returns each golden directory
    selected, with whether its files changed (a second promote of the same report changes nothing). ``root`` is the
    directory the report's golden paths are relative to (the rootdir); by default the one the report records,
    relative to the report directory."""
    from pytest_featviz.golden import GoldenError, read_sidecar, refuse_unfetched, write_files

    data = json.loads((report_dir / REPORT_JSON).read_text(encoding="utf-8"))
    if root is None:
        if not isinstance(data.get("root"), str):
            raise ValueError(f"{REPORT_JSON} does not say where its goldens are (an older report): pass --root")
        root = report_dir / data["root"]
    if not root.is_dir():  # a typo must not grow a golden tree of its own
        raise ValueError(f"the root {root} is not a directory")
    exact = select is not None and any(snapshot["test_id"] == select for snapshot in data["snapshots"])
    written = []
    for snapshot in data["snapshots"]:
        test_id = snapshot["test_id"]
        if not snapshot["current"] or (select is not None and (test_id != select if exact else select not in test_id)):
            continue
        current = report_dir / snapshot["current"]
        sidecar = (current / "snapshot.json").read_text(encoding="utf-8")
        files = [entry["file"] for entry in json.loads(sidecar)["layers"]]
        if any(Path(file).name != file for file in files):
            raise ValueError(f"{current / 'snapshot.json'} names a file outside its directory")
        directory = root / snapshot["golden_dir"]
        try:
            refuse_unfetched(directory)
            read_sidecar(directory)
        except GoldenError as exc:  # as --featviz-update: never over a newer format, an LFS pointer, an OS error
            if not exc.recreatable:
                raise ValueError(str(exc)) from exc
        changed = write_files(directory, sidecar, {file: (current / file).read_bytes() for file in files})
        written.append((directory, bool(changed)))
    return written
