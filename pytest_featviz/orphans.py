"""Goldens of deleted test files: which golden snapshots belong to a test file that no longer exists (one role of
:mod:`pytest_featviz.stale`, which reports and prunes them with the other stale goldens).

A golden's directory names its test file under the rootdir (:func:`goldenpath.snapshot_dir` in reverse), and its
sidecar records that file relative to the snapshot's directory (``"test": {"file": ...}``). Either reading alone can
be wrong: the directory cannot tell a deleted file from a second golden directory kept inside this one, a copy, or
goldens written under another rootdir; the record names another file once the golden directory moves or is reached
through a link. :func:`find_orphans` takes a golden for orphaned only when both name the same file and it is
missing. This module imports only the standard library at pytest start-up (:mod:`pytest_featviz.stale` uses
:func:`key` and :func:`covers` there).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

HASHED = re.compile(r"-[0-9a-f]{10}$")  # the digest goldenpath.sanitize_name appends to a name it had to change


def key(path: str | Path) -> str:
    """A path as compared: absolute and normalized, in the letter case the file system compares."""
    return os.path.normcase(os.path.abspath(path))


def covers(collector: str, test_file: str) -> bool:
    """Whether the collector with node id ``collector`` (a failed or skipped one) lies over ``test_file``."""
    if collector in ("", "."):
        return True
    collector_file = collector.split("::", 1)[0].rstrip("/")
    return collector_file == test_file or test_file.startswith(collector_file + "/")


def find_orphans(
    golden_root: Path,
    rootdir: Path,
    seen_files: Iterable[str],
    collect_errors: Iterable[str],
    used: Callable[[Path], bool],
    file_dir: Callable[[str], Path | None],
) -> list[Path]:
    """Golden snapshot directories whose test file no longer exists.

    ``seen_files`` are the test files this run collected (rootdir-relative, as the golden paths name them), and
    ``file_dir`` gives the golden directory of one. The directory reading (:func:`_gone`) must find the file missing
    from a directory that is on disk, from which this run collected a test file; the record (:func:`recorded`) must
    name that same file. Snapshots ``used`` in this run, goldens without the record (written before it was), a
    missing name that ``sanitize_name`` changed, and everything when the golden root lies outside the rootdir are
    never orphaned.
    """
    from pytest_featviz.golden import SIDECAR

    if not golden_root.resolve().is_relative_to(rootdir.resolve()):
        return []
    seen = set(seen_files)
    errors = list(collect_errors)
    owned = {key(d) for d in map(file_dir, seen) if d is not None}
    collected_from = {key((rootdir / test_file).parent) for test_file in seen}
    found: dict[Path, set[str]] = {}  # golden file directory -> the paths of the missing test file it names
    orphans: list[Path] = []
    for sidecar in sorted(golden_root.rglob(SIDECAR)):
        snapshot = sidecar.parent
        parts = snapshot.relative_to(golden_root).parts
        if not sidecar.is_file() or len(parts) < 3 or any(part.startswith(".") for part in parts):
            continue  # not file/test/snapshot, or inside a killed write's hidden copy
        directory = snapshot.parent.parent
        if directory not in found:
            found[directory] = set() if key(directory) in owned else _gone(rootdir, parts[:-2], collected_from, errors)
        if found[directory] and not used(snapshot) and recorded(sidecar) in found[directory]:
            orphans.append(snapshot)
    return orphans


def _gone(rootdir: Path, segments: tuple[str, ...], collected_from: set[str], errors: list[str]) -> set[str]:
    """The paths (:func:`key`) the missing test file whose goldens lie at ``segments`` below the golden root had, in
    a directory this run collected a test file from; empty when it is there, or cannot be judged."""
    from pytest_featviz.goldenpath import sanitize_name

    directories = [rootdir]  # every directory the segments may name: on Linux, tests/ and Tests/ are two
    for segment in segments[:-1]:
        directories = [d / entry for d in directories for entry in _names(d) if sanitize_name(entry) == segment]
    stem = segments[-1]
    if not directories or HASHED.search(stem) is not None:
        return set()
    for directory in directories:
        if any(sanitize_name(entry[:-3] if entry.endswith(".py") else entry) == stem for entry in _names(directory)):
            return set()
    relative = [os.path.relpath(d / stem, rootdir).replace(os.sep, "/") for d in directories]
    if any(covers(error, path) for error in errors for path in relative):
        return set()
    return {key(d / name) for d in directories if key(d) in collected_from for name in (f"{stem}.py", stem)}


def recorded(sidecar: Path) -> str | None:
    """The test file a sidecar records, relative to the snapshot's directory, as a path (:func:`key`) joined as text:
    no link on the way is followed, so a golden directory reached through a link, or moved, names another file than
    the one its directory names, and is not judged. None when it records none, or cannot be read."""
    from pytest_featviz.golden import sidecar_string

    value = sidecar_string(sidecar.parent, "test", "file")
    return key(os.path.normpath(os.path.join(sidecar.parent, value))) if value else None


def _names(directory: Path) -> list[str]:
    """The entries of ``directory`` by name; none when it is no directory that can be read."""
    try:
        return sorted(entry.name for entry in os.scandir(directory))
    except OSError:
        return []
