"""Golden pictures: a layer's mosaic read back from its PNG, checked before it is decoded.

:func:`read_layer` refuses a picture that is not a regular file (before opening it), is a Git LFS pointer, is not
a PNG (naming Git's text conversion when that is what happened to it), claims more pixels than
:data:`~pytest_featviz.golden.MAX_PIXELS`, differs from the hash its sidecar records or has another geometry than the
sidecar's, all before a pixel is decoded; a picture this package wrote is decoded by :mod:`pytest_featviz.png`, any
other PNG (one re-saved in an editor) by Pillow. The one picture read despite other bytes than its hash records is
the golden's own pixels re-encoded (by an image optimizer): encoded again here, they give the recorded bytes.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image

from pytest_featviz import png
from pytest_featviz.golden import LFS_POINTER_MARK, MAX_PIXELS, GoldenError, LayerGolden, not_fetched, regular_size
from pytest_featviz.render import TileArray, mosaic_size

# A PNG's signature after Git converted the file as text (``*.png text`` or ``* text`` in .gitattributes; ``text=auto``
# and ``core.autocrlf`` alone know a PNG is binary): its CR LF made LF on commit, its lone LF made CR LF on checkout.
_TEXT_CONVERTED = (b"\x89PNG\n\x1a\n", b"\x89PNG\r\n\x1a\r\n")


def _png_size(head: bytes, path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk; refuses a file that is not a PNG or claims too many pixels."""
    found = png.size(head)
    if found is None and head.startswith(_TEXT_CONVERTED):
        # LF for the signature's CR LF: converted on commit, so the commit holds it; CR LF for its lone LF: on checkout,
        # where the commit may hold it converted too (LF made CR LF again on the way out): the two look the same
        fix = (
            "then re-create it: the commit holds the converted file; re-create it with --featviz-update"
            if head.startswith(_TEXT_CONVERTED[0])
            else "then check the pictures out again (a fresh clone, or git rm -r --cached and git checkout HEAD on"
            " the golden directory); if it still reads so, the commit holds it converted too (converted on commit"
            " and on checkout); re-create it with --featviz-update"
        )
        raise GoldenError(
            f"golden picture {path} had its line endings converted by Git as if it were text (its PNG signature"
            f" shows it): add `*.png binary` to .gitattributes, {fix}"
        )
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
    """The mosaic of ``layer``, checked before it is decoded: a regular file (not a named pipe or a device), PNG
    header (signature, size), hash and geometry against the sidecar, bit depth."""
    path = directory / layer.file
    try:
        regular_size(path, "picture")
        with path.open("rb") as stream:
            head = stream.read(png.HEADER_BYTES)
            if head.startswith(LFS_POINTER_MARK):
                raise not_fetched(path, "picture")
            width, height = _png_size(head, path)
            data = head + stream.read()
    except FileNotFoundError as exc:
        raise GoldenError(f"golden picture {path} is missing (the sidecar lists it)") from exc
    except OSError as exc:
        raise GoldenError(f"cannot read golden picture {path}: {exc}", recreatable=False) from exc
    expected = mosaic_size(len(layer.channels), layer.tile_shape)
    if hashlib.sha256(data).hexdigest() != layer.sha256.lower():  # a hash edited in upper case is the same hash
        pixels = _reencoded(data, path, (width, height), bit_depth, expected, layer.sha256.lower())
        if pixels is None:
            raise GoldenError(
                f"golden picture {path} does not match its sidecar (edited, damaged or half-merged);"
                " re-create it with --featviz-update"
            )
        return pixels
    if (height, width) != expected:
        raise GoldenError(
            f"golden picture {path} is {width}x{height} pixels; its sidecar expects {expected[1]}x{expected[0]}"
        )
    return _decode(data, path, width, height, bit_depth, expected)


def _reencoded(
    data: bytes, path: Path, size: tuple[int, int], bit_depth: int, expected: tuple[int, int], sha256: str
) -> TileArray | None:
    """The pixels of a picture whose bytes are not those its sidecar records, when they are the very pixels those
    bytes encoded: a picture re-saved by an image optimizer (a bot's pull request, a pre-commit hook), which writes
    other compression and chunks. Encoded as this package writes pictures, they give the recorded bytes back;
    ``None`` for any other picture (edited, half-merged, or not decodable as the golden's)."""
    width, height = size
    if (height, width) != expected or not png.intact(data):  # a damaged file may still yield the pixels
        return None
    try:
        pixels = _decode(data, path, width, height, bit_depth, expected)
    except GoldenError:
        return None
    return pixels if hashlib.sha256(png.encode(pixels)).hexdigest() == sha256 else None


def _decode(data: bytes, path: Path, width: int, height: int, bit_depth: int, expected: tuple[int, int]) -> TileArray:
    """The pixels of a golden picture of the expected geometry: by :mod:`pytest_featviz.png` when it is written as
    this package writes pictures, else by Pillow."""
    fast = png.decode_unfiltered(data, width, height, bit_depth)
    if fast is not None:
        return fast
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
            wanted_modes = ("L",) if bit_depth == 8 else ("I;16", "I")  # Pillow 10.0 opens 16-bit grey as "I"
            if image.mode not in wanted_modes:
                raise GoldenError(f"golden picture {path} has mode {image.mode}, expected {wanted_modes[0]}")
            pixels = np.array(image)
    except GoldenError:
        raise
    except Exception as exc:  # Pillow raises many types for broken files
        raise GoldenError(f"golden picture {path} is not a readable PNG ({type(exc).__name__}: {exc})") from exc
    if pixels.shape != expected:
        raise GoldenError(f"golden picture {path} decodes to shape {pixels.shape}; its sidecar expects {expected}")
    result: TileArray = pixels.astype(np.uint8 if bit_depth == 8 else np.uint16)
    return result
