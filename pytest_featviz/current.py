"""The current run's layers: the selection captured as numbers, each scored against its golden or made into one.

:func:`capture_layers` runs the model once with hooks on the selected layers and returns each as a
:class:`CurrentLayer` (its kept maps and per-channel statistics); a selected layer that never ran, or that produced
NaN or Inf, is an error that says why. :func:`compare_with_golden` scores one layer against its golden, rendered in
the golden's frames; a changed shape, layout, channel selection or normalization is a drift with its reason instead
of scores. :meth:`CurrentLayer.as_golden` is what update mode writes. These are the parts the snapshot policy
(:mod:`pytest_featviz.snapshot`) and the noise floor's second run (:mod:`pytest_featviz.noisefloor`) call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pytest_featviz import golden, goldenpath, goldenpicture, png
from pytest_featviz.capture import LayerCapture, Target, call_name, capture
from pytest_featviz.channels import TOP_PREFIX, ChannelSpec, StoredChannels
from pytest_featviz.compare import FloatArray, compare_layer
from pytest_featviz.config import Settings
from pytest_featviz.golden import GoldenError, LayerGolden, SnapshotGolden
from pytest_featviz.layers import LayerSpec, module_index, resolve_layers
from pytest_featviz.layout import UNBATCHED, Layout
from pytest_featviz.outcomes import raised_outside
from pytest_featviz.records import DRIFT, FeatvizError, LayerEvidence, LayerResult
from pytest_featviz.render import (
    TileArray,
    build_mosaic,
    channel_frames,
    channel_statistics,
    feature_columns,
    feature_statistics,
    max_level,
    pool_maps,
    render_tiles,
    split_mosaic,
    tile_pool,
)

BIT_DEPTH = 8


def _compiled(module: nn.Module) -> bool:
    """Whether ``module`` is what ``torch.compile`` returns (told by name: importing torch._dynamo is slow)."""
    return type(module).__name__ == "OptimizedModule" and isinstance(getattr(module, "_orig_mod", None), nn.Module)


def eager(model: nn.Module) -> nn.Module:
    """The module that ``torch.compile`` wrapped, for a compiled model: hooks added to a compiled model after an
    earlier compilation of its class can be skipped by the compiled code, silently. Its feature maps are the eager
    module's, up to the float noise that the tolerances absorb."""
    return model._orig_mod if _compiled(model) else model  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class CurrentLayer:
    """One captured layer as numbers: maps, statistics, and what it would be written as."""

    capture: LayerCapture
    maps: np.ndarray[Any, np.dtype[np.float32]]
    stats: np.ndarray[Any, np.dtype[np.float64]]

    @property
    def token_image(self) -> bool:
        """Whether the layer is one picture of tokens x features, judged per feature too (feature_statistics)."""
        return Layout.kind_of(self.capture.layout) == "token-image"

    def feature_stats(self, columns: tuple[int, ...]) -> np.ndarray[Any, np.dtype[np.float64]]:
        return feature_statistics(self.maps, columns)

    def as_golden(self, normalize: str) -> tuple[LayerGolden, bytes]:
        pool = tile_pool(int(self.maps.shape[1]), int(self.maps.shape[2]))
        pictures = pool_maps(self.maps, pool)
        frames = channel_frames(pictures, normalize)
        picture = png.encode(build_mosaic(render_tiles(pictures, frames, normalize, BIT_DEPTH)))
        features = feature_columns(int(self.maps.shape[2])) if self.token_image else ()
        feature_stats = self.feature_stats(features) if features else np.zeros((0, 2))
        layer = LayerGolden(
            name=self.capture.name,
            file=goldenpath.sanitize_name(self.capture.name) + ".png",
            shape=self.capture.shape,
            tile_shape=(int(pictures.shape[1]), int(pictures.shape[2])),
            pool=pool,
            channels=self.capture.channels,
            frames=tuple((float(a), float(b)) for a, b in frames),
            stats=tuple((float(s[0]), float(s[1]), float(s[2]), float(s[3])) for s in self.stats),
            sha256=golden.sha256_hex(picture),
            layout=self.capture.layout,
            features=features,
            feature_stats=tuple((float(mean), float(std)) for mean, std in feature_stats),
        )
        return layer, picture


# the reason of a layer whose layout changed, its shape not: snapshot says what that means when no other layer drifted
LAYOUT_CHANGED = "layout changed"
# the reasons of a layer compared under other settings than its golden's: snapshot tells the user so
CHANNELS_CHANGED = "channel selection changed"
NORMALIZE_CHANGED = "normalize changed"


def _refuse_taken_call_names(model: nn.Module, targets: list[Target], calls: dict[str, int]) -> None:
    """Refuse a later call of a selected module whose name (``act@1``, the second call of ``act``) is the name of
    another module of the model (an ``add_module("act@1", ...)``): the golden held two layers of that name, which
    every later check refused, or read the call back as that other module."""
    repeated = [t for t in targets if t.call is None and calls.get(t.name, 0) > 1]
    if not repeated:
        return
    names = module_index(model)
    for target in repeated:
        taken = next((k for k in range(1, calls[target.name]) if call_name(target.name, k) in names), None)
        if taken is not None:
            raise FeatvizError(
                f"layer {target.name!r} ran {calls[target.name]} times, and its call {taken + 1} would be stored as"
                f" {call_name(target.name, taken)!r}, the name of another module of {type(model).__name__}: a golden"
                " cannot tell them apart."
                f" Rename that module (a name ending in '@' and a number reads as a call index), or select one call"
                f" of {target.name!r} ({target.name + '@0'!r} is its first)"
            )


def capture_layers(
    model: nn.Module,
    inputs: Any,
    spec: LayerSpec,
    settings: Settings,
    stored: SnapshotGolden | None,
    modules: dict[str, nn.Module] | None = None,
) -> tuple[list[CurrentLayer], list[str]]:
    """Capture the selection; names from a golden that the model no longer has are returned, not raised.

    ``modules``, when given, receives the selected modules by name (for the weight fingerprints).
    """
    __tracebackhide__ = raised_outside
    gone: list[str] = []
    from_golden = spec is not None and stored is not None and [layer.name for layer in stored.layers] == spec
    targets = resolve_layers(model, spec, gone if from_golden else None)
    if modules is not None:
        modules.update((target.name, target.module) for target in targets)
    channels: ChannelSpec | Callable[[str], ChannelSpec] = settings.channels
    count = settings.channels
    counted = isinstance(count, int) and not isinstance(count, bool)
    if stored is not None and (counted or (isinstance(count, str) and count.startswith(TOP_PREFIX))):
        # a count spreads its channels over the layer, top:N ranks them by energy: later runs reuse the golden's
        # choice, so both sides show the same channels (and a golden made when a count meant the first N keeps them)
        held = {layer.name: layer.channels for layer in stored.layers}

        def channels(name: str) -> ChannelSpec:
            return StoredChannels(held[name], count) if name in held else count

    calls: dict[str, int] = {}
    captures = capture(model, inputs, targets, channels, calls, settings.channels_from)
    seen = {c.name for c in captures}
    missed = [t for t in targets if call_name(t.name, t.call or 0) not in seen]
    silent = [call_name(t.name, t.call or 0) for t in missed]
    if silent:
        compiled = [n for n, m in model.named_modules() if _compiled(m)]
        raise FeatvizError(
            f"selected layer(s) {', '.join(repr(s) for s in silent)} never ran in the forward pass of"
            f" {type(model).__name__}, so there is nothing to compare; select layers that the forward pass calls"
            + "".join(
                f"; {t.name!r} ran {calls[t.name]} time(s): "
                + ", ".join(repr(call_name(t.name, k)) for k in range(min(calls[t.name], 8)))
                for t in missed
                if calls.get(t.name)
            )
            + (
                # forward hooks fire only through Module.__call__: a layer its parent calls as self.b.forward(x) ran,
                # but no hook saw it
                "; a module called as module.forward(x) instead of module(x) runs without hooks and reads as never"
                " run: call it as module(x)"
                if not isinstance(model, torch.fx.GraphModule) and any(not calls.get(t.name) for t in missed)
                else ""
            )
            + (
                f"; {compiled[0]!r} is compiled with torch.compile, whose code can skip hooks added after it was"
                " compiled: snapshot the module it wraps (its _orig_mod) instead"
                if compiled
                else ""
            )
            + (
                "; the model is a torch.fx GraphModule, whose graph calls only the modules it traced as leaves"
                " (the containers around them were inlined): select leaf modules, or snapshot the eager model"
                if isinstance(model, torch.fx.GraphModule)
                else ""
            )
        )
    _refuse_taken_call_names(model, targets, calls)
    current = []
    for item in captures:
        maps = item.maps.numpy()
        # The statistics are finite exactly when every value is (NaN and Inf reach the mean, min or max), so the
        # values are scanned a second time only on failure; a torch isfinite pass here cost more than the statistics.
        with np.errstate(all="ignore"):
            stats = channel_statistics(maps)
        if not np.isfinite(stats).all():
            bad = int((~np.isfinite(maps)).sum())
            # Kept maps are float32: a float64 layer's values beyond its range arrive here as Inf.
            wide = (
                " (or values beyond float32's range, about 3.4e38, which the kept float32 maps hold as Inf)"
                if item.dtype == torch.float64 and not np.isnan(maps).any()
                else ""
            )
            raise FeatvizError(
                f"layer {item.name!r} produced {bad} NaN or Inf value(s){wide} among the {item.maps.numel()} values"
                f" kept (output shape {item.shape}); a snapshot of a non-finite activation cannot be compared"
            )
        if not item.finite:  # a regression in a channel or batch item the snapshot does not keep
            raise FeatvizError(
                f"layer {item.name!r} produced NaN or Inf value(s) outside the {item.maps.numel()} values kept (output"
                f" shape {item.shape}, channels kept: {_listed(item.channels)}); a non-finite activation fails the"
                " snapshot wherever it is"
            )
        current.append(CurrentLayer(item, maps, stats))
    return current, gone


def _listed(channels: tuple[int, ...]) -> str:
    """Channel indices as a message shows them: at most 8, then how many more."""
    shown = ", ".join(map(str, channels[:8]))
    return shown + (f" and {len(channels) - 8} more" if len(channels) > 8 else "")


def in_golden_frame(pictures: np.ndarray[Any, Any], stored: SnapshotGolden, layer: LayerGolden) -> TileArray:
    """Pooled maps rendered as the golden was: its stored frames, normalization and bit depth."""
    return render_tiles(pictures, layer.frames_array(), stored.normalize, stored.bit_depth)


def _without_batch(shape: tuple[int, ...], label: str) -> tuple[int, ...]:
    """``shape`` without its batch axis (read from the layout ``label``): a check may run another batch size."""
    axis = Layout.batch_axis_of(label)
    return shape if axis == UNBATCHED or axis >= len(shape) else shape[:axis] + shape[axis + 1 :]


def compare_with_golden(
    item: CurrentLayer, stored: SnapshotGolden, layer: LayerGolden, directory: Path, settings: Settings
) -> tuple[LayerResult, LayerEvidence]:
    """One layer's result against its golden, with the tiles behind it (for the report).

    A changed shape (other than the batch size), layout, tile size, channel selection or normalization is a drift
    with that reason and no scores; otherwise the golden's picture is read and the current maps, rendered in its
    frames, are scored against it (:func:`compare.compare_layer`).
    """
    shape = item.capture.shape
    pictures = pool_maps(item.maps, layer.pool)
    reason = ""
    if _without_batch(shape, item.capture.layout) != _without_batch(layer.shape, item.capture.layout):
        reason = f"shape changed from {layer.shape} to {shape}"
    elif layer.layout and item.capture.layout and layer.layout != item.capture.layout:
        reason = f"{LAYOUT_CHANGED} from {layer.layout} to {item.capture.layout}"
    elif (int(pictures.shape[1]), int(pictures.shape[2])) != tuple(layer.tile_shape):
        # a golden written before its sidecar recorded the layout, read another way now (tokens were (B, C, L))
        tile = f"{pictures.shape[1]}x{pictures.shape[2]}"
        reason = f"channel picture size changed from {layer.tile_shape[0]}x{layer.tile_shape[1]} to {tile}"
    elif item.capture.channels != layer.channels:
        reason = f"{CHANNELS_CHANGED} from {list(layer.channels)} to {list(item.capture.channels)}"
        if sorted(layer.channels) == sorted(item.capture.channels):
            reason += (
                " (the same channels in another order: a golden's pictures and scores follow the order the test gives,"
                " so give the golden's order again, or re-make it)"
            )
    elif settings.normalize != stored.normalize:
        reason = f"{NORMALIZE_CHANGED} from {stored.normalize!r} to {settings.normalize!r}"
    if reason:
        drift = LayerResult(item.capture.name, DRIFT, shape, layer.shape, item.capture.channels, reason=reason)
        return drift, LayerEvidence(item.capture.name, None, None)
    golden_tiles = split_mosaic(
        goldenpicture.read_layer(directory, layer, stored.bit_depth), len(layer.channels), layer.tile_shape
    )
    current_tiles = in_golden_frame(pictures, stored, layer)
    result = compare_layer(
        item.capture.name,
        shape=shape,
        golden_shape=layer.shape,
        channels=layer.channels,
        golden_tiles=golden_tiles,
        current_tiles=current_tiles,
        golden_stats=layer.stats_array(),
        current_stats=item.stats,
        data_range=float(max_level(stored.bit_depth)),
        threshold=settings.threshold,
        stat_tolerance=settings.stat_tolerance,
        rms_tolerance=settings.rms_tolerance,
        features=compared_features(item, layer, directory),
    )
    return result, LayerEvidence(item.capture.name, golden_tiles, current_tiles)


def compared_features(item: CurrentLayer, layer: LayerGolden, directory: Path) -> tuple[FloatArray, FloatArray] | None:
    """The golden's and the current per-feature statistics of a token image, at the golden's features; ``None``
    where the golden has none (another layout, or a golden written before they were recorded)."""
    if not layer.features or not item.token_image:
        return None
    count = int(item.maps.shape[2])
    if max(layer.features) >= count:  # the shapes agree (checked first): the sidecar was edited or damaged
        raise GoldenError(
            f"golden sidecar {directory / golden.SIDECAR} is malformed (layer {layer.name!r}: feature index"
            f" {max(layer.features)} of a map of {count} features)"
        )
    return layer.feature_stats_array(), item.feature_stats(layer.features)
