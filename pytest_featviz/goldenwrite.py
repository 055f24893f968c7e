"""Golden writes: a snapshot's pictures and sidecar replaced as a whole, or not at all.

:func:`write_files` builds the new snapshot in a hidden sibling directory and switches it into place through
:mod:`pytest_featviz.durable`, so a run killed at any moment leaves the old snapshot or the new one; a file whose
bytes would not change is not written at all, so its mtime stays, and files and folders pytest-featviz does not
write (notes, ``.gitattributes``, ``.ipynb_checkpoints``) move with the snapshot. :func:`refuse_unfetched` keeps
a write from replacing a golden this checkout did not fetch from Git LFS; :func:`remove_created` undoes the
creation of a snapshot's golden.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path

from pytest_featviz import durable
from pytest_featviz.golden import LFS_POINTER_MARK, SIDECAR, GoldenWriteError, file_in_the_way, not_fetched


def remove_created(directory: Path, top: Path) -> None:
    """Undo the creation of a snapshot's golden: the files this module writes in ``directory``, then the directories
    left empty from it up to ``top`` (which ``directory`` lies in). Files someone else put there stay, and so do
    the directories holding them."""
    for path in [directory / SIDECAR, *own_pictures(directory)]:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    for place in (directory, *directory.parents):
        try:
            place.rmdir()
        except OSError:  # not empty
            return
        if place == top:
            return


def refuse_unfetched(directory: Path) -> None:
    """Raise :class:`~pytest_featviz.golden.GoldenNotFetched` when a picture of the snapshot in ``directory`` is a
    Git LFS pointer (a sidecar that is one is refused by :func:`~pytest_featviz.golden.read_sidecar`): what replaces
    a golden must never write over it."""
    for picture in own_pictures(directory) if directory.is_dir() else ():
        with contextlib.suppress(OSError), picture.open("rb") as stream:
            if stream.read(len(LFS_POINTER_MARK)) == LFS_POINTER_MARK:
                raise not_fetched(picture, "picture")


def write_files(directory: Path, sidecar: str, pictures: dict[str, bytes]) -> list[Path]:
    """Replace a snapshot's golden as a whole: its pictures and its sidecar switch together, or not at all.

    ``pictures`` maps a layer file name to PNG bytes; a layer absent from it keeps the file already on disk (copied
    with its mtime). Pictures of layers the sidecar no longer lists are dropped; files that are not PNGs stay. The
    new snapshot is built in a hidden sibling directory and renamed into place, so a run killed at any moment leaves
    the old snapshot or the new one, plus at most a hidden leftover that the next write removes. Nothing is written
    when no byte would change. Returns the files whose bytes changed; raises :class:`GoldenWriteError` naming the path
    when the golden cannot be written, with the old golden left as it was.
    """
    directory = _linked(directory)
    payload = sidecar.encode("utf-8")
    kept = [str(layer["file"]) for layer in json.loads(sidecar)["layers"]]
    for attempt in range(durable.SWITCH_ATTEMPTS):
        try:
            return _write_once(directory, payload, pictures, kept)
        except FileNotFoundError as exc:
            # Another process writing this snapshot moved the directory aside while it was read (two update runs
            # at once): read it again. The directory may be missing at that very moment, between the other write's
            # two renames, so it is not asked whether it exists; a picture that stays missing fails every attempt.
            if attempt + 1 < durable.SWITCH_ATTEMPTS:
                time.sleep(0.001 * (attempt + 1))
                continue
            raise _write_error(directory, exc) from exc
        except OSError as exc:
            raise _write_error(directory, exc) from exc
    raise AssertionError("unreachable")  # pragma: no cover


def create_files(directory: Path, sidecar: str, pictures: dict[str, bytes]) -> bool:
    """Write the golden of a snapshot that has none, as :func:`write_files` does, unless another process created one
    since it was found missing (an xdist worker running a repeat of the same test): that golden is left as it is
    and ``False`` returned, so the caller checks against it. Files someone else put in a directory without a golden
    (notes) stay, moved with the new snapshot. Raises :class:`GoldenWriteError` when the golden cannot be written."""
    directory = _linked(directory)
    files = {**pictures, SIDECAR: sidecar.encode("utf-8")}
    try:
        if durable.switch_directory(directory, files, exclusive=True):
            return True
    except OSError as exc:
        raise _write_error(directory, exc) from exc
    if (directory / SIDECAR).exists() or any(own_pictures(directory)):
        return False
    write_files(directory, sidecar, pictures)  # a directory of someone else's files only
    return True


def _linked(directory: Path) -> Path:
    """The folder a snapshot's golden is written in: ``directory``, or the folder it leads to when it is a symbolic
    link (one that stays inside the golden directory, as :func:`~pytest_featviz.goldenpath.snapshot_dir` checks).
    A write replaces that folder, which every link to it shares; replacing the link moved it aside as a leftover
    and left the folder with the old golden."""
    return Path(os.path.realpath(directory)) if directory.is_symlink() else directory


def _write_once(directory: Path, payload: bytes, pictures: dict[str, bytes], kept: list[str]) -> list[Path]:
    old = {p.name for p in own_pictures(directory)} if directory.is_dir() else set()
    # each picture on disk is read once: to tell what changed, and to copy the unchanged ones
    previous = {name: _bytes_of(directory / name) if name in old else None for name in kept}
    changed = [directory / name for name in kept if name in pictures and previous[name] != pictures[name]]
    sidecar_same = _bytes_of(directory / SIDECAR) == payload
    if not sidecar_same:
        changed.append(directory / SIDECAR)
    if not changed and old <= set(kept):
        return []
    if any(_holds_goldens(entry) for entry in _entries(directory)):
        # Another test file's goldens nest inside this directory (pathological names): a directory switch would
        # move them too, away from a writer of theirs, so fall back to file-by-file replacement, sidecar last.
        _write_in_place(directory, payload, pictures, kept)
        return changed
    files: dict[str, bytes] = {}
    same = []  # pictures whose bytes do not change: the new snapshot gets them with their mtime
    for name in kept:
        data, before = pictures.get(name), previous[name]
        if data is None or data == before:
            if before is None:  # to be kept, but not on disk
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(directory / name))
            files[name] = before
            same.append(name)
        else:
            files[name] = data
    if sidecar_same:  # a damaged picture re-created: the sidecar keeps its mtime, as unchanged pictures do
        same.append(SIDECAR)
    # someone's notes or .gitattributes move with the snapshot
    durable.switch_directory(directory, {**files, SIDECAR: payload}, same, _foreign_files(directory))
    return changed


def _write_error(directory: Path, exc: OSError) -> GoldenWriteError:
    """The error of a golden that could not be written: the OS's, and what is left there (the old golden, or none)."""
    left = "the golden there was left as it was" if (directory / SIDECAR).is_file() else "nothing was written"
    return GoldenWriteError(
        f"cannot write golden snapshot {directory}: {exc}{file_in_the_way(directory)}; {left}", recreatable=False
    )


def _bytes_of(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _write_in_place(directory: Path, payload: bytes, pictures: dict[str, bytes], kept: list[str]) -> None:
    for name in kept:
        if name in pictures:
            durable.write_atomic(directory / name, pictures[name])
    durable.write_atomic(directory / SIDECAR, payload)
    for stale in own_pictures(directory):
        if stale.name not in kept:
            stale.unlink()


def _entries(directory: Path) -> list[Path]:
    try:
        return list(directory.iterdir())
    except OSError:  # no directory yet
        return []


def own_pictures(directory: Path) -> Iterable[Path]:
    """The PNGs of a snapshot directory (``.PNG`` too: a picture renamed by hand, which would stay beside its
    rewritten ``.png`` as a pair that a case-insensitive checkout merges into one file)."""
    return sorted(p for p in _entries(directory) if _is_png(p) and p.is_file())


def _is_png(path: Path) -> bool:
    return path.suffix.lower() == ".png"


def _foreign_files(directory: Path) -> list[Path]:
    """What a snapshot directory holds that pytest-featviz does not write: files other than its PNGs and sidecar,
    links, and folders (``.ipynb_checkpoints``, someone's notes; :func:`_write_once` switches a directory only when
    none of them holds a golden)."""
    return sorted(
        p
        for p in _entries(directory)
        if p.name != SIDECAR and not (_is_png(p) and p.is_file())  # a folder named x.png is no picture
    )


def _holds_goldens(path: Path) -> bool:
    """Whether ``path`` is a folder (not a link to one) with a golden sidecar somewhere inside."""
    if path.is_symlink() or not path.is_dir():
        return False
    return any(SIDECAR in files for _, _, files in os.walk(path))
