"""A drift report read back for ``featviz promote``, which trusts none of it: ``report.json`` parsed, of a format this
version reads, each value held to the type a report holds, each path it names relative and kept inside its directory
once ``..`` and symbolic links are resolved, and a snapshot's current render (its sidecar and pictures) read from files
inside the report directory. A value that fails raises :class:`Refused`, which says why.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath
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
    return path


def current_render(report_dir: Path, text: str) -> tuple[str, dict[str, bytes]]:
    """A snapshot's current render in the report: its sidecar text and its pictures by file name, each read from
    a file inside the report directory."""
    current = inside(report_dir, text, report_dir, f"current {text!r}", f"the report directory {report_dir}")
    where = display_path(current / "snapshot.json")
    data = _report_file(report_dir, current / "snapshot.json")
    try:
        sidecar = data.decode("utf-8")
        layers = json.loads(sidecar)["layers"]
    except UnicodeDecodeError as exc:
        raise Refused(f"{where} is not UTF-8 text") from exc
    except (ValueError, RecursionError) as exc:
        raise Refused(f"{where} is not valid JSON") from exc
    except (KeyError, TypeError) as exc:
        raise Refused(f"{where} is not a snapshot's sidecar (no list of layers)") from exc
    if not isinstance(layers, list):
        raise Refused(f"{where} is not a snapshot's sidecar (no list of layers)")
    files = [_layer_file(layer, f"{where}, layer {number}") for number, layer in enumerate(layers)]
    return sidecar, {file: _report_file(report_dir, current / file) for file in files}


def _layer_file(layer: object, where: str) -> str:
    """The file name of a layer in a current render's sidecar: a plain ``.png`` name, as a sidecar writes them."""
    file = path_text(layer.get("file", ABSENT) if isinstance(layer, dict) else ABSENT, f"{where}: file")
    plain = file == PurePosixPath(file).name == PureWindowsPath(file).name
    if not plain or file.startswith(".") or not file.endswith(".png"):
        raise Refused(f"{where} names a layer file {file!r} that is not a plain .png name in its directory")
    return file


def _report_file(report_dir: Path, path: Path) -> bytes:
    """The bytes of ``path``, a file of the report's, when it lies inside the report directory once symbolic links
    are resolved."""
    try:
        real, real_report = path.resolve(), report_dir.resolve()
    except (OSError, RuntimeError) as exc:
        raise Refused(f"cannot resolve {display_path(path)} ({exc})") from exc
    if not real.is_relative_to(real_report) or real == real_report:
        raise Refused(f"{display_path(path)} leads out of the report directory {report_dir} (to {real})")
    if not real.is_file():
        raise Refused(f"{display_path(path)} is missing from the report (or is not a file)")
    return real.read_bytes()


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
