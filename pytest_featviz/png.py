"""The PNG files of goldens: greyscale pictures written byte-stable with unfiltered rows, and read back fast.

:func:`encode` writes a greyscale PNG (8 or 16 bit) with no timestamp or text chunk, every row unfiltered, so the
same pixels always give the same bytes and :func:`decode_unfiltered` reads it back with one ``zlib`` inflate. Any
other PNG (one a person re-saved in an editor) is left to Pillow by the caller.
"""

from __future__ import annotations

import zlib

import numpy as np
import numpy.typing as npt

from pytest_featviz.render import TileArray

SIGNATURE = b"\x89PNG\r\n\x1a\n"
HEADER_BYTES = 33  # signature, IHDR length and type, width, height, bit depth, colour type, ...
COMPRESS_LEVEL = 9
# zlib's run-length strategy on unfiltered rows (encode): as small as the default strategy at level 9 (within 2%,
# smaller on noisy maps) and about 10x faster to write; measured in benchmarks/golden_size.py.
COMPRESS_STRATEGY = zlib.Z_RLE


def encode(image: TileArray) -> bytes:
    """PNG bytes of a greyscale image (8 or 16 bit); no timestamps or text chunks, so the same pixels give the
    same bytes.

    Written here rather than by Pillow: every row with PNG filter type 0 (none), so that :func:`decode_unfiltered`
    reads it with one ``zlib.decompress`` and no per-row unfiltering. On the noise-like maps of an untrained
    network the adaptive filters Pillow picks save about 1% of the bytes and cost twice the encoding time
    (``benchmarks/golden_size.py``); any PNG reader shows the result.
    """
    height, width = image.shape
    depth = 8 if image.dtype == np.uint8 else 16
    pixels = np.ascontiguousarray(image, dtype=np.uint8 if depth == 8 else ">u2").view(np.uint8)
    raw = np.zeros((height, 1 + pixels.shape[1]), dtype=np.uint8)  # a leading 0 per row: filter type none
    raw[:, 1:] = pixels
    compressor = zlib.compressobj(COMPRESS_LEVEL, zlib.DEFLATED, 15, 9, COMPRESS_STRATEGY)
    idat = compressor.compress(raw.tobytes()) + compressor.flush()
    return (
        SIGNATURE
        + _chunk(b"IHDR", _greyscale_header(width, height, depth))
        + _chunk(b"IDAT", idat)
        + _chunk(b"IEND", b"")
    )


def _greyscale_header(width: int, height: int, depth: int) -> bytes:
    """The IHDR body of a greyscale, non-interlaced PNG, as :func:`encode` writes it."""
    return width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([depth, 0, 0, 0, 0])


def _chunk(kind: bytes, body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")


def decode_unfiltered(data: bytes, width: int, height: int, bit_depth: int) -> TileArray | None:
    """The pixels of a PNG as :func:`encode` writes it (greyscale, not interlaced, every row unfiltered), or
    ``None`` for any other PNG, which the caller leaves to Pillow. The chunk CRCs are not checked: the golden reader
    has already checked the whole file against its sidecar's hash."""
    header = _greyscale_header(width, height, bit_depth)
    row = 1 + width * (bit_depth // 8)
    parts: list[bytes] = []
    position = len(SIGNATURE)
    while position + 8 <= len(data):
        length = int.from_bytes(data[position : position + 4], "big")
        kind, body = data[position + 4 : position + 8], data[position + 8 : position + 8 + length]
        position += 12 + length
        if kind == b"IHDR" and body != header:
            return None
        if kind == b"IDAT":
            parts.append(body)
        elif kind == b"IEND":
            break
    try:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(b"".join(parts), row * height + 1)  # bounded: a hostile stream cannot balloon
    except zlib.error:
        return None
    if len(raw) != row * height or not inflater.eof:
        return None
    rows: npt.NDArray[np.uint8] = np.frombuffer(raw, dtype=np.uint8).reshape(height, row)
    if rows[:, 0].any():
        return None  # filtered rows: not ours
    if bit_depth == 8:
        narrow: npt.NDArray[np.uint8] = rows[:, 1:].copy()
        return narrow
    wide: npt.NDArray[np.uint16] = rows[:, 1:].copy().view(">u2").astype(np.uint16)
    return wide


def intact(data: bytes) -> bool:
    """Whether ``data`` is a whole PNG: the signature, then chunks whose CRCs hold, up to an ``IEND`` chunk that ends
    the file (a truncated file can still decode to its pixels)."""
    if not data.startswith(SIGNATURE):
        return False
    position = len(SIGNATURE)
    while position + 12 <= len(data):
        length = int.from_bytes(data[position : position + 4], "big")
        end = position + 12 + length
        if end > len(data):
            return False
        body = data[position + 4 : end - 4]  # the chunk's type and data, which its CRC covers
        if zlib.crc32(body) != int.from_bytes(data[end - 4 : end], "big"):
            return False
        if body[:4] == b"IEND":
            return end == len(data)
        position = end
    return False


def size(head: bytes) -> tuple[int, int] | None:
    """Width and height from the IHDR chunk at the start of a PNG file (its first :data:`HEADER_BYTES` bytes), or
    ``None`` when ``head`` does not start like a PNG."""
    if len(head) < HEADER_BYTES or not head.startswith(SIGNATURE) or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
