"""The drift report's manifest: which files in the report directory are ours.

Every file the report writes is recorded in ``.featviz-manifest`` the moment it is written, with the sha256 of what
was written (xdist workers append to it at the same time), so that the next session, or an earlier attempt's rerun,
removes exactly those files and nothing else. A file the manifest does not list, or one put in place of a listed
file since (its content is not what the report wrote), is never overwritten nor removed, and neither the manifest
nor a file is written through a symbolic link in the report directory. :mod:`pytest_featviz.report` writes every
file of the report through here.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
from pathlib import Path

MANIFEST = ".featviz-manifest"


def _record(report_dir: Path, path: str | Path, data: bytes) -> None:
    """Add ``path`` to the manifest of files this plugin wrote, with the hash of ``data``, what it wrote there. One
    short line per ``write`` in append mode, so xdist workers can add to it at the same time."""
    line = f"{_entry(report_dir, path)}\t{hashlib.sha256(data).hexdigest()}\n"
    report_dir.mkdir(parents=True, exist_ok=True)
    _refuse_linked_manifest(report_dir)
    # never through a link put there since: appending would write where it points, maybe outside
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    with os.fdopen(os.open(report_dir / MANIFEST, flags, 0o644), "a", encoding="utf-8") as stream:
        stream.write(line)


def _refuse_linked_manifest(report_dir: Path) -> None:
    """Raise ``OSError`` when the manifest is a symbolic link: the report would record its files through it."""
    if (report_dir / MANIFEST).is_symlink():
        raise OSError(errno.EEXIST, "the report's manifest is a symbolic link; remove it", str(report_dir / MANIFEST))


def _refuse_linked_folders(report_dir: Path, path: Path) -> None:
    """Raise ``OSError`` when a folder between the report directory and ``path`` is a symbolic link: the file, and
    the folders made for it, would be written where the link leads (outside the report directory, into the golden
    directory). The report directory itself may be a link; the session checks where it leads."""
    try:
        relative = path.parent.relative_to(report_dir)
    except ValueError:
        raise OSError(errno.EXDEV, "not inside the report directory", str(path)) from None
    for depth in range(1, len(relative.parts) + 1):
        folder = report_dir.joinpath(*relative.parts[:depth])
        if folder.is_symlink():
            raise OSError(
                errno.ELOOP,
                "a folder in the report directory is a symbolic link, and the report writes only inside its"
                " directory; remove the link",
                str(folder),
            )


def _entry(report_dir: Path, path: Path | str) -> str:
    """``path`` as the manifest lists it: relative to the report directory, with forward slashes."""
    return Path(os.path.relpath(path, report_dir)).as_posix()


_HASHED = re.compile(r"(.*)\t([0-9a-f]{64})")


def _listed(report_dir: Path) -> dict[str, set[str] | None]:
    """The files the manifest lists, with the hashes of what was written to each (a file may be written more than
    once); ``None`` for a line without one (a manifest written before they were recorded: any content counts)."""
    try:
        text = (report_dir / MANIFEST).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return {}
    listed: dict[str, set[str] | None] = {}
    for line in text.splitlines():
        if "\x00" in line or not line:  # a damaged line names no file of ours
            continue
        hashed = _HASHED.fullmatch(line)
        entry = hashed.group(1) if hashed else line
        hashes = listed.get(entry, set())
        if hashed and hashes is not None:
            hashes.add(hashed.group(2))
            listed[entry] = hashes
        else:
            listed[entry] = None
    return listed


def _ours(path: Path, hashes: set[str] | None) -> bool:
    """Whether the listed file at ``path`` still holds what the report wrote there (not a file put in its place)."""
    if hashes is None:
        return True
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() in hashes
    except OSError:
        return False


def refuse_foreign(report_dir: Path, *paths: Path) -> None:
    """Raise ``FileExistsError`` when one of ``paths`` holds a file this plugin did not write: one the manifest
    does not list (what the previous report wrote was removed at session start; what this session wrote is listed),
    or one whose content is not what it wrote there.
    A report directory pointed at a folder of someone else's files (``--featviz-report-dir site``) leaves them be."""
    present = [path for path in paths if path.exists() or path.is_symlink()]
    if not present:
        return
    listed = _listed(report_dir)
    for path in present:
        entry = _entry(report_dir, path)
        if entry not in listed or not _ours(path, listed[entry]):
            raise FileExistsError(
                errno.EEXIST,
                "a file pytest-featviz did not write is in the way (it never overwrites one, nor one of its own"
                " changed since it wrote it): move it away or delete it, or choose another --featviz-report-dir",
                str(path),
            )


def write_ours(report_dir: Path, path: Path, data: bytes) -> None:
    """:func:`write_recorded` where :func:`refuse_foreign` allows it."""
    refuse_foreign(report_dir, path)
    write_recorded(report_dir, path, data)


def write_recorded(report_dir: Path, path: Path, data: bytes) -> None:
    """``write_atomic``, and the file recorded in the manifest at once, so that a report cut short by an error is
    still cleared by the next session."""
    from pytest_featviz.durable import write_atomic

    _refuse_linked_manifest(report_dir)  # before the file: written unrecorded, it would count as someone else's
    _refuse_linked_folders(report_dir, path)
    write_atomic(path, data)
    _record(report_dir, path, data)


def remove_listed(report_dir: Path, within: Path) -> list[Path]:
    """Remove the files under ``within`` that the manifest lists and the folders they leave empty (up to the report
    directory). Files the manifest does not list, that lie outside the report directory, or that hold something
    else than the report wrote there, are never touched."""
    root, base = report_dir.resolve(), within.resolve()
    removed: list[Path] = []
    folders: set[Path] = set()
    # The manifest names files by their path from the report directory: one outside ``within`` by its text is not
    # resolved (a rerun of each of hundreds of drifted tests resolved every file of the report, once per test).
    prefix = "" if base == root else _entry(report_dir, within).rstrip("/") + "/"
    for line, hashes in sorted(_listed(report_dir).items()):
        if prefix and not line.startswith(prefix):
            continue
        path = (report_dir / line).resolve()
        if not path.is_relative_to(root) or not path.is_relative_to(base) or not path.is_file():
            continue
        if not _ours(path, hashes):  # someone's file put in place of the report's: theirs now
            continue
        path.unlink()
        removed.append(path)
        folders.update(p for p in path.parents if p.is_relative_to(root) and p != root)
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return removed


def tidy(report_dir: Path) -> None:
    """Remove the manifest when no file it lists is left, and the report directory when that empties it (nothing
    without a manifest: the directory is then not the report's)."""
    if not (report_dir / MANIFEST).is_file():
        return
    root = report_dir.resolve()
    for line, hashes in _listed(report_dir).items():
        path = (root / line).resolve()
        if path.is_relative_to(root) and path.is_file() and _ours(path, hashes):
            return
    (report_dir / MANIFEST).unlink()
    if not any(report_dir.iterdir()):
        report_dir.rmdir()


def remove_stale(report_dir: Path) -> list[Path]:
    """Remove the files an earlier session wrote (as listed in its manifest), the folders they leave empty, the
    manifest, and the report directory when that empties it. Returns what was removed."""
    removed = remove_listed(report_dir, report_dir)
    tidy(report_dir)
    return removed


def only_ours(report_dir: Path) -> bool:
    """Whether everything in ``report_dir`` is the report's: its manifest and what the manifest lists."""
    ours = {MANIFEST, *(Path(line).parts[0] for line in _listed(report_dir))}
    return all(entry.name in ours for entry in report_dir.iterdir())
