"""Golden checks: a parsed sidecar held to what the writer writes, value by value.

:func:`_snapshot` reads the parsed JSON into a :class:`~pytest_featviz.golden.SnapshotGolden`, each value of the
type :func:`~pytest_featviz.golden.sidecar_text` writes it in; :func:`_wrong_file` and :func:`_wrong_value` find
what no snapshot writes in a layer (a name listed twice, a picture file name the writer does not give, a shape no
layout reads, a tile its map does not give, a channel index outside the output, a range or statistic no render
gives). An edited or damaged sidecar is so a malformed golden, never a drift verdict or a crash;
:func:`pytest_featviz.golden.read_sidecar` turns what these checks find into a ``GoldenError`` naming the file.
"""

from __future__ import annotations

import math
import re
import reprlib
from typing import Any

from pytest_featviz.golden import MAX_PIXELS, PROVENANCE_KEYS, LayerGolden, SnapshotGolden
from pytest_featviz.records import NORMALIZE_MODES
from pytest_featviz.render import mosaic_size

# What the writer writes, so that a value no snapshot writes is a malformed golden, never a drift verdict or a
# crash: sizes as torch has them (int64); picture files as goldenpath.sanitize_name names them, plus ".png" (ASCII,
# no separator, within any file system's 255 bytes); layouts as layout.Layout.label writes them ("" in sidecars
# written before it: outputs were then read by their number of dimensions). A tokens grid is square, 2 or more a
# side, after fewer prefix tokens than a side and at most layout.MAX_PREFIX_TOKENS.
_MAX_SIZE = (1 << 63) - 1
_PICTURE_FILE = re.compile(r"[A-Za-z0-9_\-\[\]+=,@][A-Za-z0-9._\-\[\]+=,@]{0,250}\.png")
_LAYOUT = re.compile(
    r"(?P<kind>nchw|nhwc|ncthw|ncl|features|token-image|tokens|map)"
    r"(?::(?P<prefix>[0-8])\+(?P<rows>[1-9][0-9]{0,8})x(?P<columns>[1-9][0-9]{0,8}))?"
    r"(?P<batch> \(batch axis 1\)| \(unbatched\))?"
)
_KIND_BEFORE_LAYOUTS = {2: "features", 3: "ncl", 4: "nchw", 5: "ncthw"}
_ITEM_DIMENSIONS = {"features": 1, "ncl": 2, "tokens": 2, "token-image": 2, "map": 2, "nchw": 3, "nhwc": 3, "ncthw": 4}


class _Malformed(ValueError):
    """A sidecar value no snapshot writes; the message names the field and shows the value."""


class _AsInTheFile(reprlib.Repr):
    """A few items of a list, the ends of a long string (:mod:`reprlib`), with JSON's ``true``, ``false`` and
    ``null`` where the sidecar holds them: the message quotes the file, not Python's reading of it."""

    def repr1(self, x: Any, level: int) -> str:
        if x is None or isinstance(x, bool):
            return {None: "null", True: "true", False: "false"}[x]
        return super().repr1(x, level)


_AS_IN_THE_FILE = _AsInTheFile()


def _shown(value: Any) -> str:
    return _AS_IN_THE_FILE.repr(value)


def _text(entry: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = entry[key] if default is None else entry.get(key, default)
    if type(value) is not str:
        raise _Malformed(f"{where}{key} {_shown(value)} is not a string")
    return value


def _sizes(value: Any, what: str, count: int | None = None) -> tuple[int, ...]:
    """``value`` as the writer writes sizes: a non-empty list (of ``count`` items) of whole numbers from 1 up, not
    floats, booleans or strings."""
    if (
        type(value) is not list
        or not value
        or (count is not None and len(value) != count)
        or not all(type(v) is int and 1 <= v <= _MAX_SIZE for v in value)
    ):
        raise _Malformed(f"{what} {_shown(value)}")
    return tuple(value)


def _pair(value: Any, what: str) -> tuple[int, int]:
    first, second = _sizes(value, what, 2)
    return first, second


def _number(value: Any, what: str) -> float:
    """A float or int of the sidecar as a float (NaN and Inf pass: :func:`_wrong_value` names them)."""
    if type(value) is float:
        return value
    if type(value) is int and abs(value) < 1 << 1000:  # float() of a larger int raises OverflowError
        return float(value)
    raise _Malformed(f"{what} {_shown(value)} is not a number")


# render.channel_frames never stores a spread below render.spread_floor's 1e-12 (less the 9-digit rounding), and the
# kept maps are float32: a frame outside these bounds is no writer's, and rendering in it overflows.
STORED_SPREAD_MIN = 1e-13
FLOAT32_MAX = 3.5e38


def _channel(entry: Any, where: str) -> tuple[int, tuple[float, float], tuple[float, float, float, float]]:
    """A channel entry's index, range and statistics (mean, std, min, max)."""
    if type(entry) is not dict:
        raise _Malformed(f"{where}channel entry {_shown(entry)} is not an object")
    index, frame = entry["index"], entry["range"]
    if type(index) is not int:
        raise _Malformed(f"{where}channel index {_shown(index)} is not a whole number")
    if type(frame) is not list or len(frame) != 2:
        raise _Malformed(f"{where}channel {index}: range {_shown(frame)}")
    low, high = frame
    mean, std, smallest, largest = entry["mean"], entry["std"], entry["min"], entry["max"]
    if not type(low) is type(high) is type(mean) is type(std) is type(smallest) is type(largest) is float:
        where = f"{where}channel {index}: "  # the writer writes floats; whole numbers read as floats too
        low, high = _number(low, f"{where}range"), _number(high, f"{where}range")
        mean, std = _number(mean, f"{where}mean"), _number(std, f"{where}std")
        smallest, largest = _number(smallest, f"{where}min"), _number(largest, f"{where}max")
    return index, (low, high), (mean, std, smallest, largest)


def _parse_features(entry: dict[str, Any], where: str) -> tuple[tuple[int, ...], tuple[tuple[float, float], ...]]:
    """The ``features`` of a layer entry (absent from other layouts and older sidecars: empty)."""
    if "features" not in entry:
        return (), ()
    features = entry["features"]
    index, means, stds = features["index"], features["mean"], features["std"]
    if not len(index) == len(means) == len(stds) or not index:
        raise ValueError(f"features: {len(index)} indices, {len(means)} means, {len(stds)} stds")
    if not all(type(i) is int for i in index):  # not 0.5, not true
        raise ValueError(f"features: an index that is no whole number in {index[:8]}")
    pairs = zip(means, stds, strict=True)
    stats = [(_number(m, f"{where}feature mean"), _number(s, f"{where}feature std")) for m, s in pairs]
    return tuple(index), tuple(stats)


def _layer(entry: Any) -> LayerGolden:
    """A layer entry, every value of the type the writer writes it in (the values are checked by
    :func:`_wrong_value`)."""
    if type(entry) is not dict:
        raise _Malformed(f"layer entry {_shown(entry)} is not an object")
    name = entry["name"]
    if type(name) is not str or not name:
        raise _Malformed(f"layer name {_shown(name)}")
    where = f"layer {name!r}: "
    channels = entry["channels"]
    if type(channels) is not list:
        raise _Malformed(f"{where}channels {_shown(channels)} is not a list")
    parsed = [_channel(channel, where) for channel in channels]
    features, feature_stats = _parse_features(entry, where)
    return LayerGolden(
        name=name,
        file=_text(entry, "file", where),
        sha256=_text(entry, "sha256", where),
        shape=_sizes(entry["shape"], f"{where}shape"),
        tile_shape=_pair(entry["tile"], f"{where}tile"),
        layout=_text(entry, "layout", where, default=""),
        pool=_pair(entry.get("pool", [1, 1]), f"{where}pool"),
        channels=tuple([index for index, _, _ in parsed]),
        frames=tuple([frame for _, frame, _ in parsed]),
        stats=tuple([numbers for _, _, numbers in parsed]),
        features=features,
        feature_stats=feature_stats,
    )


def _snapshot(data: dict[str, Any], version: int) -> SnapshotGolden:
    bit_depth, normalize, layers = data["bit_depth"], data["normalize"], data["layers"]
    if type(bit_depth) is not int or bit_depth not in (8, 16):
        raise _Malformed(f"bit depth {_shown(bit_depth)}, not 8 or 16")
    if type(normalize) is not str or normalize not in NORMALIZE_MODES:
        raise _Malformed(f"unknown normalization {_shown(normalize)}")
    if type(layers) is not list:
        raise _Malformed(f"layers {_shown(layers)} is not a list")
    parsed = tuple(_layer(entry) for entry in layers)
    return SnapshotGolden(normalize, bit_depth, parsed, format=version, provenance=_provenance(data))


def _wrong_file(layer: LayerGolden, files: dict[str, str], names: set[str]) -> str | None:
    """What no snapshot writes in a layer's name and picture file (``files``: the picture files of the layers
    before, to their layers' ``names``), or ``None``: each layer is listed once, with its own picture, named as the
    writer names it."""
    if layer.name in names:
        return "listed twice"
    if not _PICTURE_FILE.fullmatch(layer.file):
        return (
            f"file {_shown(layer.file)} is not a picture file name pytest-featviz writes (letters, digits and"
            " ._-[]+=,@, ending in .png, at most 255 characters)"
        )
    if layer.file in files:
        return f"file {layer.file!r} is also the picture of layer {files[layer.file]!r}"
    return None


def _maps(shape: tuple[int, ...], layout: str) -> tuple[int, int, int] | None:
    """The channel count, height and width of the maps that an output of ``shape`` read with ``layout`` gives
    (:mod:`pytest_featviz.layout`, :mod:`pytest_featviz.channels`), or ``None`` when no snapshot reads an output of
    that shape so."""
    label = _LAYOUT.fullmatch(layout or _KIND_BEFORE_LAYOUTS.get(len(shape), "?"))
    if label is None or (label["kind"] == "tokens") != (label["rows"] is not None):
        return None
    kind, batch = label["kind"], label["batch"]
    item: tuple[int, ...] | None = shape[1:]
    if batch == " (unbatched)":  # torch's sequence modules take one (L, E) sequence too, and attention gives
        item = shape if kind in ("token-image", "nchw") else None  # its per-head weights (heads, L, S) so
    elif batch:  # a sequence-first (S, B, E) output
        item = (shape[0], shape[2]) if len(shape) == 3 and kind in ("ncl", "tokens", "token-image") else None
    if kind == "features" and item is not None and sum(side != 1 for side in item) <= 1:
        item = (math.prod(item),)  # a global pool's (C, 1, 1), (1, 1, C) or (C, 1): one vector
    if item is None or len(item) != _ITEM_DIMENSIONS[kind]:
        return None
    if kind == "tokens":
        prefix, rows, columns = int(label["prefix"]), int(label["rows"]), int(label["columns"])
        if rows != columns or not prefix < rows or rows < 2 or prefix + rows * columns != item[0]:
            return None
        return item[1], rows, columns
    if kind == "features":
        return 1, 1, item[0]
    if kind in ("token-image", "map"):
        return 1, item[0], item[1]
    if kind == "ncl":
        return item[0], 1, item[1]
    if kind == "nhwc":
        return item[2], item[0], item[1]
    if kind == "ncthw":
        return item[0], item[2], item[1] * item[3]
    return item[0], item[1], item[2]


def _wrong_value(layer: LayerGolden, normalize: str) -> str | None:
    """What no snapshot can have written into a layer's entry (an edited or damaged sidecar), or ``None``: values
    that would otherwise surface as a model drift ("shape changed from (1, -4, 32, 32)") or a crash."""
    if math.prod(layer.shape) > _MAX_SIZE:
        return f"shape {list(layer.shape)}: more values than a tensor holds"
    maps = _maps(layer.shape, layer.layout)
    if maps is None:
        if not layer.layout:
            return f"shape {list(layer.shape)}, which no snapshot reads without a layout"
        return f"layout {layer.layout!r}, which no snapshot gives an output of shape {list(layer.shape)}"
    count, height, width = maps
    if layer.pool[0] > height or layer.pool[1] > width:
        return f"pool {list(layer.pool)}, larger than the {height}x{width} map it pools"
    rows, columns = mosaic_size(len(layer.channels), layer.tile_shape)
    if rows * columns > MAX_PIXELS:
        return f"tile {list(layer.tile_shape)}: a {columns}x{rows} picture"
    tile = (height // layer.pool[0], width // layer.pool[1])
    if layer.tile_shape != tile:
        return f"tile {list(layer.tile_shape)}; a {height}x{width} map pooled by {list(layer.pool)} gives {list(tile)}"
    if min(layer.channels) < 0 or max(layer.channels) >= count:
        outside = min(layer.channels) if min(layer.channels) < 0 else max(layer.channels)
        return f"channel index {outside}, outside the {count} channel(s) of an output of shape {list(layer.shape)}"
    if len(set(layer.channels)) != len(layer.channels):
        return f"channel indices repeat: {list(layer.channels)}"
    numbers = [value for frame in layer.frames for value in frame] + [value for st in layer.stats for value in st]
    if not all(math.isfinite(value) for value in numbers):
        return "a channel's range or statistics are not finite numbers"
    for index, (low, high), (mean, std, smallest, largest) in zip(
        layer.channels, layer.frames, layer.stats, strict=True
    ):
        # render.channel_frames: minmax and percentile frames are [low, high] with high > low, sigmoid's are
        # [center, scale] with scale > 0
        spread = high if normalize == "sigmoid" else high - low
        if not STORED_SPREAD_MIN <= spread <= FLOAT32_MAX or max(abs(low), abs(high)) > FLOAT32_MAX:
            return f"channel {index}: range {[low, high]}"
        if std < 0 or smallest > largest or not _consistent(mean, std, smallest, largest):
            return f"channel {index}: statistics mean {mean}, std {std}, min {smallest}, max {largest}"
    if layer.features:
        if not layer.layout.startswith("token-image"):  # current.CurrentLayer.as_golden: token images only
            return f"per-feature statistics in a layer of layout {layer.layout!r}, not a token image"
        if min(layer.features) < 0 or len(set(layer.features)) != len(layer.features):
            return "feature indices negative or repeated"
        if max(layer.features) >= width:
            return f"feature index {max(layer.features)} of a map of {width} features"
        if not all(math.isfinite(value) for pair in layer.feature_stats for value in pair):
            return "a feature's statistics are not finite numbers"
        if min(std for _, std in layer.feature_stats) < 0:
            return "a feature's std is negative"
    return None


def _consistent(mean: float, std: float, smallest: float, largest: float) -> bool:
    """Whether the statistics of one channel (render.channel_statistics) can be those of some values: the mean lies
    between the least and the greatest, the std is at most half their distance (Popoviciu's inequality) and is 0 only
    when they are equal; up to a millionth of their magnitude, far above the rounding to 9 digits they are stored in
    (an edited mean would otherwise read as a drift of the model)."""
    slack = 1e-6 * max(abs(smallest), abs(largest))
    spread = largest - smallest
    return smallest - slack <= mean <= largest + slack and std <= spread / 2 + slack and (std > 0 or spread == 0)


# What environment.Provenance.to_sidecar writes, field by field (required, type); the optional fields came later.
_PROVENANCE_FIELDS: dict[str, dict[str, tuple[bool, type]]] = {
    "environment": {
        "torch": (True, str),
        "device": (True, str),
        "dtype": (True, str),
        "matmul_tf32": (True, bool),
        "cudnn_tf32": (True, bool),
        "deterministic": (True, bool),
        "autocast": (False, str),
    },
    "fingerprints": {
        "input": (True, str),
        "model": (True, str),
        "layers": (True, dict),
        "values": (False, str),
        "scheme": (False, int),
    },
}


def _provenance(data: dict[str, Any]) -> dict[str, Any] | None:
    """The optional provenance entries of a sidecar (absent from older sidecars, which load without them). An
    environment or fingerprints entry that the writer does not write is malformed: a damaged one read as the golden
    having none ("made before pytest-featviz recorded it") or as made on device 7. A damaged test record is not:
    stale detection never judges by it."""
    for key, fields in _PROVENANCE_FIELDS.items():
        if key not in data:
            continue
        entry = data[key]
        if type(entry) is not dict:
            raise _Malformed(f"{key} {_shown(entry)} is not an object")
        for field, (required, kind) in fields.items():
            if field not in entry:
                if required:
                    raise _Malformed(f"{key} has no {field}")
            elif type(entry[field]) is not kind:
                raise _Malformed(f"{key} {field} {_shown(entry[field])} is not a {_KIND_WORDS[kind]}")
    layers = data.get("fingerprints", {}).get("layers", {})
    if not all(type(value) is str for value in layers.values()):
        raise _Malformed(f"fingerprints layers {_shown(layers)} holds a fingerprint that is not a string")
    scheme = data.get("fingerprints", {}).get("scheme", 1)
    if scheme < 1:  # schemes count from 1 (a sidecar without one); a newer one than this version makes is not damage
        raise _Malformed(f"fingerprints scheme {_shown(scheme)} is not a scheme (1 or more)")
    found = {key: data[key] for key in PROVENANCE_KEYS if isinstance(data.get(key), dict)}
    return found or None


_KIND_WORDS = {str: "string", bool: "boolean (true or false)", dict: "JSON object", int: "whole number"}
