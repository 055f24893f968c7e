"""Goldens on disk: where they live, sanitized names, the sidecar format, checked reads and whole-snapshot writes.

A snapshot's golden is a directory ``<golden dir>/<test file without .py>/<test name>/<snapshot name>/`` holding
one PNG per layer (the channel tiles as a mosaic) and ``snapshot.json``, the sidecar. Goldens are data: PNG and
JSON only, never pickle. A snapshot is switched from old to new as a whole (:func:`write_files`, through
:mod:`pytest_featviz.durable`); a file whose bytes would not change is not written at all, so its mtime stays.
PNG headers and every sidecar value are checked before anything is decoded or compared.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import math
import os
import re
import time
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pytest_featviz import durable, png
from pytest_featviz.records import NORMALIZE_MODES, FeatvizError
from pytest_featviz.render import TileArray, mosaic_size

FORMAT_VERSION = 1
SIDECAR = "snapshot.json"
PROVENANCE_KEYS = ("environment", "fingerprints")  # optional top-level sidecar entries (environment.Provenance)
KEY_SEPARATOR = "@"  # environment-keyed goldens live beside the shared one: <snapshot>@<device type>
_KEY = re.compile(r"[a-z][a-z0-9_]*")
MAX_NAME_LENGTH = 80
# Refuse a PNG whose header claims more pixels than this before decoding it (a damaged or hostile file).
MAX_PIXELS = 1 << 26

_UNSAFE = re.compile(r"[^A-Za-z0-9._\-\[\]+=,@]")
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL"} | {f"{p}{i}" for p in ("COM", "LPT") for i in range(1, 10)}


class GoldenError(FeatvizError):
    """A golden that exists but cannot be used (damaged, of a newer format, unreadable).

    ``recreatable``: whether ``--featviz-update`` is the way out (a damaged golden), so that the failing test can
    name the command; not for a newer format, an OS error or a golden not fetched from Git LFS.
    """

    def __init__(self, message: str, *, recreatable: bool = True) -> None:
        super().__init__(message)
        self.recreatable = recreatable


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


def _not_fetched(path: Path, what: str) -> GoldenNotFetched:
    return GoldenNotFetched(
        f"golden {what} {path} is a Git LFS pointer, not the file: this checkout did not fetch the repository's LFS"
        " files; run `git lfs pull` (in CI, check out with LFS, e.g. actions/checkout with `lfs: true`)."
        " --featviz-update will not write over it",
        recreatable=False,
    )


def sanitize_name(name: str, max_length: int = MAX_NAME_LENGTH) -> str:
    """A file-name-safe form of ``name``, the same on Linux, macOS and Windows.

    Characters outside ``A-Z a-z 0-9 . _ - [ ] + = , @`` become ``_``; a leading dot, trailing dots and Windows'
    reserved device names are defused; when anything was changed or the name is longer than ``max_length``, a
    short hash of the original is appended so two different names never share a file.
    """
    normalized = unicodedata.normalize("NFC", name)
    safe = _UNSAFE.sub("_", normalized)
    if safe.startswith("."):
        safe = "_" + safe[1:]
    safe = safe.rstrip(". ")
    if not safe:
        safe = "_"
    if safe.split(".")[0].upper() in _WINDOWS_RESERVED:
        safe = "_" + safe
    if safe != name or len(safe) > max_length:
        digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:10]
        safe = f"{safe[: max_length - len(digest) - 1]}-{digest}"
    return safe


def snapshot_dir(golden_root: Path, test_file: str, test_name: str, snapshot_name: str) -> Path:
    """The golden directory of one snapshot; never outside ``golden_root``.

    ``test_file`` is the test module's path relative to the rootdir, with ``/`` separators (as in a node id).
    """
    parts = [p for p in test_file.replace("\\", "/").split("/") if p not in ("", ".")]
    if parts and parts[-1].endswith(".py"):
        parts[-1] = parts[-1][: -len(".py")]
    segments = [sanitize_name(p) for p in parts] + [sanitize_name(test_name), sanitize_name(snapshot_name)]
    path = golden_root.joinpath(*segments)
    root = golden_root.resolve()
    if not path.resolve().is_relative_to(root):  # sanitize_name makes this unreachable; belt and braces
        raise GoldenError(f"refusing to use golden path {path} outside the golden directory {root}", recreatable=False)
    return path


def case_collision(golden_root: Path, directory: Path) -> str | None:
    """Why ``directory`` cannot be used portably, or ``None``: a segment of its path below ``golden_root`` differs
    only in letter case from a sibling already on disk (``test_x[RGB]`` beside ``test_x[rgb]``).

    macOS and Windows file systems ignore case, so there the two are one directory: a clone of the repository
    merges their goldens and the two snapshots overwrite each other's. On Linux both work, which is where such a
    pair is made, so it is refused wherever it is met. Costs one directory listing per path segment.
    """
    twin = case_twin(golden_root, directory)
    return None if twin is None else case_message(*twin)


def case_message(ours: Path, theirs: Path) -> str:
    """The failure message of a golden path ``ours`` whose case-only twin ``theirs`` exists (:func:`case_twin`)."""
    return (
        f"golden path {ours} differs only in letter case from {theirs}, which already exists: on case-insensitive"
        " file systems (macOS, Windows) the two are one directory and the snapshots would overwrite each other's"
        " goldens; rename the test, its parametrize id or the snapshot (name=) so that the two differ in more than"
        " case; if one is left over from a test renamed in case only, delete it and run again (pytest"
        " --featviz-prune deletes the goldens of tests that no longer exist)"
    )


def case_twin(golden_root: Path, directory: Path) -> tuple[Path, Path] | None:
    """The first segment of ``directory`` below ``golden_root`` with a sibling on disk that differs from it only in
    letter case, and that sibling; ``None`` when there is none (see :func:`case_collision`)."""
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
        others = sorted(name for name in siblings if name != segment and name.casefold() == folded)
        if others:
            return parent / segment, parent / others[0]
        parent = parent / segment
    return None


def remove_created(directory: Path, top: Path) -> None:
    """Undo the creation of a snapshot's golden: the files this module writes in ``directory``, then the directories
    left empty from it up to ``top`` (which ``directory`` lies in). Files someone else put there stay, and so do
    the directories holding them."""
    for path in [directory / SIDECAR, *_own_pictures(directory)]:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    for place in (directory, *directory.parents):
        try:
            place.rmdir()
        except OSError:  # not empty
            return
        if place == top:
            return


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


def _parse_features(entry: dict[str, Any]) -> tuple[tuple[int, ...], tuple[tuple[float, float], ...]]:
    """The ``features`` of a layer entry (absent from other layouts and older sidecars: empty)."""
    if "features" not in entry:
        return (), ()
    features = entry["features"]
    index, means, stds = features["index"], features["mean"], features["std"]
    if not len(index) == len(means) == len(stds) or not index:
        raise ValueError(f"features: {len(index)} indices, {len(means)} means, {len(stds)} stds")
    if not all(type(i) is int for i in index):  # not 0.5, not true
        raise ValueError(f"features: an index that is no whole number in {index[:8]}")
    return tuple(index), tuple((float(m), float(s)) for m, s in zip(means, stds, strict=True))


def _parse_sidecar(data: Any, path: Path) -> SnapshotGolden:
    if not isinstance(data, dict):
        raise GoldenError(f"golden sidecar {path} is not a JSON object")
    version = data.get("format")
    if not isinstance(version, int):
        raise GoldenError(f"golden sidecar {path} has no format version")
    if isinstance(version, bool) or version < 1:
        raise GoldenError(f"golden sidecar {path} is malformed (format {version!r})")
    if version > FORMAT_VERSION:
        raise GoldenError(
            f"golden sidecar {path} has format {version}, newer than this pytest-featviz reads ({FORMAT_VERSION});"
            " upgrade pytest-featviz",
            recreatable=False,
        )
    try:
        layers = []
        for entry in data["layers"]:
            channels = entry["channels"]
            features, feature_stats = _parse_features(entry)
            layers.append(
                LayerGolden(
                    name=str(entry["name"]),
                    file=str(entry["file"]),
                    sha256=str(entry["sha256"]),
                    shape=tuple(int(v) for v in entry["shape"]),
                    tile_shape=(int(entry["tile"][0]), int(entry["tile"][1])),
                    layout=str(entry.get("layout", "")),
                    pool=(int(entry.get("pool", (1, 1))[0]), int(entry.get("pool", (1, 1))[1])),
                    channels=tuple(int(c["index"]) for c in channels),
                    frames=tuple((float(c["range"][0]), float(c["range"][1])) for c in channels),
                    stats=tuple(
                        (float(c["mean"]), float(c["std"]), float(c["min"]), float(c["max"])) for c in channels
                    ),
                    features=features,
                    feature_stats=feature_stats,
                )
            )
        golden = SnapshotGolden(
            normalize=str(data["normalize"]),
            bit_depth=int(data["bit_depth"]),
            layers=tuple(layers),
            format=version,
            provenance=_provenance(data),
        )
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise GoldenError(f"golden sidecar {path} is malformed ({type(exc).__name__}: {exc})") from exc
    for layer in golden.layers:
        if Path(layer.file).name != layer.file or layer.file.startswith("."):
            raise GoldenError(f"golden sidecar {path} names a layer file outside its directory: {layer.file!r}")
        if not layer.channels or min(layer.tile_shape) < 1:
            raise GoldenError(f"golden sidecar {path} has an empty layer {layer.name!r}")
        wrong = _wrong_value(layer, golden.normalize)
        if wrong:
            raise GoldenError(f"golden sidecar {path} is malformed (layer {layer.name!r}: {wrong})")
    if golden.bit_depth not in (8, 16):
        raise GoldenError(f"golden sidecar {path} is malformed (bit depth {golden.bit_depth}, not 8 or 16)")
    if golden.normalize not in NORMALIZE_MODES:
        raise GoldenError(f"golden sidecar {path} is malformed (unknown normalization {golden.normalize!r})")
    return golden


def _wrong_value(layer: LayerGolden, normalize: str) -> str | None:
    """What no snapshot can have written into a layer's entry (an edited or damaged sidecar), or ``None``: values
    that would otherwise surface as a model drift ("shape changed from (1, -4, 32, 32)") or a crash."""
    if not layer.shape or min(layer.shape) < 1:
        return f"shape {list(layer.shape)}"
    if min(layer.pool) < 1:
        return f"pool {list(layer.pool)}"
    height, width = mosaic_size(len(layer.channels), layer.tile_shape)
    if height * width > MAX_PIXELS:
        return f"tile {list(layer.tile_shape)}: a {width}x{height} picture"
    if min(layer.channels) < 0:
        return f"channel index {min(layer.channels)}"
    if len(set(layer.channels)) != len(layer.channels):
        return f"channel indices repeat: {list(layer.channels)}"
    numbers = [value for frame in layer.frames for value in frame] + [value for st in layer.stats for value in st]
    if not all(math.isfinite(value) for value in numbers):
        return "a channel's range or statistics are not finite numbers"
    for index, (low, high), (_, std, smallest, largest) in zip(layer.channels, layer.frames, layer.stats, strict=True):
        # render.channel_frames: minmax and percentile frames are [low, high] with high > low, sigmoid's are
        # [center, scale] with scale > 0
        if not (high > 0 if normalize == "sigmoid" else high > low):
            return f"channel {index}: range {[low, high]}"
        if std < 0 or smallest > largest:
            return f"channel {index}: statistics std {std}, min {smallest}, max {largest}"
    if layer.features:
        if min(layer.features) < 0 or len(set(layer.features)) != len(layer.features):
            return "feature indices negative or repeated"
        if not all(math.isfinite(value) for pair in layer.feature_stats for value in pair):
            return "a feature's statistics are not finite numbers"
        if min(std for _, std in layer.feature_stats) < 0:
            return "a feature's std is negative"
    return None


def _provenance(data: dict[str, Any]) -> dict[str, Any] | None:
    """The optional provenance entries of a sidecar (absent from older sidecars, which load without them)."""
    found = {key: data[key] for key in PROVENANCE_KEYS if isinstance(data.get(key), dict)}
    return found or None


def refuse_unfetched(directory: Path) -> None:
    """Raise :class:`GoldenNotFetched` when a picture of the snapshot in ``directory`` is a Git LFS pointer (a
    sidecar that is one is refused by :func:`read_sidecar`): what replaces a golden must never write over it."""
    for picture in _own_pictures(directory) if directory.is_dir() else ():
        with contextlib.suppress(OSError), picture.open("rb") as stream:
            if stream.read(len(LFS_POINTER_MARK)) == LFS_POINTER_MARK:
                raise _not_fetched(picture, "picture")


def keyed_dir(directory: Path, key: str) -> Path:
    """The environment-keyed sibling of a snapshot's golden directory: ``<snapshot>@<key>`` (``0@cuda``)."""
    return directory.with_name(f"{directory.name}{KEY_SEPARATOR}{sanitize_name(key)}")


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
    try:
        environment = json.loads((directory / SIDECAR).read_text(encoding="utf-8")).get("environment")
    except (OSError, ValueError, AttributeError):
        return None
    device = environment.get("device") if isinstance(environment, dict) else None
    return device if isinstance(device, str) else None


def read_sidecar(directory: Path) -> SnapshotGolden | None:
    """The sidecar of the snapshot in ``directory``; ``None`` when there is no golden there yet."""
    path = directory / SIDECAR
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        leftovers = durable.leftovers(directory)
        if leftovers:  # the first holds the previous golden when there is one
            raise GoldenError(
                f"golden snapshot {directory} is missing but an interrupted --featviz-update left"
                f" {leftovers[0].name} beside it; re-run with --featviz-update"
            ) from None
        if directory.is_dir() and any(p.suffix == ".png" for p in directory.iterdir()):
            raise GoldenError(
                f"golden snapshot {directory} has pictures but no sidecar {SIDECAR} (deleted or lost in a merge?);"
                " restore it, or re-create the snapshot with --featviz-update"
            ) from None
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise GoldenError(
            f"cannot read golden sidecar {path}: {exc}{_file_in_the_way(directory)}", recreatable=False
        ) from exc
    if text.startswith(LFS_POINTER_MARK.decode()):
        raise _not_fetched(path, "sidecar")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if _CONFLICT_MARKER.search(text):
            raise GoldenError(
                f"golden sidecar {path} holds Git merge-conflict markers: both branches changed this snapshot;"
                " resolve it by re-creating the golden with --featviz-update on the merged code, and review the"
                " pictures it writes"
            ) from exc
        raise GoldenError(f"golden sidecar {path} is not valid JSON ({exc})") from exc
    return _parse_sidecar(data, path)


def _png_size(head: bytes, path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk; refuses a file that is not a PNG or claims too many pixels."""
    found = png.size(head)
    if found is None:
        raise GoldenError(
            f"golden picture {path} is not a PNG (damaged, truncated or replaced); re-create it with --featviz-update"
        )
    width, height = found
    if width * height > MAX_PIXELS:
        raise GoldenError(
            f"golden picture {path} claims {width}x{height} pixels, more than pytest-featviz decodes ({MAX_PIXELS});"
            " refusing to decode it (damaged or hostile file); re-create it with --featviz-update"
        )
    return width, height


def read_layer(directory: Path, layer: LayerGolden, bit_depth: int) -> TileArray:
    """The mosaic of ``layer``, checked before it is decoded: PNG header (signature, size), hash and geometry
    against the sidecar, bit depth."""
    path = directory / layer.file
    try:
        with path.open("rb") as stream:
            head = stream.read(png.HEADER_BYTES)
            if head.startswith(LFS_POINTER_MARK):
                raise _not_fetched(path, "picture")
            width, height = _png_size(head, path)
            data = head + stream.read()
    except FileNotFoundError as exc:
        raise GoldenError(f"golden picture {path} is missing (the sidecar lists it)") from exc
    except OSError as exc:
        raise GoldenError(f"cannot read golden picture {path}: {exc}", recreatable=False) from exc
    if hashlib.sha256(data).hexdigest() != layer.sha256:
        raise GoldenError(
            f"golden picture {path} does not match its sidecar (edited, damaged or half-merged);"
            " re-create it with --featviz-update"
        )
    expected = mosaic_size(len(layer.channels), layer.tile_shape)
    if (height, width) != expected:
        raise GoldenError(
            f"golden picture {path} is {width}x{height} pixels; its sidecar expects {expected[1]}x{expected[0]}"
        )
    fast = png.decode_unfiltered(data, width, height, bit_depth)
    if fast is not None:
        return fast
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
            wanted_mode = "L" if bit_depth == 8 else "I;16"
            if image.mode != wanted_mode:
                raise GoldenError(f"golden picture {path} has mode {image.mode}, expected {wanted_mode}")
            pixels = np.array(image)
    except GoldenError:
        raise
    except Exception as exc:  # Pillow raises many types for broken files
        raise GoldenError(f"golden picture {path} is not a readable PNG ({type(exc).__name__}: {exc})") from exc
    if pixels.shape != expected:
        raise GoldenError(f"golden picture {path} decodes to shape {pixels.shape}; its sidecar expects {expected}")
    result: TileArray = pixels.astype(np.uint8 if bit_depth == 8 else np.uint16)
    return result


def write_files(directory: Path, sidecar: str, pictures: dict[str, bytes]) -> list[Path]:
    """Replace a snapshot's golden as a whole: its pictures and its sidecar switch together, or not at all.

    ``pictures`` maps a layer file name to PNG bytes; a layer absent from it keeps the file already on disk (copied
    with its mtime). Pictures of layers the sidecar no longer lists are dropped; files that are not PNGs stay. The
    new snapshot is built in a hidden sibling directory and renamed into place, so a run killed at any moment leaves
    the old snapshot or the new one, plus at most a hidden leftover that the next write removes. Nothing is written
    when no byte would change. Returns the files whose bytes changed; raises :class:`GoldenError` naming the path
    when the golden cannot be written, with the old golden left as it was.
    """
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


def _write_once(directory: Path, payload: bytes, pictures: dict[str, bytes], kept: list[str]) -> list[Path]:
    old = {p.name for p in _own_pictures(directory)} if directory.is_dir() else set()
    # each picture on disk is read once: to tell what changed, and to copy the unchanged ones
    previous = {name: _bytes_of(directory / name) if name in old else None for name in kept}
    changed = [directory / name for name in kept if name in pictures and previous[name] != pictures[name]]
    if _bytes_of(directory / SIDECAR) != payload:
        changed.append(directory / SIDECAR)
    if not changed and old <= set(kept):
        return []
    if directory.is_dir() and any(entry.is_dir() for entry in directory.iterdir()):
        # Another test file's goldens nest inside this directory (pathological names): a directory switch would
        # move them too, so fall back to file-by-file replacement, sidecar last.
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
    # someone's notes or .gitattributes move with the snapshot
    durable.switch_directory(directory, {**files, SIDECAR: payload}, same, _foreign_files(directory))
    return changed


def _write_error(directory: Path, exc: OSError) -> GoldenError:
    return GoldenError(
        f"cannot write golden snapshot {directory}: {exc}{_file_in_the_way(directory)}; the golden there was left as"
        " it was",
        recreatable=False,
    )


def _file_in_the_way(directory: Path) -> str:
    """``; golden/test_m is a file ...`` when a file sits where ``directory`` or one of its parents should be (the
    OS error only says "Not a directory"); else ``""``."""
    for place in (directory, *directory.parents):
        if place.is_dir():
            return ""
        if place.exists() or place.is_symlink():
            return f"; {place} is a file where pytest-featviz keeps a golden directory: move it away or delete it"
    return ""


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
    for stale in _own_pictures(directory):
        if stale.name not in kept:
            stale.unlink()


def _own_pictures(directory: Path) -> Iterable[Path]:
    return sorted(p for p in directory.glob("*.png") if p.is_file())


def _foreign_files(directory: Path) -> list[Path]:
    """Files in a snapshot directory that pytest-featviz does not write (anything but its PNGs and sidecar)."""
    try:
        entries = list(directory.iterdir())
    except OSError:  # no directory yet
        return []
    return sorted(p for p in entries if p.name != SIDECAR and p.suffix != ".png" and not p.is_dir())


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
