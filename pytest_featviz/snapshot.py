"""The snapshot policy: capture -> render -> compare -> matched, drifted, missing, created or updated.

:class:`FeatureSnapshot` is the object behind the ``feature_snapshot`` fixture. Each call resolves its settings
(call over marker over CLI over ini), finds the golden directory, and hands the work to :func:`check_snapshot`,
which is the one place that decides what happens. It owns every message a user reads on failure.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pytest_featviz import calibrate, compare, durable, environment, golden, png
from pytest_featviz.capture import LayerCapture, call_name, capture
from pytest_featviz.compare import FloatArray, compare_layer
from pytest_featviz.config import Settings
from pytest_featviz.environment import Provenance, deterministic_mode, provenance_sentences
from pytest_featviz.golden import GoldenError, LayerGolden, SnapshotGolden
from pytest_featviz.layers import LayerSpec, default_selection, resolve_layers
from pytest_featviz.layout import TOP_PREFIX, UNBATCHED, ChannelSpec, Layout, StoredChannels
from pytest_featviz.records import (
    CREATED,
    DRIFT,
    DRIFTED,
    GONE,
    MATCH,
    MATCHED,
    MISSING,
    NEW,
    UPDATED,
    CalibrationRun,
    Evidence,
    FeatureDriftError,
    FeatvizError,
    GoldenMissingError,
    LayerEvidence,
    LayerResult,
    SnapshotResult,
    display_path,
)
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
CALIBRATE_DRIFTED = (
    "not calibrated: this snapshot drifted from its golden, and its scores under the perturbations would credit that"
    " change to them; calibrate against a golden it matches"
)
CREATE_WITH = "create it with:  "  # a missing snapshot's message line; the session summary collects the commands
WORST_CHANNELS_SHOWN = 5  # channel lines for the layer where drift starts
LATER_CHANNELS_SHOWN = 2  # for each drifted layer after it, whose change it mostly carries on (the report has all)
# Reasons of a layer's drift that come from the snapshot's own settings, not from the model: _compare, _check.
SETTING_CHANGES = (
    "channel selection changed",
    "normalize changed",
    "in the golden but not captured now",
    "selected now but not in the golden",
)


@dataclass(frozen=True, slots=True)
class TestIdentity:
    """Where a snapshot belongs: the test's node id, its file (relative to the rootdir) and its name."""

    __test__ = False  # not a pytest test class

    node_id: str
    test_file: str
    test_name: str
    update_command: str


def update_command(node_id: str, extra_args: Sequence[str] = ()) -> str:
    """The command line that creates or refreshes the goldens of one test."""
    return shlex.join(["pytest", "--featviz-update", *extra_args, node_id])


class FeatureSnapshot:
    """``feature_snapshot(model, inputs, *, layers=None, channels=16, name=None, threshold=None, ...)``.

    Captures the selected layers of ``model`` on ``inputs`` (a tensor; a tuple is unpacked as positional arguments,
    a dict as keyword arguments), compares each channel with the golden and returns a :class:`SnapshotResult`.
    Raises :class:`FeatureDriftError` on drift and an ``AssertionError`` with the command to run when the golden is
    missing; under ``--featviz-update`` it writes goldens instead. Several calls in one test get the names
    ``0, 1, ...`` unless ``name=`` is given; a name used twice in one test is an error.
    """

    def __init__(
        self,
        identity: TestIdentity,
        settings: Settings,
        record: Callable[[SnapshotResult], None],
        reporter: Callable[[Evidence], SnapshotResult] | None = None,
    ) -> None:
        self._identity = identity
        self._settings = settings
        self._record = record
        self._reporter = reporter
        self._names: set[str] = set()
        self._unnamed = 0

    def _next_name(self, name: str | None) -> str:
        if name is None:
            while str(self._unnamed) in self._names:
                self._unnamed += 1
            name = str(self._unnamed)
            self._unnamed += 1
        elif not isinstance(name, str) or not name:
            raise FeatvizError(f"name must be a non-empty string; got {name!r}")
        elif name in self._names:
            raise FeatvizError(
                f"snapshot name {name!r} is used twice in {self._identity.node_id}; give each call its own name="
            )
        self._names.add(name)
        return name

    def __call__(
        self,
        model: nn.Module,
        inputs: Any,
        *,
        layers: LayerSpec = None,
        channels: int | Sequence[int] | str | None = None,
        name: str | None = None,
        threshold: float | None = None,
        normalize: str | None = None,
        stat_tolerance: float | None = None,
        rms_tolerance: float | None = None,
        deterministic: bool | None = None,
        preset: str | None = None,
        noise_floor: bool | None = None,
    ) -> SnapshotResult:
        __tracebackhide__ = True
        if not isinstance(model, nn.Module):
            raise FeatvizError(f"feature_snapshot needs a torch.nn.Module as model; got {type(model).__name__}")
        try:
            settings = self._settings.override(
                {
                    "threshold": threshold,
                    "channels": channels,
                    "normalize": normalize,
                    "stat_tolerance": stat_tolerance,
                    "rms_tolerance": rms_tolerance,
                    "deterministic": deterministic,
                    "preset": preset,
                    "noise_floor": noise_floor,
                },
                "feature_snapshot()",
            )
        except FeatvizError as error:
            raise error.with_traceback(None) from None  # the message names the setting and the value
        snapshot_name = self._next_name(name)
        directory = golden.snapshot_dir(
            settings.golden_dir, self._identity.test_file, self._identity.test_name, snapshot_name
        )
        try:
            evidence = check_snapshot(_eager(model), inputs, layers, settings, directory, self._identity, snapshot_name)
        except FeatvizError as error:
            raise _user_error(error, self._identity, settings) from None
        result = self._reporter(evidence) if self._reporter is not None else evidence.result
        self._record(result)
        if result.outcome == MISSING:
            raise GoldenMissingError(result.message)
        if result.outcome == DRIFTED:
            raise FeatureDriftError(result.message, result)
        return result


def _refuse_case_twin(golden_root: Path, directory: Path, take_back: bool = False) -> None:
    """Fail when a segment of ``directory`` has a case-only twin on disk (:func:`golden.case_twin`); with
    ``take_back``, first remove the golden this call just created there (unless the two are one directory, on a file
    system that ignores case)."""
    twin = golden.case_twin(golden_root, directory)
    if twin is None:
        return
    if take_back and not os.path.samefile(*twin):
        golden.remove_created(directory, twin[0])
    raise GoldenError(golden.case_message(*twin), recreatable=False)


def _compiled(module: nn.Module) -> bool:
    """Whether ``module`` is what ``torch.compile`` returns (told by name: importing torch._dynamo is slow)."""
    return type(module).__name__ == "OptimizedModule" and isinstance(getattr(module, "_orig_mod", None), nn.Module)


def _eager(model: nn.Module) -> nn.Module:
    """The module that ``torch.compile`` wrapped, for a compiled model: hooks added to a compiled model after an
    earlier compilation of its class can be skipped by the compiled code, silently. Its feature maps are the eager
    module's, up to the float noise that the tolerances absorb."""
    return model._orig_mod if _compiled(model) else model  # type: ignore[return-value]


def _user_error(error: FeatvizError, identity: TestIdentity, settings: Settings) -> FeatvizError:
    """``error`` as the test shows it: without the plugin's frames (the message tells what is wrong and why), and for
    a damaged golden with the exact command that re-creates it."""
    if isinstance(error, GoldenError) and error.recreatable and not settings.update:
        error = type(error)(f"{error}\nre-create it with:  {identity.update_command}")
    return error.with_traceback(None)


@dataclass(frozen=True, slots=True)
class _Current:
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
            file=golden.sanitize_name(self.capture.name) + ".png",
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


def _selection(model: nn.Module, inputs: Any, layers: LayerSpec, stored: SnapshotGolden | None) -> LayerSpec:
    if layers is not None:
        return layers
    if stored is not None:
        # The golden records which layers the default choice took, so a later change of the default (or of the
        # model) shows as drift instead of silently comparing other layers.
        return [layer.name for layer in stored.layers]
    return default_selection(model, inputs)


def _capture(
    model: nn.Module,
    inputs: Any,
    spec: LayerSpec,
    settings: Settings,
    stored: SnapshotGolden | None,
    modules: dict[str, nn.Module] | None = None,
) -> tuple[list[_Current], list[str]]:
    """Capture the selection; names from a golden that the model no longer has are returned, not raised.

    ``modules``, when given, receives the selected modules by name (for the weight fingerprints).
    """
    gone: list[str] = []
    from_golden = spec is not None and stored is not None and [layer.name for layer in stored.layers] == spec
    targets = resolve_layers(model, spec, gone if from_golden else None)
    if modules is not None:
        modules.update((target.name, target.module) for target in targets)
    channels: ChannelSpec | Callable[[str], ChannelSpec] = settings.channels
    top = settings.channels
    if stored is not None and isinstance(top, str) and top.startswith(TOP_PREFIX):
        # top:N ranks channels by energy; checks reuse the golden's choice, so both sides show the same channels.
        held = {layer.name: layer.channels for layer in stored.layers}

        def channels(name: str) -> ChannelSpec:
            return StoredChannels(held[name], top) if name in held else top

    calls: dict[str, int] = {}
    captures = capture(model, inputs, targets, channels, calls)
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
                f"; {compiled[0]!r} is compiled with torch.compile, whose code can skip hooks added after it was"
                " compiled: snapshot the module it wraps (its _orig_mod) instead"
                if compiled
                else ""
            )
        )
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
        current.append(_Current(item, maps, stats))
    return current, gone


def _in_golden_frame(pictures: np.ndarray[Any, Any], stored: SnapshotGolden, layer: LayerGolden) -> TileArray:
    """Pooled maps rendered as the golden was: its stored frames, normalization and bit depth."""
    return render_tiles(pictures, layer.frames_array(), stored.normalize, stored.bit_depth)


def _without_batch(shape: tuple[int, ...], label: str) -> tuple[int, ...]:
    """``shape`` without its batch axis (read from the layout ``label``): a check may run another batch size."""
    axis = Layout.batch_axis_of(label)
    return shape if axis == UNBATCHED or axis >= len(shape) else shape[:axis] + shape[axis + 1 :]


def _compare(
    item: _Current, stored: SnapshotGolden, layer: LayerGolden, directory: Path, settings: Settings
) -> tuple[LayerResult, LayerEvidence]:
    shape = item.capture.shape
    pictures = pool_maps(item.maps, layer.pool)
    reason = ""
    if _without_batch(shape, item.capture.layout) != _without_batch(layer.shape, item.capture.layout):
        reason = f"shape changed from {layer.shape} to {shape}"
    elif layer.layout and item.capture.layout and layer.layout != item.capture.layout:
        reason = f"layout changed from {layer.layout} to {item.capture.layout}"
    elif (int(pictures.shape[1]), int(pictures.shape[2])) != tuple(layer.tile_shape):
        # a golden written before its sidecar recorded the layout, read another way now (tokens were (B, C, L))
        tile = f"{pictures.shape[1]}x{pictures.shape[2]}"
        reason = f"channel picture size changed from {layer.tile_shape[0]}x{layer.tile_shape[1]} to {tile}"
    elif item.capture.channels != layer.channels:
        reason = f"channel selection changed from {list(layer.channels)} to {list(item.capture.channels)}"
    elif settings.normalize != stored.normalize:
        reason = f"normalize changed from {stored.normalize!r} to {settings.normalize!r}"
    if reason:
        drift = LayerResult(item.capture.name, DRIFT, shape, layer.shape, item.capture.channels, reason=reason)
        return drift, LayerEvidence(item.capture.name, None, None)
    golden_tiles = split_mosaic(
        golden.read_layer(directory, layer, stored.bit_depth), len(layer.channels), layer.tile_shape
    )
    current_tiles = _in_golden_frame(pictures, stored, layer)
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
        features=_features(item, layer, directory),
    )
    return result, LayerEvidence(item.capture.name, golden_tiles, current_tiles)


def _features(item: _Current, layer: LayerGolden, directory: Path) -> tuple[FloatArray, FloatArray] | None:
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


def check_snapshot(
    model: nn.Module,
    inputs: Any,
    layers: LayerSpec,
    settings: Settings,
    directory: Path,
    identity: TestIdentity,
    snapshot_name: str,
    *,
    measure_noise: bool = False,
) -> Evidence:
    """Capture, compare with the golden in ``directory`` and, in update mode, write; never raises on drift.

    Returns the result record with the pictures behind it, for the report. With ``settings.deterministic`` the
    model runs inside :func:`environment.deterministic_mode`; with ``settings.golden_key == "device"`` the golden of
    the device type (``<directory>@cuda``) is used when there is one, else the shared one in ``directory``, and a
    drift under ``--featviz-update`` writes the device's own golden and leaves the shared one alone. With
    ``settings.noise_floor``, layers whose scores are not clean are judged again by tolerances fitted to their TF32
    noise (:func:`_fit_noise_floor`); ``measure_noise`` measures the noise of every compared layer (benchmarks).
    """
    __tracebackhide__ = True
    with deterministic_mode(settings.deterministic):
        return _check(model, inputs, layers, settings, directory, identity, snapshot_name, measure_noise)


def _check(
    model: nn.Module,
    inputs: Any,
    layers: LayerSpec,
    settings: Settings,
    directory: Path,
    identity: TestIdentity,
    snapshot_name: str,
    measure_noise: bool = False,
) -> Evidence:
    __tracebackhide__ = True
    _refuse_case_twin(settings.golden_dir, directory)
    keyed: Path | None = None  # the device's own golden directory, when keyed goldens are on and it has none yet
    if settings.golden_key == "device":
        keyed = golden.keyed_dir(directory, environment.device_type(model, inputs))
        if keyed.is_dir():
            directory, keyed = keyed, None
    damaged = False  # a damaged golden that update mode re-creates: counted as updated, not created
    try:
        stored = golden.read_sidecar(directory)
    except GoldenError as exc:
        # not over a golden of a newer format, one not fetched from Git LFS, or one the OS refuses to read
        if not settings.update or not exc.recreatable:
            raise
        stored, damaged = None, True
    if stored is None:
        keyed = None  # a missing golden creates the shared one
    spec = _selection(model, inputs, layers, stored)
    modules: dict[str, nn.Module] = {}
    current, gone = _capture(model, inputs, spec, settings, stored, modules)
    made: list[Provenance] = []

    def now() -> Provenance:
        """This run's provenance, computed once and only when written or explained (never on a match)."""
        if not made:
            made.append(environment.provenance(model, inputs, modules))
        return made[0]

    calibration: tuple[CalibrationRun, ...] = ()  # measured below, once the snapshot is known to match

    def fresh() -> tuple[str, dict[str, bytes]]:
        written = dict(item.as_golden(settings.normalize) for item in current)
        snapshot = SnapshotGolden(settings.normalize, BIT_DEPTH, tuple(written), provenance=now().to_sidecar())
        return golden.sidecar_text(snapshot), {layer.file: png for layer, png in written.items()}

    def evidence(
        outcome: str, results: Sequence[LayerResult], pictures: Sequence[LayerEvidence], message: str = ""
    ) -> Evidence:
        result = SnapshotResult(
            identity.node_id,
            snapshot_name,
            str(directory),
            outcome,
            tuple(results),
            message,
            calibration=calibration,
        )
        return Evidence(result, tuple(pictures), stored.bit_depth if stored else BIT_DEPTH, fresh)

    if stored is None:
        results = [LayerResult(i.capture.name, NEW, i.capture.shape, None, i.capture.channels) for i in current]
        pictures = [LayerEvidence(i.capture.name, None, None) for i in current]
        if settings.update:
            sidecar, files = fresh()
            golden.write_files(directory, sidecar, files)
            # Another process (an xdist worker) may have created a case-only twin since the check above: both
            # would pass their update and fail every later check. Looking again after writing, the one that sees
            # the twin takes its own golden back and fails, as the second of the two does in a serial run.
            _refuse_case_twin(settings.golden_dir, directory, take_back=True)
            return evidence(UPDATED if damaged else CREATED, results, pictures)
        message = (
            f"no golden for snapshot {snapshot_name!r} of {identity.node_id}"
            f" (looked for {display_path(directory / golden.SIDECAR)})\n"
            f"{CREATE_WITH}{identity.update_command}"
        )
        return evidence(MISSING, results, pictures, message)

    results = []
    pictures = []
    for item in current:
        layer = stored.layer(item.capture.name)
        if layer is None:
            results.append(
                LayerResult(
                    item.capture.name,
                    NEW,
                    item.capture.shape,
                    None,
                    item.capture.channels,
                    reason="selected now but not in the golden",
                )
            )
            pictures.append(LayerEvidence(item.capture.name, None, None))
        else:
            try:
                result, picture = _compare(item, stored, layer, directory, settings)
            except GoldenError as exc:
                if not settings.update or not exc.recreatable:
                    raise
                # update mode re-creates a damaged picture, as it re-creates a damaged sidecar
                shape, channels = item.capture.shape, item.capture.channels
                result = LayerResult(item.capture.name, DRIFT, shape, layer.shape, channels, reason=str(exc))
                picture = LayerEvidence(item.capture.name, None, None)
            results.append(result)
            pictures.append(picture)
    captured = {item.capture.name for item in current}
    for layer in stored.layers:
        if layer.name not in captured:
            reason = "no longer in the model" if layer.name in gone else "in the golden but not captured now"
            results.append(LayerResult(layer.name, GONE, None, layer.shape, layer.channels, reason=reason))
            pictures.append(LayerEvidence(layer.name, None, None))
    if settings.noise_floor or measure_noise:
        results = _fit_noise_floor(
            model, inputs, spec, settings, stored, directory, current, results, pictures, measure_noise
        )
    if settings.calibrate:
        # Against a golden this run already differs from, every perturbation's scores would carry that difference,
        # and the table would credit a real change to harmless noise.
        calibration = (
            (CalibrationRun("all", (), CALIBRATE_DRIFTED),)
            if any(r.drifted for r in results)
            else calibrate.calibrate(model, inputs, _measure(spec, settings, stored, directory))
        )
    if not any(r.drifted for r in results):
        if settings.update:  # nothing to write; a killed run's hidden copy beside it would otherwise stay for good
            durable.remove_leftovers(directory)
        return evidence(MATCHED, results, pictures)
    if settings.update:
        if keyed is not None:  # the shared golden drifted on this device: write the device's own, whole
            sidecar, files = fresh()
            golden.write_files(keyed, sidecar, files)
            directory = keyed
        else:
            _rewrite(directory, stored, current, results, settings, now())
        return evidence(UPDATED, results, pictures)
    settings_only = all(r.reason.startswith(SETTING_CHANGES) for r in results if r.drifted)
    explanation = provenance_sentences(
        Provenance.from_sidecar(stored.provenance), now(), not settings_only, [r.name for r in results]
    )
    if settings_only:
        explanation.insert(
            0,
            "the drifted layers were not compared picture by picture: their selection, channels or normalization"
            " differ from the golden's (the test's layers=, channels= or normalize=, a marker or an option changed,"
            " or the model no longer has a layer the golden holds)",
        )
    if keyed is not None:
        explanation.append(
            f"this is the shared golden: there is no golden for {environment.device_type(model, inputs)} yet"
            f" (--featviz-update would write {display_path(keyed)} and leave the shared one alone)"
        )
    message = drift_message(identity, snapshot_name, directory, results, explanation)
    return evidence(DRIFTED, results, pictures, message)


def _fit_noise_floor(
    model: nn.Module,
    inputs: Any,
    spec: LayerSpec,
    settings: Settings,
    stored: SnapshotGolden,
    directory: Path,
    current: list[_Current],
    results: list[LayerResult],
    pictures: list[LayerEvidence],
    every_layer: bool = False,
) -> list[LayerResult]:
    """``results`` with each layer that scored outside its clean band judged by tolerances fitted to its noise.

    The noise is measured by running the model once more with every convolution and matrix product rounded to TF32
    (:func:`calibrate.tf32_emulation`), or, when this run itself computed in reduced precision, once more in full
    float32 (:func:`environment.full_precision`), and comparing that run with this one in the golden's frames.
    Nothing runs when every layer is clean (an identical re-run) or when nothing is float32; a model that fails in
    the second run keeps its configured tolerances, since the check itself has already run.
    """
    positions = [
        i
        for i, result in enumerate(results)
        if (every_layer and result.ssim) or (settings.noise_floor and compare.needs_noise_floor(result))
    ]
    if not positions or not calibrate.has_float32(model, inputs):
        return results
    # Where this run already computed in TF32 (a GPU with TF32 on), rounding its operands again would change almost
    # nothing: the other run is then the full-precision one. Either way the two runs differ by TF32's effect.
    other = environment.full_precision if environment.reduced_precision(model, inputs) else calibrate.tf32_emulation
    try:
        with other():
            noisy, _ = _capture(model, inputs, spec, settings, stored)
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
        noisy_tiles = _in_golden_frame(pool_maps(rounded[name].maps, layer.pool), stored, layer)
        features = _features(plain[name], layer, directory)
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
            fitted[i] = compare.fitted(results[i], floor)
        else:
            fitted[i] = dataclasses.replace(results[i], noise=floor)
    return fitted


def _measure(spec: LayerSpec, settings: Settings, stored: SnapshotGolden, directory: Path) -> calibrate.Measure:
    """Scores of a (perturbed) model against the golden, for ``--featviz-calibrate``."""

    def measure(model: nn.Module, inputs: Any) -> list[LayerResult]:
        current, _ = _capture(model, inputs, spec, settings, stored)
        scored = []
        for item in current:
            layer = stored.layer(item.capture.name)
            if layer is not None:
                scored.append(_compare(item, stored, layer, directory, settings)[0])
        return scored

    return measure


def _rewrite(
    directory: Path,
    stored: SnapshotGolden,
    current: list[_Current],
    results: Sequence[LayerResult],
    settings: Settings,
    provenance: Provenance | None = None,
) -> None:
    """Rewrite the drifted layers of a golden; layers that still match keep their picture and sidecar entry.

    The sidecar then records ``provenance`` (the run that wrote the new pictures)."""
    verdicts = {r.name: r.verdict for r in results}
    mode_changed = settings.normalize != stored.normalize
    layers: list[LayerGolden] = []
    pictures: dict[str, bytes] = {}
    for item in current:
        kept = stored.layer(item.capture.name)
        if kept is not None and verdicts[item.capture.name] == MATCH and not mode_changed:
            layers.append(kept)
            continue
        layer, png = item.as_golden(settings.normalize)
        layers.append(layer)
        pictures[layer.file] = png
    recorded = provenance.to_sidecar() if provenance is not None else stored.provenance
    snapshot = SnapshotGolden(settings.normalize, BIT_DEPTH, tuple(layers), provenance=recorded)
    golden.write_files(directory, golden.sidecar_text(snapshot), pictures)


def _format_shape(shape: tuple[int, ...] | None) -> str:
    return "x".join(str(s) for s in shape) if shape else "?"


def _channel_line(layer: LayerResult, position: int) -> str:
    ssim, rms, stat = layer.ssim[position], layer.rms_error[position], layer.stat_delta[position]
    parts = [
        f"SSIM {ssim:.4f}" + (f" < {layer.threshold:g}" if ssim < layer.threshold else ""),
        f"picture change {rms:.3f}" + (f" > {layer.rms_tolerance:g}" if rms > layer.rms_tolerance else ""),
        f"statistics change {stat:.3f}" + (f" > {layer.stat_tolerance:g}" if stat > layer.stat_tolerance else ""),
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
        causes.append(f"min SSIM {layer.min_ssim:.4f} < {layer.threshold:g}")
    if layer.max_rms_error > layer.rms_tolerance:
        causes.append(f"picture change up to {layer.max_rms_error:.3f} > {layer.rms_tolerance:g}")
    if layer.max_stat_delta > layer.stat_tolerance:
        causes.append(f"statistics change up to {layer.max_stat_delta:.3f} > {layer.stat_tolerance:g}")
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
            f" held to SSIM >= {layer.threshold:g}, picture change <= {layer.rms_tolerance:g}, statistics change"
            f" <= {layer.stat_tolerance:g} ({compare.NOISE_FACTOR:g}x the floor, between"
            f" {compare.NOISE_TIGHTEST:g}x and 1x the configured tolerances; --featviz-noise-floor=off judges by the"
            " configured ones)"
        )
        if compare.noise_reaches_tolerances(layer):
            lines.append(
                "    TF32 rounding alone takes this layer near its tolerances: against a golden made with other float"
                " arithmetic (CPU vs a GPU with TF32) this drift may be that noise; keep one golden per device type"
                " (ini featviz_golden_key = device) or take the snapshot with deterministic=True (TF32 off)"
            )
    lines.extend(_channel_line(layer, i) for i in worst)
    if failing > len(worst):
        lines.append(f"      ... and {failing - len(worst)} more channel(s)")
    return lines


def drift_message(
    identity: TestIdentity,
    snapshot_name: str,
    directory: Path,
    results: Sequence[LayerResult],
    explanation: Sequence[str] = (),
) -> str:
    """The failure message of a drifted snapshot: drifted layers in forward order, the first named as the start,
    then the ``explanation`` (environment, input, weights: environment.provenance_sentences)."""
    drifted = [r for r in results if r.drifted]
    lines = [
        f"feature drift in snapshot {snapshot_name!r} of {identity.node_id}:"
        f" {len(drifted)} of {len(results)} layer(s) drifted",
        f"drift starts at layer {drifted[0].name!r} (first drifted layer in forward order)",
    ]
    for position, layer in enumerate(drifted):
        lines.extend(layer_summary(layer, WORST_CHANNELS_SHOWN if position == 0 else LATER_CHANNELS_SHOWN))
    lines.extend(explanation)
    lines.append(
        "scores per channel: SSIM of its picture (1 = the same); picture change, the RMS difference of its picture in"
        " units of the golden picture's spread; statistics change, the larger change of its mean or std in units of"
        " its golden std (of a picture of tokens x features, also of each feature's over the tokens)"
    )
    lines.append(f"golden: {display_path(directory)}")
    lines.append(f"if the change is intended, accept it with:  {identity.update_command}")
    return "\n".join(lines)
