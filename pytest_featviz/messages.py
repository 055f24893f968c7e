"""Drift messages: the text a test shows when its snapshot drifted.

:func:`drift_message` names the first drifted layer in forward order as where the drift starts, gives each drifted
layer's :func:`layer_summary` (its worst channels against their tolerances, and the noise floor it was judged by),
then the explanation the policy found (environment, input, weights), where the golden is and the command that
accepts the change. The snapshot policy (:mod:`pytest_featviz.snapshot`) decides that a snapshot drifted and why;
this module only words it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_featviz import compare
from pytest_featviz.records import MATCH, LayerResult, broken_score, display_path

if TYPE_CHECKING:
    from pytest_featviz.snapshot import TestIdentity

WORST_CHANNELS_SHOWN = 5  # channel lines for the layer where drift starts
LATER_CHANNELS_SHOWN = 2  # for each drifted layer after it, whose change it mostly carries on (the report has all)
LAYERS_SHOWN = 10  # drifted layers described in a message; the report has every one
LAYER_NAMES_SHOWN = 20  # of the drifted layers after those, named in one line


def _format_shape(shape: tuple[int, ...] | None) -> str:
    return "x".join(str(s) for s in shape) if shape else "?"


def _score(value: float, digits: int, limit: float, above: bool) -> str:
    """A score with its limit when it breaks it, so that the two read the way the verdict went: ``0.0121 > 0.012``
    (``above``: the limit is a maximum) or ``0.98996 < 0.99``; the score alone when it does not."""
    if not (value > limit if above else value < limit):
        return f"{value:.{digits}f}"
    return broken_score(value, limit, digits, above)


def _channel_line(layer: LayerResult, position: int) -> str:
    ssim, rms, stat = layer.ssim[position], layer.rms_error[position], layer.stat_delta[position]
    parts = [
        f"SSIM {_score(ssim, 4, layer.threshold, above=False)}",
        f"picture change {_score(rms, 3, layer.rms_tolerance, above=True)}",
        f"statistics change {_score(stat, 3, layer.stat_tolerance, above=True)}",
    ]
    return f"      channel {layer.channels[position]}: " + ", ".join(parts)


def layer_summary(layer: LayerResult, shown: int = WORST_CHANNELS_SHOWN) -> list[str]:
    """The lines that describe one drifted layer in a failure message, with its ``shown`` worst channels."""
    if layer.reason or not layer.ssim:
        return [f"  {layer.name}: {layer.reason or layer.verdict}"]
    worst = layer.worst_channels(shown)
    failing = sum(1 for i in range(len(layer.ssim)) if layer.channel_failed(i))
    # the scores that broke their tolerance first, so that a statistics-only drift does not read as an SSIM one
    causes = []
    if layer.min_ssim < layer.threshold:
        causes.append(f"min SSIM {_score(layer.min_ssim, 4, layer.threshold, above=False)}")
    if layer.max_rms_error > layer.rms_tolerance:
        causes.append(f"picture change up to {_score(layer.max_rms_error, 3, layer.rms_tolerance, above=True)}")
    if layer.max_stat_delta > layer.stat_tolerance:
        causes.append(f"statistics change up to {_score(layer.max_stat_delta, 3, layer.stat_tolerance, above=True)}")
    if not causes or layer.min_ssim >= layer.threshold:
        causes.append(f"min SSIM {layer.min_ssim:.4f} (threshold {layer.threshold:g})")
    head = (
        f"  {layer.name} ({_format_shape(layer.shape)}): {failing} of {len(layer.channels)} channels drifted:"
        f" {', '.join(causes)}, mean SSIM {layer.mean_ssim:.4f}"
    )
    lines = [head]
    if layer.noise is not None:
        noise = layer.noise
        lines.append(
            f"    judged by tolerances fitted to this layer's noise floor: TF32 rounding alone moves it to SSIM"
            f" {noise.ssim:.4f}, picture change {noise.rms_error:.4f}, statistics change {noise.stat_delta:.4f};"
            f" held to SSIM >= {layer.threshold:g}, picture change <= {layer.rms_tolerance:.4g}, statistics change"
            f" <= {layer.stat_tolerance:.4g} ({compare.NOISE_FACTOR:g}x the floor, between"
            f" {compare.NOISE_TIGHTEST:g}x and 1x the configured tolerances; --featviz-noise-floor=off judges by the"
            " configured ones)"
        )
        if compare.noise_reaches_tolerances(layer):
            lines.append(
                "    TF32 rounding alone takes this layer near its tolerances: against a golden made with other float"
                " arithmetic (CPU vs a GPU with TF32) this drift may be that noise; keep one golden per device type"
                " (ini featviz_golden_key = device) or take the snapshot with deterministic=True (TF32 off) and re-make"
                " its golden with it"
            )
    lines.extend(_channel_line(layer, i) for i in worst)
    if failing > len(worst):
        lines.append(f"      ... and {failing - len(worst)} more channel(s)")
    return lines


MOVED_SHARE = 0.25  # a layer before the first drift that used this share of a tolerance is named beside it


def _matched_before_first_drift(results: Sequence[LayerResult]) -> list[LayerResult]:
    """The layers before the first drifted one (in forward order) that were compared picture by picture and
    matched: where a change that shows first in a later layer may start."""
    first = next(i for i, result in enumerate(results) if result.drifted)
    return [layer for layer in results[:first] if layer.verdict == MATCH and layer.ssim]


def moved_before(results: Sequence[LayerResult]) -> str:
    """A line naming the first layer before the first drifted one that matched but used at least
    :data:`MOVED_SHARE` of a tolerance: a change that starts there stays within its tolerances, and a layer after
    it, judged by tighter tolerances fitted to its noise floor, is the first to break them. ``""`` when none did."""
    for layer in _matched_before_first_drift(results):
        # (share of the way from "unchanged" to the limit, score, its value, the limit as written)
        shares = [
            (_share(layer.max_stat_delta, layer.stat_tolerance), "statistics change", layer.max_stat_delta,
             f"<= {layer.stat_tolerance:.4g}"),
            (_share(layer.max_rms_error, layer.rms_tolerance), "picture change", layer.max_rms_error,
             f"<= {layer.rms_tolerance:.4g}"),
            (_share(1.0 - layer.min_ssim, 1.0 - layer.threshold), "min SSIM", layer.min_ssim,
             f">= {layer.threshold:.4g}"),
        ]  # fmt: skip
        share, what, value, limit = max(shares, key=lambda entry: entry[0])
        if share >= MOVED_SHARE:
            return (
                f"before it, layer {layer.name!r} matched but moved: {what} {value:.4f}, {share:.0%} of the way to its"
                f" limit ({limit}); the change may start there"
            )
    return ""


def new_weights_before(results: Sequence[LayerResult], new_weights: Collection[str]) -> str:
    """A line naming the first layer before the first drifted one that matched but moved, its own weights or buffers
    changed (``new_weights``: environment.layers_with_new_weights): the change starts there, within that layer's
    tolerances, and shows first in a later layer. Not a layer that did not move at all (a BatchNorm's call counter
    changed, which eval mode does not read). ``""`` when there is none."""
    for layer in _matched_before_first_drift(results):
        moved = layer.min_ssim < 1.0 or layer.max_stat_delta > 0.0 or layer.max_rms_error > 0.0
        if moved and layer.name.split("@")[0] in new_weights:
            return (
                f"before it, layer {layer.name!r} matched but moved, and its own weights or buffers changed since the"
                " golden was made: the change starts there, within that layer's tolerances"
            )
    return ""


def _share(change: float, allowed: float) -> float:
    """How much of an ``allowed`` change ``change`` is (0 where nothing may change, or nothing did)."""
    return change / allowed if allowed > 0 and change > 0 else 0.0


def drift_message(
    identity: TestIdentity,
    snapshot_name: str,
    directory: Path,
    results: Sequence[LayerResult],
    explanation: Sequence[str] = (),
    same_place: bool = False,
    new_weights: Collection[str] = (),
) -> str:
    """The failure message of a drifted snapshot: drifted layers in forward order, the first named as the start,
    then the ``explanation`` (environment, input, weights: environment.provenance_sentences). ``same_place``: the
    golden was made in this environment (:func:`moved_before` is said only then: against a golden from another
    machine, float noise alone moves a layer part of the way to its tolerances)."""
    drifted = [r for r in results if r.drifted]
    lines = [
        f"feature drift in snapshot {snapshot_name!r} of {identity.node_id}:"
        f" {len(drifted)} of {len(results)} layer(s) drifted (first: {drifted[0].name!r})",  # all -r and --tb=no show
        f"drift starts at layer {drifted[0].name!r} (first drifted layer in forward order)",
    ]
    new = new_weights_before(results, new_weights)
    if new:
        lines.append(new)
    moved = moved_before(results) if same_place else ""
    if moved and not new:  # the layer whose weights changed is where it starts, whatever moved after it
        lines.append(moved)
    for position, layer in enumerate(drifted[:LAYERS_SHOWN]):
        lines.extend(layer_summary(layer, WORST_CHANNELS_SHOWN if position == 0 else LATER_CHANNELS_SHOWN))
    if len(drifted) > LAYERS_SHOWN:  # layers="*" on a deep model: hundreds of blocks, each carrying the change on
        rest = [layer.name for layer in drifted[LAYERS_SHOWN:]]
        names = ", ".join(repr(name) for name in rest[:LAYER_NAMES_SHOWN])
        more = f" and {len(rest) - LAYER_NAMES_SHOWN} more" if len(rest) > LAYER_NAMES_SHOWN else ""
        lines.append(f"  ... and {len(rest)} more drifted layer(s), in the report: {names}{more}")
    lines.extend(explanation)
    if moved or any(layer.ssim for layer in drifted[:LAYERS_SHOWN]):  # not when no layer shown could be compared
        lines.append(
            "scores per channel: SSIM of its picture (1 = the same); picture change, the RMS difference of its picture"
            " in units of the golden picture's spread; statistics change, the larger change of its mean or std in"
            " units of its golden std (of a picture of tokens x features, also of each feature's over the tokens)"
        )
    lines.append(f"golden: {display_path(directory, identity.invocation_dir)}")
    lines.append(f"if the change is intended, accept it with:  {identity.update_command}")
    return "\n".join(lines)
