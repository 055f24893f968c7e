"""A snapshot's golden: its records, the sidecar format and its checked read, and the errors of a golden that
cannot be used.

A snapshot's golden is a directory (where: :mod:`pytest_featviz.goldenpath`) holding one PNG per layer (the channel
tiles as a mosaic, read back by :mod:`pytest_featviz.goldenpicture`) and ``snapshot.json``, the sidecar, read into a
:class:`SnapshotGolden` of :class:`LayerGolden` entries. Goldens are data: PNG and JSON only, never pickle. The
sidecar is written one channel per line (:func:`sidecar_text`), and every value in it is checked before anything is
decoded or compared (:func:`read_sidecar`). A snapshot's files are replaced as a whole by
:mod:`pytest_featviz.goldenwrite`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pytest_featviz import durable
from pytest_featviz.records import NORMALIZE_MODES, FeatvizError
from pytest_featviz.render import mosaic_size

FORMAT_VERSION = 1
SIDECAR = "snapshot.json"
# optional top-level sidecar entries: environment.Provenance's, and the test file the golden belongs to
PROVENANCE_KEYS = ("environment", "fingerprints", "test")
# Refuse a PNG whose header claims more pixels than this before decoding it (a damaged or hostile file).
MAX_PIXELS = 1 << 26


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


def sidecar_string(directory: Path, entry: str, field: str) -> str | None:
    """``data[entry][field]`` of the sidecar in ``directory`` when it is a string, read without checking the rest of
    the sidecar (a quick look for stale detection and device keys); ``None`` when there is no readable sidecar, or
    no such string in it."""
    try:
        value = json.loads((directory / SIDECAR).read_text(encoding="utf-8"))[entry][field]
    except (OSError, ValueError, LookupError, TypeError, RecursionError):  # RecursionError: nested thousands deep
        return None
    return value if isinstance(value, str) else None


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
            f"cannot read golden sidecar {path}: {exc}{file_in_the_way(directory)}", recreatable=False
        ) from exc
    if text.startswith(LFS_POINTER_MARK.decode()):
        raise not_fetched(path, "sidecar")
    try:
        data = json.loads(text)
    except RecursionError as exc:  # arrays or objects nested thousands deep
        raise GoldenError(f"golden sidecar {path} is not valid JSON (nested too deep to read)") from exc
    except json.JSONDecodeError as exc:
        if _CONFLICT_MARKER.search(text):
            raise GoldenError(
                f"golden sidecar {path} holds Git merge-conflict markers: both branches changed this snapshot;"
                " resolve it by re-creating the golden with --featviz-update on the merged code, and review the"
                " pictures it writes"
            ) from exc
        raise GoldenError(f"golden sidecar {path} is not valid JSON ({exc})") from exc
    return _parse_sidecar(data, path)


def file_in_the_way(directory: Path) -> str:
    """``; golden/test_m is a file ...`` when a file sits where ``directory`` or one of its parents should be (the
    OS error only says "Not a directory"); else ``""``."""
    for place in (directory, *directory.parents):
        if place.is_dir():
            return ""
        if place.exists() or place.is_symlink():
            return f"; {place} is a file where pytest-featviz keeps a golden directory: move it away or delete it"
    return ""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
