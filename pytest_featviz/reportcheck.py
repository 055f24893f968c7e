"""A drift report read back for ``featviz promote``, which trusts none of it: ``report.json`` parsed, of a format this
version reads, each value held to the type a report holds, each path it names relative and kept inside its directory
once ``..`` and symbolic links are resolved, and a snapshot's current render (its sidecar and pictures) read from files
inside the report directory and checked as a golden is when it is read, so that what promote writes reads back. A
value that fails raises :class:`Refused`, which says why.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePath, PureWindowsPath
from typing import Any

from pytest_featviz.records import display_path
from pytest_featviz.report import REPORT_FORMAT, REPORT_JSON

ABSENT = object()  # a key report.json lacks


class Refused(ValueError):
    """A value of ``report.json`` (or of a current render's sidecar) that promote will not use, and why."""


def report_json(report_dir: Path) -> dict[str, Any]:
    """The parsed ``report.json``: a JSON object of a format this version reads."""
    path = report_dir / REPORT_JSON
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise Refused(f"{REPORT_JSON} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except RecursionError as exc:
        raise Refused(f"{REPORT_JSON} is not valid JSON (nested too deep to read)") from exc
    except json.JSONDecodeError as exc:
        raise Refused(f"{REPORT_JSON} is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise Refused(f"{REPORT_JSON} is {shown(data)}, not a JSON object: not a drift report")
    version = data.get("format", ABSENT)
    if version is not ABSENT and (not isinstance(version, int) or isinstance(version, bool) or version < 1):
        raise Refused(f"{REPORT_JSON} is damaged: 'format' is {shown(version)}")
    if isinstance(version, int) and version > REPORT_FORMAT:
        raise Refused(
            f"{REPORT_JSON} has format {version}, newer than this pytest-featviz reads ({REPORT_FORMAT}); upgrade"
            " pytest-featviz"
        )
    return data


def inside(base: Path, text: str, boundary: Path, what: str, where: str) -> Path:
    """``base / text`` when it lies strictly inside ``boundary``, compared as written (``..`` collapsed) and once
    symbolic links are resolved; else :class:`Refused` says which check it failed."""
    if PurePath(text).is_absolute() or PureWindowsPath(text).is_absolute():
        raise Refused(f"{what} is an absolute path, which no report holds (its paths are relative)")
    path = base / text
    written, bound = PurePath(os.path.normpath(path)), PurePath(os.path.normpath(boundary))
    if written == bound:
        raise Refused(f"{what} is {where} itself, not a path inside it")
    if not written.is_relative_to(bound):
        raise Refused(f"{what} leads out of {where}")
    try:
        real, real_bound = path.resolve(), boundary.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symbolic link loop (Python < 3.13)
        raise Refused(f"{what}: cannot resolve {display_path(path)} ({exc})") from exc
    if real == real_bound or not real.is_relative_to(real_bound):
        raise Refused(f"{what} leads out of {where} through a symbolic link (to {real})")
    return normalized(path)


def current_render(report_dir: Path, text: str) -> tuple[str, dict[str, bytes]]:
    """A snapshot's current render in the report: its sidecar text and its pictures by file name, each read from
    a file inside the report directory and checked as a golden is when it is read (the sidecar's format and every
    value in it, each picture against the hash and geometry its sidecar records), so that what promote writes reads
    back as a golden. A byte-order mark before the sidecar's UTF-8 is accepted (and not kept), as for a golden."""
    from pytest_featviz.golden import SIDECAR, GoldenError, read_sidecar
    from pytest_featviz.goldenpicture import read_layer

    current = inside(report_dir, text, report_dir, f"current {text!r}", f"the report directory {report_dir}")
    try:
        _report_file(report_dir, current / SIDECAR)
        golden = read_sidecar(current)
        if golden is None:  # gone since it was found
            raise Refused(f"{display_path(current / SIDECAR)} is missing from the report")
        pictures: dict[str, bytes] = {}
        for layer in golden.layers:  # a plain picture file name of its directory (read_sidecar checked)
            real = _report_file(report_dir, current / layer.file)
            read_layer(current, layer, golden.bit_depth)
            pictures[layer.file] = real.read_bytes()
    except GoldenError as exc:
        raise Refused(f"its current render would not read back as a golden: {exc}") from exc
    return golden.source, pictures


def _report_file(report_dir: Path, path: Path) -> Path:
    """Where the file of the report at ``path`` lies once symbolic links are resolved, when that is inside the report
    directory and something is there (read as a golden's file is: anything but a regular file is refused there)."""
    try:
        real, real_report = path.resolve(), report_dir.resolve()
    except (OSError, RuntimeError) as exc:
        raise Refused(f"cannot resolve {display_path(path)} ({exc})") from exc
    if not real.is_relative_to(real_report) or real == real_report:
        raise Refused(f"{display_path(path)} leads out of the report directory {report_dir} (to {real})")
    if not real.exists():
        raise Refused(f"{display_path(path)} is missing from the report")
    return real


def normalized(path: Path) -> Path:
    """``path`` as messages show it (:func:`~pytest_featviz.records.display_path`: relative to the working directory,
    ``..`` collapsed) when that names the same place, so that what the golden reader and writer say about it reads as
    promote's own lines do (``golden/t/test_net/0``, not ``featviz-report/../golden/t/test_net/0``); ``path`` itself
    when a symbolic link makes the two differ (``featviz-report`` a link to another folder)."""
    shown = Path(display_path(path))
    return shown if os.path.realpath(shown) == os.path.realpath(path) else path


def path_text(value: object, what: str, hint: str = "") -> str:
    """``value`` when it is a path a report can hold: a non-empty string without NUL bytes or lone surrogates."""
    if value is ABSENT:
        raise Refused(f"{what} is missing{hint}")
    if not isinstance(value, str) or not value:
        raise Refused(f"{what} is {shown(value)}, not a path{hint}")
    if "\x00" in value:
        raise Refused(f"{what} {value!r} holds a NUL byte, which no path holds{hint}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise Refused(
            f"{what} {value!r} holds a lone surrogate, which no report of pytest-featviz holds{hint}"
        ) from exc
    return value


def shown(value: object) -> str:
    """``value`` in the words of JSON, for a message about a value of the wrong type."""
    if value is ABSENT:
        return "missing"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"a number ({value!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return repr(value)
