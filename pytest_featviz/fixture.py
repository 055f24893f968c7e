"""The object behind the ``feature_snapshot`` fixture: :class:`FeatureSnapshot` names each call's snapshot,
resolves its settings (call over marker over CLI over ini) and golden directory, hands the work to
:func:`pytest_featviz.snapshot.check_snapshot`, reports it, and raises on drift or a missing golden."""

from __future__ import annotations

import copy
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from pytest_featviz import environment, goldenpath
from pytest_featviz.config import Settings
from pytest_featviz.current import eager
from pytest_featviz.golden import RECREATE_HINT, GoldenError
from pytest_featviz.layers import LayerSpec
from pytest_featviz.outcomes import shown_below
from pytest_featviz.records import (
    DRIFTED,
    MISSING,
    UNREADABLE,
    Evidence,
    FeatureDriftError,
    FeatvizError,
    GoldenMissingError,
    SnapshotResult,
    printable,
)
from pytest_featviz.snapshot import TestIdentity, check_snapshot


class FeatureSnapshot:
    """``feature_snapshot(model, inputs, *, layers=None, channels=None, name=None, threshold=None, ...)``.

    Captures the selected layers of ``model`` on ``inputs`` (a tensor; a tuple is unpacked as positional arguments,
    a dict as keyword arguments), compares each selected channel with the golden and returns a :class:`SnapshotResult`.
    A setting left at ``None`` comes from the test's closest ``featviz`` marker, then the command line, then the ini
    file (``--featviz-channels``, ``featviz_channels`` for ``channels``), then the default (16 for ``channels``).
    Raises :class:`FeatureDriftError` on drift and :class:`GoldenMissingError` (an ``AssertionError``) with the
    command to run when the golden is missing; ``--featviz-create`` writes missing goldens and checks the others,
    ``--featviz-update`` also rewrites drifted ones instead of raising. Several calls in one test get the names
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
        self._folders: dict[str, str] = {}  # golden folder -> the name that has it
        self._unnamed_names: set[str] = set()  # the names calls without name= were given
        self._unnamed = 0

    def _next_name(self, name: str | None) -> str:
        if name is None:
            while str(self._unnamed) in self._names:
                self._unnamed += 1
            name = str(self._unnamed)
            self._unnamed += 1
            self._unnamed_names.add(name)
        elif not isinstance(name, str) or not name:
            raise FeatvizError(f"name must be a non-empty string; got {name!r}")
        elif name in self._unnamed_names:
            raise FeatvizError(
                f"snapshot name {name!r} is taken in {self._identity.node_id} by a feature_snapshot call without name="
                " (those are named 0, 1, ... in the order they run); give this call another name="
            )
        elif name in self._names:
            raise FeatvizError(
                f"snapshot name {name!r} is used twice in {self._identity.node_id}; give each call its own name="
            )
        folder = goldenpath.sanitize_name(name)
        other = self._folders.setdefault(folder, name)
        if other != name:  # name="x_y-bd3c9047d6" after name="x/y": two goldens in one folder, rewritten in turn
            alike = unicodedata.normalize("NFC", name) == unicodedata.normalize("NFC", other)
            raise FeatvizError(
                f"snapshot name {name!r} in {self._identity.node_id} has the golden folder of the snapshot named"
                f" {other!r} ({folder})"
                + (" (the two differ only in Unicode form, which golden paths read as one name)" if alike else "")
                + "; give this call another name="
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
        """Snapshot the feature maps of ``model`` on ``inputs`` and compare them with the golden.

        ``model`` (a ``torch.nn.Module``) runs in eval mode under ``torch.inference_mode()``; its ``training`` flags
        are restored afterwards. ``inputs`` is handed to it as a call would: a tensor as the one argument, a
        tuple unpacked as positional arguments, a dict (any mapping) as keyword arguments.

        ``layers``: a dotted module name, an fnmatch glob, a module class, a module of the model, or a list of these;
        ``None`` takes the output of each resolution stage (:func:`pytest_featviz.stages.default_layers`).
        ``channels``, per layer: a count N (N channels spread evenly over the layer, channel 0 and every C/N-th, not
        the first N; all of them where the layer has N or fewer), a list of indices, ``"all"``, or ``"top:N"`` (the
        N of highest activation energy). ``name``: the snapshot's name, part of its golden's path; calls without it
        are named ``0``, ``1``, ... in call order. ``threshold``: the lowest per-channel SSIM that still matches, in
        [-1, 1]; ``stat_tolerance`` and ``rms_tolerance``: the largest statistics and picture change that still
        match. ``preset`` (``"default"``, ``"strict"``, ``"tolerant"``) sets those three at once; a tolerance given
        in the same call wins over it. ``normalize``: ``"minmax"``, ``"sigmoid"`` or ``"percentile"``.
        ``deterministic=True`` turns TF32 and ``cudnn.benchmark`` off and deterministic algorithms on for this call.
        ``noise_floor=False`` judges every layer by the configured tolerances, without fitting tighter ones to its
        TF32 noise.

        A setting left at ``None`` comes from the test's closest ``featviz`` marker, then the command line, then the
        ini file, then the default (``channels`` 16, ``normalize`` ``"minmax"``, the ``default`` preset's
        tolerances).

        Returns the :class:`SnapshotResult`, one :class:`LayerResult` per layer in forward order: ``matched`` where
        the golden matched (in every mode), ``created`` or ``updated`` where ``--featviz-create`` or
        ``--featviz-update`` wrote it.

        Raises :class:`FeatureDriftError` (an ``AssertionError``, with the result as ``result``) on drift, unless
        ``--featviz-update`` rewrote the golden; :class:`GoldenMissingError` (an ``AssertionError``) in check mode
        when there is no golden, with the ``pytest --featviz-create <node id>`` command that creates it; and
        :class:`FeatvizError` for a setting, layer or name that cannot be used as written, NaN or Inf in a captured
        layer, or a golden that cannot be read.
        """
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
        try:
            snapshot_name = self._next_name(name)
        except FeatvizError as error:  # a name used twice
            raise error.with_traceback(None) from None
        # the golden's directory is named from the name itself; records, messages and reports carry it printable
        shown = printable(snapshot_name)
        try:
            directory = goldenpath.snapshot_dir(
                settings.golden_dir, self._identity.test_file, self._identity.test_name, snapshot_name
            )
            evidence = check_snapshot(eager(model), inputs, layers, settings, directory, self._identity, shown)
        except FeatvizError as error:  # a folder of the golden path that is a link out of it; a damaged golden
            failure = _user_error(error, self._identity, settings)
            if isinstance(error, GoldenError) and error.unread is not None:
                # counted, listed and reported beside the drifts, and its test's later goldens as not checked (the
                # device's own where goldens are keyed by device)
                device = _device(model, inputs) if settings.golden_key == "device" else None
                self._record(
                    SnapshotResult(
                        self._identity.node_id, shown, str(error.unread), UNREADABLE, (), str(failure), device=device
                    )
                )
            raise failure from None
        result = self._reporter(evidence) if self._reporter is not None else evidence.result
        self._record(result)
        if result.outcome == MISSING:
            raise GoldenMissingError(result.message)
        if result.outcome == DRIFTED:
            raise FeatureDriftError(result.message, result)
        return result


def _device(model: nn.Module, inputs: Any) -> str | None:
    """The device type of a snapshot whose golden could not be read, or ``None`` where it cannot be told: the error
    the test fails with must be the golden's, whatever the model is."""
    try:
        return environment.device_type(model, inputs)
    except Exception:  # noqa: BLE001 - any: the record is only the fuller for it
        return None


def _user_error(error: FeatvizError, identity: TestIdentity, settings: Settings) -> FeatvizError:
    """``error`` as the test shows it: without the plugin's frames (the message tells what is wrong and why), and for
    a damaged golden with the exact command that re-creates it."""
    if isinstance(error, GoldenError) and error.recreatable and not settings.update:
        # --featviz-create writes only missing goldens: the run the user made to fix it says why it did not
        why = ""
        if settings.create:
            why = "--featviz-create writes only missing goldens and leaves a damaged one as it is; "
        # the error's own hint, where it ends in one, gives way to the exact command
        text = str(error).removesuffix(RECREATE_HINT)
        error = type(error)(f"{text}\n{why}re-create it with:  {identity.update_command}")
    text = shown_below(str(error), settings.golden_dir, identity.invocation_dir)
    if text != str(error):
        error = copy.copy(error)
        error.args = (text,)
    return error.with_traceback(None)
