"""Goldens on disk: where they live, sanitized names, the sidecar format, and atomic reads and writes.

A snapshot's golden is a directory ``<golden dir>/<test file without .py>/<test name>/<snapshot name>/`` holding
one PNG per layer (the channel tiles as a mosaic) and ``snapshot.json``, the sidecar. Goldens are data: PNG and
JSON only, never pickle. Every write goes to a temporary file in the same directory and is moved into place with
``os.replace``; a file whose bytes would not change is not written at all, so its mtime stays.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import tempfile
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pytest_featviz.records import FeatvizError
from pytest_featviz.render import TileArray, mosaic_size

FORMAT_VERSION = 1
SIDECAR = "snapshot.json"
MAX_NAME_LENGTH = 80
# Refuse a PNG whose header claims more pixels than this before decoding it (a damaged or hostile file).
MAX_PIXELS = 1 << 26
PNG_COMPRESS_LEVEL = 9

_UNSAFE = re.compile(r"[^A-Za-z0-9._\-\[\]+=,@]")
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL"} | {f"{p}{i}" for p in ("COM", "LPT") for i in range(1, 10)}


class GoldenError(FeatvizError):
    """A golden that exists but cannot be used (damaged, of a newer format, unreadable)."""


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
        raise GoldenError(f"refusing to use golden path {path} outside the golden directory {root}")
    return path


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

    def frames_array(self) -> np.ndarray[Any, np.dtype[np.float64]]:
        return np.array(self.frames, dtype=np.float64).reshape(len(self.channels), 2)

    def stats_array(self) -> np.ndarray[Any, np.dtype[np.float64]]:
        return np.array(self.stats, dtype=np.float64).reshape(len(self.channels), 4)


@dataclass(frozen=True, slots=True)
class SnapshotGolden:
    """The sidecar of one snapshot: normalization, bit depth and its layers in forward order."""

    normalize: str
    bit_depth: int
    layers: tuple[LayerGolden, ...]
    format: int = FORMAT_VERSION

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
            '      "channels": [',
            ",\n".join(f"        {channel}" for channel in channels),
            "      ]",
            "    }" + ("," if position < len(golden.layers) - 1 else ""),
        ]
    out += ["  ]", "}", ""]
    return "\n".join(out)


def _parse_sidecar(data: Any, path: Path) -> SnapshotGolden:
    if not isinstance(data, dict):
        raise GoldenError(f"golden sidecar {path} is not a JSON object")
    version = data.get("format")
    if not isinstance(version, int):
        raise GoldenError(f"golden sidecar {path} has no format version")
    if version > FORMAT_VERSION:
        raise GoldenError(
            f"golden sidecar {path} has format {version}, newer than this pytest-featviz reads ({FORMAT_VERSION});"
            " upgrade pytest-featviz"
        )
    try:
        layers = []
        for entry in data["layers"]:
            channels = entry["channels"]
            layers.append(
                LayerGolden(
                    name=str(entry["name"]),
                    file=str(entry["file"]),
                    sha256=str(entry["sha256"]),
                    shape=tuple(int(v) for v in entry["shape"]),
                    tile_shape=(int(entry["tile"][0]), int(entry["tile"][1])),
                    channels=tuple(int(c["index"]) for c in channels),
                    frames=tuple((float(c["range"][0]), float(c["range"][1])) for c in channels),
                    stats=tuple(
                        (float(c["mean"]), float(c["std"]), float(c["min"]), float(c["max"])) for c in channels
                    ),
                )
            )
        golden = SnapshotGolden(
            normalize=str(data["normalize"]),
            bit_depth=int(data["bit_depth"]),
            layers=tuple(layers),
            format=version,
        )
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise GoldenError(f"golden sidecar {path} is malformed ({type(exc).__name__}: {exc})") from exc
    for layer in golden.layers:
        if Path(layer.file).name != layer.file or layer.file.startswith("."):
            raise GoldenError(f"golden sidecar {path} names a layer file outside its directory: {layer.file!r}")
        if not layer.channels or min(layer.tile_shape) < 1:
            raise GoldenError(f"golden sidecar {path} has an empty layer {layer.name!r}")
    return golden


def read_sidecar(directory: Path) -> SnapshotGolden | None:
    """The sidecar of the snapshot in ``directory``; ``None`` when there is no golden there yet."""
    path = directory / SIDECAR
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise GoldenError(f"cannot read golden sidecar {path}: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GoldenError(f"golden sidecar {path} is not valid JSON ({exc})") from exc
    return _parse_sidecar(data, path)


def encode_png(image: TileArray) -> bytes:
    """PNG bytes of a greyscale image (8 or 16 bit); no timestamps or text chunks, so the same pixels give the
    same bytes."""
    mode = "L" if image.dtype == np.uint8 else "I;16"
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image), mode=mode).save(
        buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL
    )
    return buffer.getvalue()


def read_layer(directory: Path, layer: LayerGolden, bit_depth: int) -> TileArray:
    """The mosaic of ``layer``, checked against the sidecar (hash, size, bit depth) before it is decoded."""
    path = directory / layer.file
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise GoldenError(f"golden picture {path} is missing (the sidecar lists it)") from exc
    except OSError as exc:
        raise GoldenError(f"cannot read golden picture {path}: {exc}") from exc
    if hashlib.sha256(data).hexdigest() != layer.sha256:
        raise GoldenError(
            f"golden picture {path} does not match its sidecar (edited, damaged or half-merged);"
            " re-create it with --featviz-update"
        )
    expected = mosaic_size(len(layer.channels), layer.tile_shape)
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
            width, height = image.size
            if width * height > MAX_PIXELS or (height, width) != expected:
                raise GoldenError(
                    f"golden picture {path} is {width}x{height} pixels; its sidecar expects {expected[1]}x{expected[0]}"
                )
            wanted_mode = "L" if bit_depth == 8 else "I;16"
            if image.mode != wanted_mode:
                raise GoldenError(f"golden picture {path} has mode {image.mode}, expected {wanted_mode}")
            pixels = np.array(image)
    except GoldenError:
        raise
    except Exception as exc:  # Pillow raises many types for broken files
        raise GoldenError(f"golden picture {path} is not a readable PNG ({type(exc).__name__}: {exc})") from exc
    result: TileArray = pixels.astype(np.uint8 if bit_depth == 8 else np.uint16)
    return result


def write_atomic(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``; return whether anything changed.

    An existing file with the same bytes is left alone (same mtime). The temporary file is removed on failure.
    """
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return True


def write_files(directory: Path, sidecar: str, pictures: dict[str, bytes]) -> list[Path]:
    """Write a snapshot's pictures, then its sidecar; remove pictures of layers the sidecar no longer lists.

    ``pictures`` maps a layer file name to PNG bytes; a layer absent from it keeps the file already on disk.
    Returns the files whose bytes changed.
    """
    changed = [directory / name for name, data in sorted(pictures.items()) if write_atomic(directory / name, data)]
    if write_atomic(directory / SIDECAR, sidecar.encode("utf-8")):
        changed.append(directory / SIDECAR)
    kept = {layer["file"] for layer in json.loads(sidecar)["layers"]}
    for stale in _own_pictures(directory):
        if stale.name not in kept:
            stale.unlink()
    return changed


def _own_pictures(directory: Path) -> Iterable[Path]:
    return sorted(p for p in directory.glob("*.png") if p.is_file())


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
