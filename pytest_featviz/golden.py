"""A snapshot's golden: its records, the sidecar format and its checked read, and the errors of a golden that
cannot be used.

A snapshot's golden is a directory (where: :mod:`pytest_featviz.goldenpath`) holding one PNG per layer (the channel
tiles as a mosaic, read back by :mod:`pytest_featviz.goldenpicture`) and ``snapshot.json``, the sidecar, read into a
:class:`SnapshotGolden` of :class:`LayerGolden` entries. Goldens are data: PNG and JSON only, never pickle. The
sidecar is written one channel per line (:func:`sidecar_text`); it is read only from a regular file, and every value
in it is checked against what the writer writes (by :mod:`pytest_featviz.goldencheck`) before anything is decoded or
compared (:func:`read_sidecar`). A snapshot's files are replaced as a whole by :mod:`pytest_featviz.goldenwrite`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import stat
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from pytest_featviz import durable
from pytest_featviz.records import FeatvizError

FORMAT_VERSION = 1
SIDECAR = "snapshot.json"
# optional top-level sidecar entries: environment.Provenance's, and the test file the golden belongs to
PROVENANCE_KEYS = ("environment", "fingerprints", "test")
# Refuse a PNG whose header claims more pixels than this before decoding it (a damaged or hostile file).
MAX_PIXELS = 1 << 26
# Refuse a sidecar larger than this unread: a ResNet-18 snapshot's is 7 KB, all 512 channels of 100 layers' ~7 MB.
MAX_SIDECAR_BYTES = 64 << 20


# How a damaged golden's message ends; the failing test puts the exact command in its place (fixture._user_error).
RECREATE_HINT = "; re-create it with --featviz-update"


class GoldenError(FeatvizError):
    """A golden that exists but cannot be used (damaged, of a newer format, unreadable).

    ``recreatable``: whether ``--featviz-update`` is the way out (a damaged golden), so that the failing test can
    name the command; not for a newer format, an OS error or a golden not fetched from Git LFS. ``unread``: the
    golden snapshot's directory, set where a check could not read it (:func:`pytest_featviz.snapshot.check_snapshot`),
    so that the session counts that golden as unreadable; ``None`` for an error of writing or naming.
    """

    def __init__(self, message: str, *, recreatable: bool = True) -> None:
        super().__init__(message)
        self.recreatable = recreatable
        self.unread: Path | None = None


class GoldenWriteError(GoldenError):
    """A golden that could not be written (a read-only or full disk, a file in the way); the golden there, if any,
    was left as it was. Its snapshot keeps the verdict of its check (drifted, missing), recorded as not written."""


class GoldenNotFetched(GoldenError):
    """A golden file that is a Git LFS pointer: the golden exists, this checkout did not fetch it.

    Unlike a damaged golden, ``--featviz-update`` does not re-create it: writing over the pointer would replace the
    committed golden with whatever the code computes now, without ever comparing the two.
    """


# How a Git LFS pointer file starts ("version https://git-lfs.github.com/spec/v1", then the object's oid and size;
# https://github.com/git-lfs/git-lfs/blob/main/docs/spec.md); shorter than the PNG header read first.
LFS_POINTER_MARK = b"version https://git-lfs."
# A line Git writes into a text file it could not merge ("<<<<<<< HEAD"); JSON never has one.
_CONFLICT_MARKER = re.compile(r"^<{7}( |$)", re.MULTILINE)


def not_fetched(path: Path, what: str) -> GoldenNotFetched:
    """The error of a golden ``what`` (``"picture"`` or ``"sidecar"``) at ``path`` that is a Git LFS pointer."""
    return GoldenNotFetched(
        f"golden {what} {path} is a Git LFS pointer, not the file: this checkout did not fetch the repository's LFS"
        " files; run `git lfs pull` (in CI, check out with LFS, e.g. actions/checkout with `lfs: true`)."
        " --featviz-update will not write over it",
        recreatable=False,
    )


@dataclass(frozen=True, slots=True)
class LayerGolden:
    """One layer of a golden: its picture file and what is needed to compare with it."""

    name: str
    file: str
    shape: tuple[int, ...]
    tile_shape: tuple[int, int]
    channels: tuple[int, ...]
    frames: tuple[tuple[float, float], ...]
    stats: tuple[tuple[float, float, float, float], ...]
    sha256: str
    layout: str = ""  # how the output was read (layout.Layout.label); "" in sidecars written before it existed
    pool: tuple[int, int] = (1, 1)  # average-pooling factors from the channel map to its tile (render.tile_pool)
    # A token image's per-feature statistics (render.feature_statistics): the features' indices and their mean and
    # std over the tokens; empty for other layouts and in sidecars written before they were recorded.
    features: tuple[int, ...] = ()
    feature_stats: tuple[tuple[float, float], ...] = ()

    def frames_array(self) -> np.ndarray[Any, np.dtype[np.float64]]:
        return np.array(self.frames, dtype=np.float64).reshape(len(self.channels), 2)

    def stats_array(self) -> np.ndarray[Any, np.dtype[np.float64]]:
        return np.array(self.stats, dtype=np.float64).reshape(len(self.channels), 4)

    def feature_stats_array(self) -> np.ndarray[Any, np.dtype[np.float64]]:
        return np.array(self.feature_stats, dtype=np.float64).reshape(len(self.features), 2)


@dataclass(frozen=True, slots=True)
class SnapshotGolden:
    """The sidecar of one snapshot: normalization, bit depth and its layers in forward order."""

    normalize: str
    bit_depth: int
    layers: tuple[LayerGolden, ...]
    format: int = FORMAT_VERSION
    # Where the golden was made: {"environment": {...}, "fingerprints": {...}} as written by
    # environment.Provenance.to_sidecar; None in sidecars written before provenance was recorded.
    provenance: dict[str, Any] | None = None
    # the text of the sidecar this golden was read from ("" for one not read from a file), for its digest
    source: str = field(default="", compare=False, repr=False)

    @property
    def digest(self) -> str:
        """:func:`sidecar_digest` of the sidecar this golden was read from ("" for one not read from a file): the
        report records it for a drift, so that promote can tell when the golden changed after the run compared with
        it. Hashed only when asked (a drift, a promote), never on the path of a check that matches."""
        return sidecar_digest(self.source) if self.source else ""

    def layer(self, name: str) -> LayerGolden | None:
        return next((layer for layer in self.layers if layer.name == name), None)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def sidecar_text(golden: SnapshotGolden) -> str:
    """The sidecar JSON of ``golden``: one channel per line, so diffs are short; the same golden gives the same
    text."""
    out = [
        "{",
        f'  "format": {golden.format},',
        f'  "normalize": {_json(golden.normalize)},',
        f'  "bit_depth": {golden.bit_depth},',
        *(f"  {_json(key)}: {_json(value)}," for key, value in (golden.provenance or {}).items()),
        '  "layers": [',
    ]
    for position, layer in enumerate(golden.layers):
        channels = [
            _json(
                {
                    "index": index,
                    "range": list(frame),
                    "mean": st[0],
                    "std": st[1],
                    "min": st[2],
                    "max": st[3],
                }
            )
            for index, frame, st in zip(layer.channels, layer.frames, layer.stats, strict=True)
        ]
        out += [
            "    {",
            f'      "name": {_json(layer.name)},',
            f'      "file": {_json(layer.file)},',
            f'      "sha256": {_json(layer.sha256)},',
            f'      "shape": {_json(list(layer.shape))},',
            f'      "tile": {_json(list(layer.tile_shape))},',
            *([f'      "layout": {_json(layer.layout)},'] if layer.layout else []),
            *([f'      "pool": {_json(list(layer.pool))},'] if layer.pool != (1, 1) else []),
            *(_features_lines(layer) if layer.features else []),
            '      "channels": [',
            ",\n".join(f"        {channel}" for channel in channels),
            "      ]",
            "    }" + ("," if position < len(golden.layers) - 1 else ""),
        ]
    out += ["  ]", "}", ""]
    return "\n".join(out)


def _features_lines(layer: LayerGolden) -> list[str]:
    """A token image's per-feature statistics in the sidecar: indices, means and stds, a line each."""
    return [
        '      "features": {',
        f'        "index": {_json(list(layer.features))},',
        f'        "mean": {_json([mean for mean, _ in layer.feature_stats])},',
        f'        "std": {_json([std for _, std in layer.feature_stats])}',
        "      },",
    ]


# A JSON escape of a UTF-16 surrogate: only where the text holds one can a parsed string hold a lone one.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _unwritten_file(name: str) -> str:
    """What is wrong with a sidecar's layer file name that pytest-featviz never writes (a plain, visible file name of
    the snapshot's own directory), in the words of the error; ``""`` for one it may have written."""
    parts = name.replace("\\", "/").split("/")
    if Path(name).is_absolute() or ".." in parts or ":" in parts[0]:
        return "a layer file outside its directory"
    if Path(name).name != name:
        return "a layer file by a path, not by its file name"
    if name.startswith("."):
        return "a hidden layer file, which pytest-featviz never writes"
    return ""


def _parse_sidecar(data: Any, path: Path) -> SnapshotGolden:
    # goldencheck builds this module's records, so it imports this module; this one imports it here, not at the top
    from pytest_featviz.goldencheck import _MAX_SIZE, _Malformed, _shown, _snapshot, _wrong_file, _wrong_value

    if not isinstance(data, dict):
        raise GoldenError(f"golden sidecar {path} is not a JSON object")
    version = data.get("format")
    if "format" not in data:
        raise GoldenError(f"golden sidecar {path} has no format version")
    if not isinstance(version, int):  # "1" as text, an edit by hand
        raise GoldenError(f"golden sidecar {path} is malformed (format {_shown(version)}, not a whole number)")
    if isinstance(version, bool) or not 1 <= version <= _MAX_SIZE:
        raise GoldenError(f"golden sidecar {path} is malformed (format {_shown(version)})")
    if version > FORMAT_VERSION:
        raise GoldenError(
            f"golden sidecar {path} has format {version}, newer than this pytest-featviz reads ({FORMAT_VERSION});"
            " upgrade pytest-featviz",
            recreatable=False,
        )
    try:
        golden = _snapshot(data, version)
    except _Malformed as exc:
        raise GoldenError(f"golden sidecar {path} is malformed ({exc})") from exc
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise GoldenError(f"golden sidecar {path} is malformed ({type(exc).__name__}: {exc})") from exc
    files: dict[str, str] = {}  # the picture file of each layer before, to its layer's name
    names: set[str] = set()
    for layer in golden.layers:
        wrong_file = _unwritten_file(layer.file)
        if wrong_file:
            raise GoldenError(f"golden sidecar {path} names {wrong_file}: {layer.file!r}")
        if not layer.channels:
            raise GoldenError(f"golden sidecar {path} has an empty layer {layer.name!r}")
        wrong = _wrong_file(layer, files, names) or _wrong_value(layer, golden.normalize)
        if wrong:
            raise GoldenError(f"golden sidecar {path} is malformed (layer {layer.name!r}: {wrong})")
        files[layer.file] = layer.name
        names.add(layer.name)
    return golden


_FILE_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def regular_size(path: Path, what: str) -> int:
    """The size of the golden ``what`` (``"picture"`` or ``"sidecar"``) at ``path``, found by one ``os.stat``
    (which follows links) before it is opened: anything but a regular file is refused (:class:`GoldenError`), since
    opening a named pipe blocks until someone writes to it and a link to ``/dev/zero`` never ends. ``OSError`` as
    ``os.stat`` raises it (``FileNotFoundError``: no such file)."""
    status = os.stat(path)
    if stat.S_ISREG(status.st_mode):
        return status.st_size
    kind = _FILE_KINDS.get(stat.S_IFMT(status.st_mode), "a special file")
    link = f" (a symbolic link to {os.path.realpath(path)})" if path.is_symlink() else ""
    raise GoldenError(
        f"golden {what} {path} is {kind}{link}, not a regular file, so pytest-featviz does not read it; put the"
        " golden's file there (or remove it, and re-create the snapshot with --featviz-update)",
        recreatable=False,
    )


def _sidecar_bytes(path: Path) -> bytes:
    """The bytes of the sidecar at ``path``, refused unread when it is not a regular file (:func:`regular_size`) or
    larger than :data:`MAX_SIDECAR_BYTES`; ``OSError`` as ``os.stat`` and ``open`` raise it."""
    size = regular_size(path, "sidecar")
    data = b""
    if size <= MAX_SIDECAR_BYTES:
        with path.open("rb") as stream:
            data = stream.read(size + 1)
            if len(data) > size:  # it grew since os.stat (or its file system tells no size): read on, to the limit
                data += stream.read(MAX_SIDECAR_BYTES + 1 - len(data))
    if size > MAX_SIDECAR_BYTES or len(data) > MAX_SIDECAR_BYTES:
        raise GoldenError(
            f"golden sidecar {path} is larger than {MAX_SIDECAR_BYTES >> 20} MiB, far more than a snapshot writes"
            " (damaged or replaced); pytest-featviz does not read it"
        )
    return data


def sidecar_string(directory: Path, entry: str, field: str) -> str | None:
    """``data[entry][field]`` of the sidecar in ``directory`` when it is a string, read without checking the rest of
    the sidecar (a quick look for stale detection and device keys); ``None`` when there is no readable sidecar, or
    no such string in it."""
    try:
        value = json.loads(_sidecar_bytes(directory / SIDECAR).decode("utf-8-sig"))[entry][field]
    except (GoldenError, OSError, ValueError, LookupError, TypeError, RecursionError):  # Recursion: nested deep
        return None
    return value if isinstance(value, str) else None


def read_sidecar(directory: Path) -> SnapshotGolden | None:
    """The sidecar of the snapshot in ``directory``; ``None`` when there is no golden there yet."""
    path = directory / SIDECAR
    try:
        raw = _sidecar_bytes(path)
    except FileNotFoundError:
        written = _missing_sidecar(directory)
        if written is None:
            return None
        raw = written
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    if raw.startswith(LFS_POINTER_MARK):
        raise not_fetched(path, "sidecar")
    try:
        # a byte-order mark before UTF-8 (Windows Notepad, PowerShell 5's Out-File -Encoding utf8) changes no value
        text = raw.decode("utf-8-sig")
        data = json.loads(text, object_pairs_hook=_one_value_per_key)
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, raw, exc) from exc
    except _RepeatedKey as exc:  # json keeps the last value: a merge resolved by hand read as the wrong format
        raise GoldenError(f"golden sidecar {path} is malformed ({exc})") from exc
    except RecursionError as exc:  # arrays or objects nested thousands deep
        raise GoldenError(f"golden sidecar {path} is not valid JSON (nested too deep to read)") from exc
    except json.JSONDecodeError as exc:
        if _CONFLICT_MARKER.search(text):
            raise GoldenError(
                f"golden sidecar {path} holds Git merge-conflict markers: both branches changed this snapshot;"
                " resolve it by re-creating the golden with --featviz-update on the merged code, and review the"
                " pictures it writes"
            ) from exc
        if "\0" in text[:4]:  # UTF-16 without its byte-order mark reads as UTF-8 with a NUL every other byte
            raise _not_utf8(path, raw, exc) from exc
        raise GoldenError(f"golden sidecar {path} is not valid JSON ({exc})") from exc
    except ValueError as exc:  # a whole number of more digits than Python converts (sys.get_int_max_str_digits)
        found = str(exc).split(";")[0]
        raise GoldenError(f"golden sidecar {path} is malformed (a number too long to read: {found})") from exc
    golden = replace(_parse_sidecar(data, path), source=text)
    where = _lone_surrogate(data) if _SURROGATE_ESCAPE.search(text) else None
    if where is not None:
        raise GoldenError(f"golden sidecar {path} is malformed ({where} holds a lone UTF-16 surrogate: no text)")
    return golden


class _RepeatedKey(ValueError):
    """An object of a sidecar names a key twice (the writer never does)."""


def _one_value_per_key(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(pairs)
    if len(data) < len(pairs):
        keys = [key for key, _ in pairs]
        repeated = next(key for index, key in enumerate(keys) if key in keys[:index])
        raise _RepeatedKey(f"key {repeated!r} appears twice in one object")
    return data


def _missing_sidecar(directory: Path) -> bytes | None:
    """The sidecar of a snapshot whose sidecar was not there: ``None`` when there is no golden; its bytes when
    another process was writing it (an xdist worker running a repeat of the same test creates or replaces the golden
    this one reads: it is waited for, then read). Raises :class:`GoldenError` for what a write or a person left: a
    killed write's hidden copy beside a missing golden, pictures without their sidecar."""
    path = directory / SIDECAR
    deadline = time.monotonic() + durable.WAIT_FOR_WRITERS_S
    while True:
        waited = durable.wait_for_writers(directory, max(deadline - time.monotonic(), 0))
        try:
            # also a write that ended between the first read and this one (its hidden copies already gone)
            return _sidecar_bytes(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _unreadable(path, exc) from exc
        if not waited or time.monotonic() >= deadline:
            break
    # a write another process started since is no leftover: the golden is missing until it ends, and then there
    leftovers = durable.leftovers(directory)
    if leftovers:  # the first holds the previous golden when there is one
        previous = leftovers[0]
        how = "re-run with --featviz-update"
        if ".featviz-old-" in previous.name and (previous / SIDECAR).is_file() and not os.path.lexists(directory):
            # the golden it was replacing, whole: put back, the next check compares against it (not where the
            # folder still stands without its sidecar: an mv would move the old golden into it)
            how = (
                f"it holds the golden that update was replacing: put it back with"
                f"  mv {shlex.quote(str(previous))} {shlex.quote(str(directory))}  to check against it, or {how}"
                " to write it anew, unchecked"
            )
        raise GoldenError(
            f"golden snapshot {directory} is missing but an interrupted --featviz-update left"
            f" {previous.name} beside it; {how}"
        )
    if directory.is_dir() and any(p.suffix.lower() == ".png" for p in directory.iterdir()):
        raise GoldenError(
            f"golden snapshot {directory} has pictures but no sidecar {SIDECAR} (deleted or lost in a merge?);"
            " restore it, or re-create the snapshot with --featviz-update"
        )
    return None


def _unreadable(path: Path, exc: OSError) -> GoldenError:
    return GoldenError(f"cannot read golden sidecar {path}: {exc}{file_in_the_way(path.parent)}", recreatable=False)


def _not_utf8(path: Path, raw: bytes, exc: ValueError) -> GoldenError:
    """The error of a sidecar that is not UTF-8 (as the writer writes it): re-saved by an editor or a shell."""
    if raw.startswith((b"\xff\xfe\0\0", b"\0\0\xfe\xff")) or b"\0\0\0" in raw[:4]:  # three NULs per ASCII character
        found = "it is UTF-32"
    elif raw.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\0" in raw[:4]:
        found = "it is UTF-16, as Windows PowerShell's > and Out-File save text"
    else:
        offset = exc.start if isinstance(exc, UnicodeDecodeError) else 0
        found = f"byte 0x{raw[offset]:02x} at offset {offset} (Latin-1 or another legacy encoding?)"
    return GoldenError(
        f"golden sidecar {path} is not UTF-8: {found}; save it as UTF-8, or re-create it with --featviz-update"
    )


def _lone_surrogate(data: Any) -> str | None:
    """Where a string of the parsed sidecar ``data`` (a key or a value) holds a lone UTF-16 surrogate (from an
    escape such as ``"\\ud800"``), which no report, message or rewrite can encode; ``None`` when none does."""
    found: list[tuple[str, Any]] = [("the sidecar", data)]
    while found:
        where, value = found.pop()
        if isinstance(value, str) and _LONE_SURROGATE.search(value):
            return where
        if isinstance(value, dict):
            for key, item in value.items():
                if _LONE_SURROGATE.search(key):
                    return f"a key of {where}"
                found.append((key if where == "the sidecar" else f"{where}.{key}", item))
        elif isinstance(value, list):
            found.extend((f"{where}[{position}]", item) for position, item in enumerate(value))
    return None


def file_in_the_way(directory: Path) -> str:
    """``; golden/test_m is a file ...`` when a file sits where ``directory`` or one of its parents should be (the
    OS error only says "Not a directory"); else ``""``."""
    for place in (directory, *directory.parents):
        if place.is_dir():
            return ""
        if place.exists() or place.is_symlink():
            return f"; {place} is a file where pytest-featviz keeps a golden directory: move it away or delete it"
    return ""


def sidecar_digest(text: str) -> str:
    """A digest of a sidecar's ``text`` (decoded, without its byte-order mark): the same whatever the file's line
    endings, so that a checkout with ``core.autocrlf`` has the digest of the file that was committed."""
    return sha256_hex(text.replace("\r\n", "\n").encode("utf-8"))


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
