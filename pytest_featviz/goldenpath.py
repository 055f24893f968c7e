"""Golden paths: where a snapshot's golden lives, under names that are the same on Linux, macOS and Windows.

A snapshot's golden is the directory ``<golden dir>/<test file without .py>/<test name>/<snapshot name>/``
(:func:`snapshot_dir`), each segment a file-name-safe form of its name (:func:`sanitize_name`), never outside the
golden directory. A segment that differs only in letter case from a sibling on disk is found before the directory is
used (:func:`case_twin`): the two would be one directory on macOS and Windows. An environment-keyed golden lives
beside the shared one as ``<snapshot>@<device type>`` (:func:`keyed_dir`, :func:`shared_dir`).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path

from pytest_featviz.golden import SIDECAR, GoldenError, sidecar_string
from pytest_featviz.records import FeatvizError

KEY_SEPARATOR = "@"  # environment-keyed goldens live beside the shared one: <snapshot>@<device type>
_KEY = re.compile(r"[a-z][a-z0-9_]*")
MAX_NAME_LENGTH = 80
DIGEST_LENGTH = 10  # hex digits of the digest sanitize_name appends to a name it changed or cut

UNSAFE = re.compile(r"[^A-Za-z0-9._\-\[\]+=,@]")  # characters sanitize_name replaces
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL"} | {f"{p}{i}" for p in ("COM", "LPT") for i in range(1, 10)}


def sanitize_name(name: str, max_length: int = MAX_NAME_LENGTH) -> str:
    """A file-name-safe form of ``name``, the same on Linux, macOS and Windows.

    Characters outside ``A-Z a-z 0-9 . _ - [ ] + = , @`` become ``_``; a leading dot, trailing dots and Windows'
    reserved device names are defused; when anything was changed or the name is longer than ``max_length``, a
    short hash of the name (in Unicode's composed form, NFC) is appended so two different names never share a
    file.
    """
    normalized = unicodedata.normalize("NFC", name)
    safe = UNSAFE.sub("_", normalized)
    if safe.startswith("."):
        safe = "_" + safe[1:]
    safe = safe.rstrip(". ")
    if not safe:
        safe = "_"
    if safe.split(".")[0].upper() in _WINDOWS_RESERVED:
        safe = "_" + safe
    if safe != normalized or len(safe) > max_length:
        # of the normalized name: a file name decomposed (NFD: macOS, a name committed from a Mac) is the same name
        digest = hashlib.sha256(normalized.encode("utf-8", "surrogatepass")).hexdigest()[:DIGEST_LENGTH]
        safe = f"{safe[: max_length - len(digest) - 1]}-{digest}"
    return safe


def folders_of(test_file: str, test_name: str) -> list[str]:
    """The folders of a test's goldens below the golden directory, as names only (nothing on disk is read).

    ``test_file`` is the test module's path relative to the rootdir, with ``/`` separators (as in a node id).
    """
    parts = [p for p in test_file.replace("\\", "/").split("/") if p not in ("", ".")]
    if parts and parts[-1].endswith(".py"):
        parts[-1] = parts[-1][: -len(".py")]
    return [sanitize_name(p) for p in parts] + [sanitize_name(test_name)]


def snapshot_dir(golden_root: Path, test_file: str, test_name: str, snapshot_name: str) -> Path:
    """The golden directory of one snapshot; never outside ``golden_root``.

    ``test_file`` is the test module's path relative to the rootdir, with ``/`` separators (as in a node id).
    """
    segments = [*folders_of(test_file, test_name), sanitize_name(snapshot_name)]
    path = golden_root.joinpath(*segments)
    root = golden_root.resolve()
    for depth in range(1, len(segments) + 1):  # a folder of the path that is a symbolic link
        try:
            _refuse_link(golden_root.joinpath(*segments[:depth]), golden_root, root)
        except GoldenError as exc:
            exc.unread = path  # the session counts the golden as unreadable, as one it could not read
            raise
        except OSError as exc:  # a folder above it that cannot be searched (goldens another user wrote, umask 077)
            error = GoldenError(f"cannot read golden path {path}: {exc}", recreatable=False)
            error.unread = path
            raise error from None
    if not path.resolve().is_relative_to(root):  # sanitize_name and the links refused make this unreachable
        raise GoldenError(f"refusing to use golden path {path} outside the golden directory {root}", recreatable=False)
    return path


def _refuse_link(folder: Path, golden_root: Path, root: Path) -> None:
    """Raise :class:`GoldenError` when ``folder`` (of a golden path) is a symbolic link that leads out of the golden
    directory, nowhere or round in a loop: a check would read, and an update write, through it. A link that stays
    inside the golden directory is used (a test renamed, its goldens kept under both names)."""
    if not folder.is_symlink():
        return
    try:
        target = folder.resolve(strict=True)
    except (OSError, RuntimeError) as exc:  # RuntimeError: a loop, before Python 3.13
        looping = isinstance(exc, RuntimeError) or getattr(exc, "errno", None) == errno.ELOOP
        why = "loops" if looping else f"leads to {os.readlink(folder)}, which does not exist"
    else:
        if target.is_relative_to(root):
            return
        why = f"leads to {target}, outside the golden directory {golden_root}"
    raise GoldenError(
        f"golden path {folder} is a symbolic link that {why}: pytest-featviz reads and writes goldens only inside the"
        " golden directory; remove the link, or put the folder it stands for in its place",
        recreatable=False,
    )


def case_unique_files(files: Sequence[tuple[str, str, bool]]) -> list[str]:
    """The file names of a snapshot's layers, none differing from another only in letter case (on macOS and Windows
    such two are one file, and a clone keeps one picture). ``files`` holds each layer's (name, file, fixed): a fixed
    file is on disk already (a layer the rewrite keeps) and keeps its name; any other file whose name is taken gets
    the digest of its layer's name (``d.conv.png`` beside ``d.Conv.png``: ``d.conv-<digest>.png``)."""
    taken = {file.lower() for _, file, fixed in files if fixed}
    names = []
    for name, file, fixed in files:
        if not fixed:
            if file.lower() in taken:
                digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:DIGEST_LENGTH]
                stem, suffix = os.path.splitext(file)
                file = f"{stem[: MAX_NAME_LENGTH - len(digest) - 1]}-{digest}{suffix}"
            taken.add(file.lower())
        names.append(file)
    return names


def case_collision(golden_root: Path, directory: Path) -> str | None:
    """Why ``directory`` cannot be used portably, or ``None``: a segment of its path below ``golden_root`` differs
    only in letter case from a sibling already on disk (``test_x[RGB]`` beside ``test_x[rgb]``).

    macOS and Windows file systems ignore case, so there the two are one directory: a clone of the repository
    merges their goldens and the two snapshots overwrite each other's. On Linux both work, which is where such a
    pair is made, so it is refused wherever it is met. Costs one directory listing per path segment.
    """
    twin = case_twin(golden_root, directory)
    return None if twin is None else case_message(*twin, directory)


def case_message(ours: Path, theirs: Path, directory: Path) -> str:
    """The failure message of a golden path ``ours`` (a folder of the snapshot directory ``directory``, or that
    directory) whose case-only twin ``theirs`` exists (:func:`case_twin`), naming what to rename: the snapshot, the
    test, or the test file or a folder above it."""
    if ours == directory:
        rename = "the snapshot (name=)"
    elif ours == directory.parent:
        rename = "the test or its parametrize id"
    else:
        rename = "the test file or the folder it is in"
    return (
        f"golden path {ours} differs only in letter case from {theirs}, which already exists: on case-insensitive"
        f" file systems (macOS, Windows) the two are one directory and the snapshots would overwrite each other's"
        f" goldens; rename {rename} so that the two differ in more than case; if one is left over from a test renamed"
        " in case only, move its goldens to the new name to keep them (git mv, through a temporary name on macOS and"
        " Windows), or delete it (pytest --featviz-prune deletes the goldens of a test that no longer exists) and"
        " run again"
    )


def _holds_goldens(path: Path) -> bool:
    """Whether ``path`` is a folder with a golden's file (a sidecar or a picture) somewhere below it: a stray empty
    folder, or one holding only a ``.gitkeep`` or a README, merges no golden with a case-only twin."""
    for _, folders, files in os.walk(path):  # of a file, or of a folder that cannot be read: nothing
        if any(name == SIDECAR or name.lower().endswith(".png") for name in files):
            return True
        folders[:] = [name for name in folders if not name.startswith(".")]  # a killed write's hidden staging
    return False


def case_twin(golden_root: Path, directory: Path) -> tuple[Path, Path] | None:
    """The first segment of ``directory`` below ``golden_root`` with a sibling on disk that differs from it only in
    letter case and holds goldens, and that sibling; ``None`` when there is none (see :func:`case_collision`)."""
    try:
        segments = directory.relative_to(golden_root).parts
    except ValueError:
        return None
    parent = golden_root
    for segment in segments:
        try:
            siblings = os.listdir(parent)
        except OSError:  # not created yet: nothing below it can collide
            return None
        folded = segment.casefold()
        others = sorted(
            name for name in siblings if name != segment and name.casefold() == folded and _holds_goldens(parent / name)
        )
        if others:
            return parent / segment, parent / others[0]
        parent = parent / segment
    return None


def keyed_dir(directory: Path, key: str) -> Path:
    """The environment-keyed sibling of a snapshot's golden directory: ``<snapshot>@<key>`` (``0@cuda``)."""
    return directory.with_name(directory.name + key_suffix(key))


def key_suffix(key: str) -> str:
    """The end of the name of an environment-keyed golden directory: ``@cuda``."""
    return f"{KEY_SEPARATOR}{sanitize_name(key)}"


# torch's device types: a snapshot name ending in @<one of them> would be the device golden of another snapshot
DEVICE_TYPES = frozenset(
    ["cpu", "cuda", "mps", "xpu", "xla", "hpu", "hip", "ipu", "maia", "meta", "mtia", "lazy", "vulkan", "privateuseone"]
)


def refuse_device_name(directory: Path, name: str, device: str) -> None:
    """With goldens keyed by device, raise :class:`FeatvizError` for a snapshot whose directory name ends in
    ``@<device type>`` (``name="0@cpu"``): that is where the device's own golden of snapshot ``0`` lives, and the
    two would overwrite each other's golden. Refused on every device, so a test does not pass on one and fail on
    another; ``enc@fp16`` names no device and is its own snapshot."""
    base, separator, key = directory.name.rpartition(KEY_SEPARATOR)
    if separator and base and key.lower() in DEVICE_TYPES | {sanitize_name(device).lower()}:  # 0@CPU: 0@cpu on macOS
        raise FeatvizError(
            f"snapshot name {name!r} ends with {KEY_SEPARATOR}{key}: with featviz_golden_key = device that is where the"
            f" {key} golden of snapshot {base!r} lives ({directory}), and the two would overwrite each other's"
            " golden; give the call a name without it"
        )


def shared_dir(directory: Path) -> Path:
    """The shared golden directory a keyed one belongs to (``0@cuda`` -> ``0``); other directories unchanged.

    A directory counts as keyed only when its sidecar says it was made on the device its name ends with: a snapshot
    the test itself named ``enc@fp16`` is a snapshot of its own, not a variant of ``enc``.
    """
    base, separator, key = directory.name.rpartition(KEY_SEPARATOR)
    if separator and base and _KEY.fullmatch(key) and _made_on_device(directory) == key:
        return directory.with_name(base)
    return directory


def _made_on_device(directory: Path) -> str | None:
    """The device type a snapshot's sidecar records, or ``None`` (no readable sidecar, or none recorded)."""
    return sidecar_string(directory, "environment", "device")
