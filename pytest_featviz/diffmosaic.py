"""Diff mosaics: the RGB picture of one drifted layer, a row per channel (golden | current | difference heatmap)
under the score that judged it, encoded as PNG.

This module only draws; which channels to draw and where the file goes are the report's business
(:mod:`pytest_featviz.report`). numpy and Pillow are imported only when a picture is drawn, so importing this module
at pytest start-up costs nothing.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pytest_featviz.records import LayerResult

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

MAX_ROWS = 8  # drifted channels drawn per diff mosaic; the rest are counted in its last line
MIN_PANEL = 64  # small maps are upscaled (nearest) until their longer side reaches this many pixels (a 1x1 map too)
LABEL_WIDTH = 110
GAP = 4
LINE = 14
TITLE_WIDTH = 50  # the widest column title ("difference") in Pillow's default font, 49 px
BACKGROUND = (30, 30, 30)
# Viridis at nine stops: perceptually uniform and readable for the colour-blind.
_VIRIDIS = (
    (68, 1, 84), (71, 44, 122), (59, 81, 139), (44, 113, 142), (33, 144, 141),
    (39, 173, 129), (92, 200, 99), (170, 220, 50), (253, 231, 37),
)  # fmt: skip


def encode_rgb(image: npt.NDArray[np.uint8]) -> bytes:
    """The PNG bytes of an RGB picture such as :func:`diff_mosaic` draws."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image, mode="RGB").save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def panel_scale(tile_shape: tuple[int, int]) -> int:
    """The nearest-neighbour upscale factor of a tile in a diff mosaic: small maps grow to about ``MIN_PANEL``."""
    return max(1, math.ceil(MIN_PANEL / max(tile_shape)))


def channel_label(layer: LayerResult, position: int) -> str:
    """The score a diff mosaic prints under a channel: its SSIM, or the score that failed when SSIM passed (a
    statistics-only drift must not show a passing SSIM in red)."""
    ssim = layer.ssim[position]
    if ssim >= layer.threshold and layer.stat_delta[position] > layer.stat_tolerance:
        return f"stats {layer.stat_delta[position]:.3f}"
    if ssim >= layer.threshold and layer.rms_error[position] > layer.rms_tolerance:
        return f"picture {layer.rms_error[position]:.3f}"
    return f"SSIM {ssim:.4f}"


def diff_mosaic(
    layer: str,
    golden_tiles: npt.NDArray[Any],
    current_tiles: npt.NDArray[Any],
    rows: Sequence[tuple[int, int, str, bool]],
    bit_depth: int = 8,
    max_rows: int = MAX_ROWS,
) -> npt.NDArray[np.uint8]:
    """An RGB picture of one layer: a row per channel, golden | current | difference heatmap.

    ``rows`` holds ``(tile position, channel index, score label, failed)`` in the order to draw (the label from
    :func:`channel_label`, red when the channel failed); only the first
    ``max_rows`` are drawn and the rest are counted on a last line. The heatmap is ``sqrt(|golden - current|)``
    of the full grey range through viridis, so equal colours mean equal change.
    """
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    level = float((1 << bit_depth) - 1)
    height, width = int(golden_tiles.shape[1]), int(golden_tiles.shape[2])
    scale = panel_scale((height, width))
    # a strip (the 1 x L tile of a 1-D layer, a feature vector) is stretched to the height of its row's two label
    # lines, which the row takes anyway: drawn at its scale it was a line one or two pixels high
    tall = max(scale, math.ceil(2 * LINE / height))
    # a column (an N x 1 map) is widened to its title likewise: drawn at its scale it was a sliver without titles
    wide = max(scale, math.ceil(TITLE_WIDTH / width))
    panel_h, panel_w = height * tall, width * wide
    row_h = max(panel_h, 2 * LINE)
    shown, more = list(rows[:max_rows]), max(0, len(rows) - max_rows)
    canvas_w = LABEL_WIDTH + 3 * panel_w + 4 * GAP
    canvas_h = 2 * LINE + GAP + len(shown) * (row_h + GAP) + (LINE if more else 0) + GAP
    canvas = Image.new("RGB", (canvas_w, canvas_h), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    draw.text((GAP, 1), _fit(draw, f"layer {layer}", canvas_w - 2 * GAP, font), fill=(235, 235, 235), font=font)
    for column, title in enumerate(("golden", "current", "difference")):
        x = LABEL_WIDTH + GAP + column * (panel_w + GAP)
        draw.text((x, LINE + 1), _fit(draw, title, panel_w, font), fill=(190, 190, 190), font=font)
    lut = _viridis_lut()
    for row, (position, channel, label, failed) in enumerate(shown):
        golden = golden_tiles[position].astype(np.float64) / level
        current = current_tiles[position].astype(np.float64) / level
        difference = np.sqrt(np.abs(golden - current))
        panels = [np.repeat(np.round(p * 255).astype(np.uint8)[..., None], 3, axis=2) for p in (golden, current)] + [
            lut[np.round(difference * 255).astype(np.intp)]
        ]
        top = 2 * LINE + GAP + row * (row_h + GAP)
        draw.text((GAP, top), f"channel {channel}", fill=(235, 235, 235), font=font)
        colour = (255, 110, 110) if failed else (150, 220, 150)
        draw.text((GAP, top + LINE), label, fill=colour, font=font)
        for column, panel in enumerate(panels):
            big = np.repeat(np.repeat(panel, tall, axis=0), wide, axis=1)
            canvas.paste(Image.fromarray(big, mode="RGB"), (LABEL_WIDTH + GAP + column * (panel_w + GAP), top))
    if more:
        text = f"... and {more} more channel(s) not shown"
        draw.text((GAP, canvas_h - GAP - LINE), text, fill=(235, 235, 235), font=font)
    return np.asarray(canvas, dtype=np.uint8)


def _fit(draw: Any, text: str, width: int, font: Any) -> str:
    while text and draw.textlength(text, font=font) > width:
        text = text[:-2] + "…" if len(text) > 2 else ""
    return text


@functools.cache  # once per process: it was 0.3 ms of every mosaic
def _viridis_lut() -> npt.NDArray[np.uint8]:
    import numpy as np

    stops = np.linspace(0.0, 1.0, len(_VIRIDIS))
    anchors = np.array(_VIRIDIS, dtype=np.float64)
    levels = np.linspace(0.0, 1.0, 256)
    lut = np.stack([np.interp(levels, stops, anchors[:, c]) for c in range(3)], axis=1)
    table = np.round(lut).astype(np.uint8)
    table.flags.writeable = False  # shared by every mosaic
    return table
