"""``featviz promote``: a drift report's current renders copied into the golden directories, what
``--featviz-update`` would have written, without running the tests again.

``report.json`` travels as a CI artifact and is promoted from anywhere, so promote trusts none of it: a path it writes
to must lie strictly inside the golden directory, a file it reads inside the report directory, once ``..`` and
symbolic links are resolved; every value must have the type a report holds (the report is read through
:mod:`pytest_featviz.reportcheck`). A snapshot that fails is refused (said, and nothing written or deleted for it); the
report's other snapshots are still promoted.
"""

from __future__ import annotations

import configparser
import contextlib
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath
from typing import Any

from pytest_featviz.records import CREATED, UNREADABLE, UPDATED, display_path, printable
from pytest_featviz.report import REPORT_JSON
from pytest_featviz.reportcheck import (
    ABSENT,
    Refused,
    current_render,
    inside,
    normalized,
    path_text,
    report_json,
    shown,
)


@dataclass(frozen=True, slots=True)
class Refusal:
    """A snapshot of the report that promote refused: which one (``snapshots[2] ('t.py::test_a', snapshot '0')``,
    as ``report.json`` lists it) and why. Nothing was written or deleted for it."""

    snapshot: str
    reason: str

    def __str__(self) -> str:
        return f"{self.snapshot}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Promotion:
    """What :func:`promote_report` did: each golden directory it wrote, with whether its files changed, and each
    snapshot it refused; ``unreadable``: the golden directories (as the report gives them) of the selected snapshots
    whose golden the run could not read, which have no current render to promote; ``expected``: the test ids of the
    selected snapshots whose test expected the drift (xfail, or caught it), left alone unless ``-k``
    names their test; ``written_by_run``: those of the selected snapshots whose golden the run wrote itself
    (``--featviz-update``, ``--featviz-create`` with ``--featviz-report-all``), which have nothing to promote."""

    written: tuple[tuple[Path, bool], ...]
    refused: tuple[Refusal, ...]
    unreadable: tuple[str, ...] = ()
    expected: tuple[str, ...] = ()
    written_by_run: tuple[str, ...] = ()  # test ids of selected snapshots the run created or updated itself


def promote(report_dir: Path, root: Path | None = None, select: str | None = None) -> list[tuple[Path, bool]]:
    """:func:`promote_report`, raising ``ValueError`` (after promoting the valid snapshots) when it refused one.
    Returns each golden directory selected, with whether its files changed."""
    promotion = promote_report(report_dir, root, select)
    if promotion.refused:
        raise ValueError("; ".join(f"refused {refusal}" for refusal in promotion.refused))
    return list(promotion.written)


def promote_report(
    report_dir: Path, root: Path | None = None, select: str | None = None, golden_dir: Path | None = None
) -> Promotion:
    """Copy the current renders of a report into the golden directories (what ``--featviz-update`` would have
    written), for the snapshots of the test whose id is ``select``, else of every test whose id contains it (all
    when ``None``): a whole node id pasted from a failure selects that test alone. A second promote of the same
    report changes nothing. ``root`` is the directory the report's golden paths are relative to (the rootdir); by
    default the one the report records, relative to the report directory, which is used only when it holds the
    report directory and a pytest configuration file (:func:`_trusted_root`). ``golden_dir`` (``--golden-dir``)
    confirms a golden directory outside the rootdir that the project's configuration does not name.

    A snapshot whose golden path leads out of the golden directory the report names (``run.golden_dir``, the rootdir
    for a report that names none), whose current render lies outside the report directory or would not read back as a
    golden (:func:`~pytest_featviz.reportcheck.current_render`), or whose entry is damaged is refused, and so is one
    whose golden ``--featviz-update`` would not write over either (a newer format, a Git LFS pointer); the others are
    promoted. Raises ``ValueError`` when the report as a whole cannot be used (not
    JSON, no trusted root, a golden directory outside the rootdir that nothing local confirms), before anything is
    written.
    """
    from pytest_featviz.golden import GoldenError
    from pytest_featviz.goldenwrite import write_files

    if select == "":
        raise ValueError("-k is empty: give a test id or a part of one (an empty one would select every snapshot)")
    data = report_json(report_dir)
    given = root is not None
    root = _promote_root(report_dir, data, root)
    values = _trusted_root(report_dir, root, given)
    golden_dir = _trusted_golden_dir(_promote_golden_dir(data, root), root, values, golden_dir)
    snapshots = data.get("snapshots", ABSENT)
    if not isinstance(snapshots, list):
        raise Refused(f"{REPORT_JSON} is damaged: 'snapshots' is {shown(snapshots)}, not a list")
    ids = [entry.get("test_id") if isinstance(entry, dict) else None for entry in snapshots]
    exact = select is not None and select in ids
    refused: list[Refusal] = []
    chosen: list[_Chosen] = []
    unreadable: list[str] = []
    expected: list[str] = []
    written_by_run: list[str] = []
    expecting: set[Path] = set()  # the goldens of those, which no other run's render may replace
    for index, entry in enumerate(snapshots):
        label = f"snapshots[{index}]"
        try:
            if not isinstance(entry, dict):
                raise Refused(f"is {shown(entry)}, not an object")
            test_id = entry.get("test_id", ABSENT)
            if not isinstance(test_id, str):
                raise Refused(f"test_id is {shown(test_id)}, not a string")
            name = entry.get("snapshot")
            label += f" ({test_id!r}, snapshot {name!r})" if isinstance(name, str) else f" ({test_id!r})"
            # its test expects this drift (xfail; a test that catches it): accepting it would make that test fail,
            # also through another run of the test that shares its golden (pytest-repeat), selected or not
            expects = entry.get("xfail") is True or entry.get("caught") is True
            if expects and not (exact and test_id == select):
                with contextlib.suppress(GoldenError, OSError, ValueError):
                    expecting.add(_promoted_to(entry, root, golden_dir))
            if select is not None and (test_id != select if exact else select not in test_id):
                continue
            if expects and not exact:
                expected.append(printable(test_id))
                continue
            current = entry.get("current", ABSENT)
            if current is None:  # a matched snapshot (--featviz-report-all) or an unreadable one: nothing to promote
                if entry.get("outcome") == UNREADABLE and isinstance(entry.get("golden_dir"), str):
                    # shown as the paths it writes are, from here (only shown: nothing is read or written there)
                    unreadable.append(printable(display_path(root / entry["golden_dir"])))
                elif entry.get("outcome") in (CREATED, UPDATED):
                    written_by_run.append(printable(test_id))
                continue
            directory = _promoted_to(entry, root, golden_dir)
            sidecar, pictures = current_render(report_dir, path_text(current, "current"))
            replaces = entry.get("replaces")  # absent from reports written before it was recorded
            if replaces is not None and not isinstance(replaces, str):
                raise Refused(f"replaces is {shown(replaces)}, not a string")
        except (GoldenError, OSError, ValueError) as exc:  # ValueError: Refused, and text that is not UTF-8
            # as text any terminal takes: a path on disk may hold bytes that are not UTF-8 (lone surrogates here)
            refused.append(Refusal(label, printable(str(exc))))
            continue
        chosen.append(_Chosen(label, test_id, directory, sidecar, pictures, replaces))
    written: list[tuple[Path, bool]] = []
    for directory, renders in _by_golden(chosen).items():
        if len({tuple(sorted(render.pictures.items())) for render in renders}) > 1:
            # the runs of a repeated test (pytest-repeat) drifted differently: the last one would silently win
            runs = ", ".join(shlex.quote(render.test_id) for render in renders)
            reason = (
                f"the report holds {len(renders)} different renders of the golden {display_path(directory)} (runs of"
                f" one test rendered differently: is the model deterministic?); promote one with -k and its test id"
                f" ({runs})"
            )
            refused.extend(Refusal(render.label, printable(reason)) for render in renders)
            continue
        if directory in expecting:
            reason = (
                f"another run of its test shares the golden {display_path(directory)} and expects this drift (xfail,"
                " or it caught the error): promoting it would fail that run; accept it with --featviz-update if meant"
            )
            refused.extend(Refusal(render.label, printable(reason)) for render in renders)
            continue
        try:
            _refuse_changed(directory, renders, _refuse_to_replace(directory))
            changed = write_files(directory, renders[0].sidecar, renders[0].pictures)
        except (GoldenError, OSError, ValueError) as exc:
            refused.extend(Refusal(render.label, printable(str(exc))) for render in renders)
            continue
        written.append((directory, bool(changed)))
    return Promotion(
        tuple(written),
        tuple(refused),
        tuple(dict.fromkeys(unreadable)),
        tuple(dict.fromkeys(expected)),
        tuple(dict.fromkeys(written_by_run)),
    )


def command_options(report_dir: Path, root: Path, golden_dir: Path, start: Path | None = None) -> list[str]:
    """The options the ``featviz promote`` command a failure prints needs for a report of a run whose rootdir is
    ``root`` and golden directory ``golden_dir``: ``--root`` when promote would not take the rootdir from
    ``report.json`` alone (no standard pytest configuration file there: ``pytest -c ci.ini``; or the report outside
    it), ``--golden-dir`` when it would not take the golden directory (outside the rootdir, not the
    ``featviz_golden_dir`` configured there). The run knows both; pasted, the command confirms them. Paths are
    relative to ``start``, where pytest ran (else the working directory)."""
    options: list[str] = []
    try:
        values = _trusted_root(report_dir, root, given=False)
    except Refused:
        options += ["--root", display_path(root, start)]
        values = _config_values(root) or {}
    try:
        _trusted_golden_dir(golden_dir, root, values, None)
    except Refused:
        options += ["--golden-dir", display_path(golden_dir, start)]
    return options


@dataclass(frozen=True, slots=True)
class _Chosen:
    """A snapshot of the report that promote is to write: its entry's label, test id, golden and current render."""

    label: str
    test_id: str
    directory: Path
    sidecar: str
    pictures: dict[str, bytes]
    replaces: str | None  # the digest of the golden the run compared with ("": none); None: not recorded


def _by_golden(chosen: list[_Chosen]) -> dict[Path, list[_Chosen]]:
    """The chosen snapshots by the golden directory they write, in the report's order: the runs of a repeated test
    (pytest-repeat, flakefinder) share their test's goldens, so several entries can name one golden."""
    groups: dict[str, list[_Chosen]] = {}
    for render in chosen:
        groups.setdefault(os.path.normcase(os.path.realpath(render.directory)), []).append(render)
    return {renders[0].directory: renders for renders in groups.values()}


def default_report_dir(start: Path) -> Path:
    """The report directory a bare ``featviz promote`` reads: the one pytest run from ``start`` writes. That is the
    ``--featviz-report-dir`` in the ``addopts`` of the first pytest configuration file found in ``start`` or a folder
    above it (relative to ``start``, as pytest takes it), else that file's ``featviz_report_dir`` (relative to its
    folder), else ``featviz-report`` beside it; without a configuration file, ``featviz-report`` in the rootdir
    pytest takes then: the first folder up with a ``setup.py``, else with a ``pyproject.toml``, else ``start``."""
    from pytest_featviz.config import DEFAULT_REPORT_DIR, expanded

    folders = (start, *start.parents)
    for directory in folders:
        values = _config_values(directory)
        if values is None:
            continue
        given = _option_value(values.get("addopts", ""), "--featviz-report-dir")
        if given:
            return Path(os.path.normpath(start / given))
        configured = values.get("featviz_report_dir", "").strip()
        return Path(os.path.normpath(directory / expanded(configured or DEFAULT_REPORT_DIR)))
    for marker in ("setup.py", "pyproject.toml"):
        found = next((d for d in folders if (d / marker).is_file()), None)
        if found is not None:
            return found / DEFAULT_REPORT_DIR
    return start / DEFAULT_REPORT_DIR


def _option_value(addopts: str, option: str) -> str | None:
    """The value ``option`` has in an ``addopts`` line (``--opt DIR`` or ``--opt=DIR``; the last one wins, as on a
    command line), or ``None``."""
    try:
        words = shlex.split(addopts)
    except ValueError:  # unbalanced quotes: pytest refuses the line too
        return None
    found = None
    for position, word in enumerate(words):
        if word == option and position + 1 < len(words):
            found = words[position + 1]
        elif word.startswith(option + "="):
            found = word[len(option) + 1 :]
    return found


def _promote_root(report_dir: Path, data: dict[str, Any], root: Path | None) -> Path:
    """The rootdir the report's golden paths start from: ``root`` (``--root``), else the one the report records."""
    if root is None:
        recorded = data.get("root", ABSENT)
        if recorded is ABSENT or recorded is None:
            raise Refused(f"{REPORT_JSON} does not say where its goldens are (an older report): pass --root")
        root = report_dir / path_text(recorded, "root", " (pass --root to say where the goldens are)")
    if not root.is_dir():  # a typo must not grow a golden tree of its own
        raise Refused(f"the root {display_path(root)} is not a directory")
    return normalized(root)


# pytest's configuration files, in the order it looks for them, with the section that makes them one
_CONFIG_FILES = (
    ("pytest.ini", "pytest"),
    (".pytest.ini", "pytest"),
    ("pyproject.toml", "tool.pytest"),
    ("tox.ini", "pytest"),
    ("setup.cfg", "tool:pytest"),
)


def _trusted_root(report_dir: Path, root: Path, given: bool) -> dict[str, str]:
    """The ini values of ``root``'s pytest configuration file, when promote may write below ``root``: it was given
    (``--root``), or it holds the report directory and a pytest configuration file, as the rootdir of the run that
    wrote the report does. A ``root`` only ``report.json`` names, anywhere else, is not used: what a report says is
    not trusted, and the report may have been moved or forged."""
    values = _config_values(root)
    if given:
        return values or {}
    holds_report = report_dir.resolve().is_relative_to(root.resolve())
    if values is None or not holds_report:
        config = (
            "pytest configuration file (pytest.ini, or a [tool.pytest.ini_options] or [tool.pytest] table in"
            " pyproject.toml, [pytest] in tox.ini, [tool:pytest] in setup.cfg)"
        )
        if values is not None:
            lacks = "does not hold this report directory"
        else:
            lacks = f"holds neither this report directory nor a {config}" if not holds_report else f"holds no {config}"
        raise Refused(
            f"{REPORT_JSON} names the rootdir {display_path(root)}, which {lacks}, so the report alone does not say"
            " where the goldens are: pass --root with the project's rootdir"
        )
    return values


def _config_values(directory: Path) -> dict[str, str] | None:
    """The ini values of the pytest configuration file in ``directory`` (the first one pytest would read), or
    ``None`` when it holds none."""
    for name, section in _CONFIG_FILES:
        path = directory / name
        if not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
            if name == "pyproject.toml":
                found = _pyproject_values(text)
                if found is not None:
                    return found
                continue
            parser = configparser.ConfigParser(interpolation=None)
            parser.read_string(text)
        except (OSError, ValueError, configparser.Error):  # ValueError: not UTF-8, not TOML
            continue
        if parser.has_section(section):
            return dict(parser[section])
        if name in ("pytest.ini", ".pytest.ini"):  # pytest takes these even without a [pytest] section
            return {}
    return None


def _pyproject_values(text: str) -> dict[str, str] | None:
    """The string ini values of ``pyproject.toml``'s ``[tool.pytest.ini_options]`` (or pytest 9's ``[tool.pytest]``),
    ``None`` without either (or without ``tomllib``: Python 3.10, where such a project's promote passes --root)."""
    if sys.version_info >= (3, 11):
        import tomllib

        tool = tomllib.loads(text).get("tool", {}).get("pytest")
        if isinstance(tool, dict):
            table = tool.get("ini_options", tool)
            return {str(k): v for k, v in table.items() if isinstance(v, str)}
    return None


def _trusted_golden_dir(golden_dir: Path, root: Path, values: dict[str, str], confirmed: Path | None) -> Path:
    """``golden_dir`` (the report's) when promote may write in it: inside the rootdir, or the golden directory the
    project's configuration names (``featviz_golden_dir = ../shared``), or the one ``--golden-dir`` confirms."""
    written = PurePath(os.path.abspath(golden_dir))
    if written.is_relative_to(os.path.abspath(root)):  # as written: a link of the project's own may lead elsewhere
        return golden_dir
    real = golden_dir.resolve()
    if real.is_relative_to(root.resolve()):  # a rootdir named through a link (pytest --rootdir=<a link>)
        return golden_dir
    configured = values.get("featviz_golden_dir", "").strip()
    trusted = [*([root / configured] if configured else []), *([confirmed] if confirmed is not None else [])]
    if any(real == Path(os.path.realpath(os.path.expanduser(os.path.expandvars(p)))) for p in map(str, trusted)):
        return golden_dir
    raise Refused(
        f"the report's golden directory {display_path(golden_dir)} lies outside the rootdir {display_path(root)} and"
        " is not the featviz_golden_dir its configuration names: pass --golden-dir with it to confirm"
    )


def _promote_golden_dir(data: dict[str, Any], root: Path) -> Path:
    """The golden directory promote may write in: ``run.golden_dir`` relative to the rootdir (outside it too, as
    ``featviz_golden_dir = ../shared`` puts it), or the rootdir itself for an older report that does not name one."""
    run = data.get("run", ABSENT)
    if run is ABSENT or run is None:
        return root
    if not isinstance(run, dict):
        raise Refused(f"{REPORT_JSON} is damaged: 'run' is {shown(run)}, not an object")
    text = path_text(run.get("golden_dir", ABSENT), "run.golden_dir")
    if PurePath(text).is_absolute() or PureWindowsPath(text).is_absolute():
        raise Refused(
            f"run.golden_dir {text!r} is an absolute path: a report gives its golden directory relative to the rootdir"
        )
    return root / text


def _golden_target(root: Path, golden_dir: Path, text: str, key: str = "golden_dir") -> Path:
    """``root / text``, a snapshot's golden directory (the report's ``key``), when it lies strictly inside
    ``golden_dir``: as written and once ``..`` and symbolic links are resolved."""
    where = f"the golden directory {display_path(golden_dir)}"
    return inside(root, text, golden_dir, f"{key} {text!r}", where)


def _promoted_to(entry: dict[str, Any], root: Path, golden_dir: Path) -> Path:
    """The golden directory an entry's current render is promoted into: its ``golden_dir``, or its ``update_dir``
    when it has one (a drift of the shared golden on a device without its own, keyed goldens), which must be a
    device-keyed sibling of ``golden_dir`` (``0@cuda`` beside ``0``)."""
    shared = path_text(entry.get("golden_dir", ABSENT), "golden_dir")
    directory = _golden_target(root, golden_dir, shared)
    if entry.get("update_dir") is None:
        return directory
    text = path_text(entry["update_dir"], "update_dir")
    keyed, named = PurePosixPath(text.replace("\\", "/")), PurePosixPath(shared.replace("\\", "/"))
    if keyed.parent != named.parent or not keyed.name.startswith(f"{named.name}@") or keyed.name == f"{named.name}@":
        raise Refused(f"update_dir {text!r} is not a device's golden beside golden_dir {shared!r} ({named.name}@...)")
    return _golden_target(root, golden_dir, text, "update_dir")


def _refuse_changed(directory: Path, renders: list[_Chosen], now: str | None) -> None:
    """Raise when the golden in ``directory`` is not the one the run compared with (a pull, a checkout or another
    update since the report was written: writing the render would undo that change unseen), nor already the render
    (a second promote). ``now``: the digest of the golden there now ("": none; ``None``: damaged, so changed, as a
    damaged golden had no render in the report). Reports written before the digest was recorded are not checked."""
    from pytest_featviz.golden import sidecar_digest

    seen = {render.replaces for render in renders}
    if None in seen:
        return
    if now is not None and (now in seen or now == sidecar_digest(renders[0].sidecar)):
        return
    found_none = seen == {""}
    what = "was damaged" if now is None else "was deleted" if not now else "was created" if found_none else "changed"
    raise Refused(
        f"the golden {display_path(directory)} {what} after the run that wrote this report"
        f" {'found none there' if found_none else 'compared with it'} (a pull, a checkout, another run?): promoting"
        " would replace it unseen; run pytest again and review the new report"
    )


def _refuse_to_replace(directory: Path) -> str | None:
    """Raise when the golden in ``directory`` is one that ``--featviz-update`` would not write over either: a Git LFS
    pointer, a newer format, a golden it cannot read; a damaged golden it re-creates, as ``--featviz-update`` does.
    Returns the digest of the golden there ("": none; ``None``: damaged), for :func:`_refuse_changed`."""
    from pytest_featviz.golden import SIDECAR, GoldenError, read_sidecar
    from pytest_featviz.goldenwrite import refuse_unfetched

    refuse_unfetched(directory)
    # only a missing sidecar: one that is a directory or a named pipe is refused below, in the words of a check
    if not (directory / SIDECAR).exists() and any(directory.glob("*.png")):
        # Not a golden: what a report names is not trusted, and replacing the directory would drop its pictures.
        raise Refused(
            f"{display_path(directory)} holds pictures but no {SIDECAR}, so it is no golden promote replaces (if it is"
            " a golden that lost its sidecar, re-create it with pytest --featviz-update)"
        )
    try:
        golden = read_sidecar(directory)
    except GoldenError as exc:
        if not exc.recreatable:
            raise
        return None
    return golden.digest if golden is not None else ""
