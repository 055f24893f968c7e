"""The noise floor of a check: how far float rounding alone moves a layer, measured by running the model again.

A layer that scored outside its clean band is judged again by tolerances fitted to its own noise
(:func:`fit_noise_floor`; a drifted one too, against a golden made with other float arithmetic, where that noise
alone reaches its tolerances and the drift is no larger than it: it stays drifted, and its message says the drift
may be that noise): the model runs once more with every convolution and matrix product rounded to TF32
(:func:`calibrate.tf32_emulation`), or in full float32 when the check itself ran in reduced precision, and that run
is compared with the check's in the golden's frames. :func:`measure_against_golden` is how
``--featviz-calibrate`` scores a perturbed model. Both call the parts of :mod:`pytest_featviz.current`; neither
writes anything.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from torch import nn

from pytest_featviz import calibrate, compare, environment
from pytest_featviz.config import Settings
from pytest_featviz.current import CurrentLayer, capture_layers, compare_with_golden, compared_features, in_golden_frame
from pytest_featviz.golden import SnapshotGolden
from pytest_featviz.layers import LayerSpec
from pytest_featviz.records import LayerEvidence, LayerResult
from pytest_featviz.render import max_level, pool_maps
from pytest_featviz.sidepass import unobserved


def fit_noise_floor(
    model: nn.Module,
    inputs: Any,
    spec: LayerSpec,
    settings: Settings,
    stored: SnapshotGolden,
    directory: Path,
    current: list[CurrentLayer],
    results: list[LayerResult],
    pictures: list[LayerEvidence],
    every_layer: bool = False,
) -> list[LayerResult]:
    """``results`` with each layer that scored outside its clean band judged by tolerances fitted to its noise.

    The noise is measured by running the model once more with every convolution and matrix product rounded to TF32
    (:func:`calibrate.tf32_emulation`), or, when this run itself computed in reduced precision, once more in full
    float32 (:func:`environment.full_precision`), and comparing that run with this one in the golden's frames.
    Nothing runs when every layer is clean (an identical re-run), when nothing is float32, or under ``torch.autocast``
    (whose reduced precision TF32 rounding does not model); a model that fails in the second run keeps its
    configured tolerances, since the check itself has already run.
    """
    # A drifted layer is measured for its message, where the golden was made with other float arithmetic (another
    # device, TF32 on one side): made here, its drift is no float noise of another machine, and a second run of a
    # model with random ops or a call counter would measure another draw as "noise". Not in an update, which
    # rewrites it whatever its noise.
    explained = (
        not settings.update
        and any(compare.drifted_by_scores(result) for result in results)  # a matching check asks nothing more
        and _made_elsewhere(stored, model, inputs)
    )
    positions = [
        i
        for i, result in enumerate(results)
        if (every_layer and result.ssim)
        or (
            settings.noise_floor
            and (compare.needs_noise_floor(result) or (explained and compare.drifted_by_scores(result)))
        )
    ]
    if not positions or not calibrate.has_float32(model, inputs):
        return results
    if environment.autocast_dtype(environment.device_type(model, inputs)):
        # Under torch.autocast the convolutions and matrix products run in its dtype, which TF32 rounding does not
        # reach: the second run would measure no noise and tighten every tolerance to 0.4x, below autocast's own.
        return results
    # Where this run already computed in TF32 (a GPU with TF32 on), rounding its operands again would change almost
    # nothing: the other run is then the full-precision one. Either way the two runs differ by TF32's effect.
    other = environment.full_precision if environment.reduced_precision(model, inputs) else calibrate.tf32_emulation
    try:
        with unobserved(model, inputs) as copied, other():  # the next snapshot finds the model as a check leaves it
            noisy, _ = capture_layers(model, copied, spec, settings, stored)
    except Exception:  # noqa: BLE001 - any failure of the extra run leaves the configured verdict standing
        return results
    plain = {item.capture.name: item for item in current}
    rounded = {item.capture.name: item for item in noisy}
    if any(name in rounded and rounded[name].maps.shape != item.maps.shape for name, item in plain.items()):
        # The second run took another path (a TorchFunctionMode turns off the nested-tensor fast path of a padded
        # nn.TransformerEncoder, whose outputs then hold every padded position): it measured no noise of this one.
        return results
    fitted = list(results)
    for i in positions:
        name, evidence = results[i].name, pictures[i]
        layer = stored.layer(name)
        if layer is None or name not in rounded or evidence.golden_tiles is None or evidence.current_tiles is None:
            continue
        noisy_tiles = in_golden_frame(pool_maps(rounded[name].maps, layer.pool), stored, layer)
        features = compared_features(plain[name], layer, directory)
        floor = compare.noise_floor(
            evidence.golden_tiles,
            evidence.current_tiles,
            noisy_tiles,
            layer.stats_array(),
            plain[name].stats,
            rounded[name].stats,
            float(max_level(stored.bit_depth)),
            features=None if features is None else (*features, rounded[name].feature_stats(layer.features)),
        )
        if settings.noise_floor:
            # A drifted layer is judged again only where its own TF32 noise reaches the tolerances it failed and the
            # drift stays within NOISE_FACTOR times that noise: its message then says that this drift may be that
            # noise. A larger drift keeps the configured tolerances, and its message as it was.
            measured = dataclasses.replace(results[i], noise=floor)
            if not compare.drifted_by_scores(results[i]) or (
                compare.noise_reaches_tolerances(measured) and compare.within_noise(results[i], floor)
            ):
                fitted[i] = compare.fitted(results[i], floor)
        else:
            fitted[i] = dataclasses.replace(results[i], noise=floor)
    return fitted


def _made_elsewhere(stored: SnapshotGolden, model: nn.Module, inputs: Any) -> bool:
    """Whether ``stored`` was made with other float arithmetic than this run's, as TF32 makes it: on another device
    type, or with TF32 in effect on one side only (another torch version alone is no TF32 noise); ``False`` for a
    golden that records no environment."""
    made = environment.Provenance.from_sidecar(stored.provenance)
    if made is None:
        return False
    now = environment.current_environment(model, inputs)
    return made.environment.device != now.device or made.environment.tf32 != now.tf32


def measure_against_golden(
    spec: LayerSpec, settings: Settings, stored: SnapshotGolden, directory: Path
) -> calibrate.Measure:
    """Scores of a (perturbed) model against the golden, for ``--featviz-calibrate``."""

    def measure(model: nn.Module, inputs: Any) -> list[LayerResult]:
        current, _ = capture_layers(model, inputs, spec, settings, stored)
        scored = []
        for item in current:
            layer = stored.layer(item.capture.name)
            if layer is not None:
                scored.append(compare_with_golden(item, stored, layer, directory, settings)[0])
        return scored

    return measure
