"""Result records: the only link between comparing, updating and reporting.

A check produces one :class:`SnapshotResult` holding one :class:`LayerResult` per layer. The records are frozen,
hold only plain Python values and round-trip through JSON (``to_dict`` / ``from_dict``), so xdist workers can send
them to the controller and the report can be written without importing torch, numpy or the comparison code. The
verdicts, outcomes and errors they hold are :mod:`pytest_featviz.outcomes`'s, also importable from here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

# The outcomes and errors live in outcomes (loaded at start-up); every module may keep taking them from here.
from pytest_featviz import outcomes
from pytest_featviz.outcomes import (
    CREATED as CREATED,
    DRIFT as DRIFT,
    DRIFTED as DRIFTED,
    FAILING as FAILING,
    GONE as GONE,
    MATCH as MATCH,
    MATCHED as MATCHED,
    MISSING as MISSING,
    NEW as NEW,
    NORMALIZE_MODES as NORMALIZE_MODES,
    OUTCOMES as OUTCOMES,
    SEVERITY as SEVERITY,
    UNREADABLE as UNREADABLE,
    UPDATED as UPDATED,
    FeatureDriftError as FeatureDriftError,
    FeatvizError as FeatvizError,
    GoldenMissingError as GoldenMissingError,
    broken_score as broken_score,
    display_path as display_path,
    environment_words as environment_words,
    printable as printable,
    score_beyond as score_beyond,
    tf32_in_effect as tf32_in_effect,
)

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class NoiseFloor:
    """How far emulated TF32 rounding moves one layer (its worst channel): the noise its tolerances were fitted to.

    Measured by a second forward pass only for a layer whose scores were not clean (see ``noisefloor.fit_noise_floor``).
    """

    ssim: float  # lowest SSIM of a channel between the run and its TF32-rounded twin
    rms_error: float  # largest picture change
    stat_delta: float  # largest statistics change

    def to_dict(self) -> dict[str, float]:
        return {"ssim": self.ssim, "rms_error": self.rms_error, "stat_delta": self.stat_delta}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> NoiseFloor | None:
        if data is None:
            return None
        return cls(float(data["ssim"]), float(data["rms_error"]), float(data["stat_delta"]))


@dataclass(frozen=True, slots=True)
class LayerResult:
    """How one layer compares with its golden.

    ``ssim``, ``stat_delta`` and ``rms_error`` hold one value per compared channel (same order as ``channels``);
    they are empty when the layer could not be compared channel by channel (new, gone or reshaped layer). The three
    tolerances are the ones the layer was judged by: the configured ones, or tighter ones fitted to the layer's
    measured ``noise`` floor.
    """

    name: str
    verdict: str
    shape: tuple[int, ...] | None
    golden_shape: tuple[int, ...] | None
    channels: tuple[int, ...] = ()
    ssim: tuple[float, ...] = ()
    stat_delta: tuple[float, ...] = ()
    rms_error: tuple[float, ...] = ()
    threshold: float = 0.0
    stat_tolerance: float = 0.0
    rms_tolerance: float = 0.0
    reason: str = ""
    noise: NoiseFloor | None = None

    @property
    def drifted(self) -> bool:
        return self.verdict != MATCH

    @property
    def min_ssim(self) -> float:
        return min(self.ssim) if self.ssim else math.nan

    @property
    def mean_ssim(self) -> float:
        return sum(self.ssim) / len(self.ssim) if self.ssim else math.nan

    @property
    def max_stat_delta(self) -> float:
        return max(self.stat_delta) if self.stat_delta else math.nan

    @property
    def max_rms_error(self) -> float:
        return max(self.rms_error) if self.rms_error else math.nan

    def channel_failed(self, position: int) -> bool:
        """Whether the channel at ``position`` (an index into ``channels``) breaks one of the tolerances."""
        return (
            self.ssim[position] < self.threshold
            or self.stat_delta[position] > self.stat_tolerance
            or self.rms_error[position] > self.rms_tolerance
        )

    def worst_channels(self, count: int = 5) -> list[int]:
        """Positions (into ``channels``) of the failing channels, worst SSIM first, at most ``count``."""
        failing = [i for i in range(len(self.ssim)) if self.channel_failed(i)]
        failing.sort(key=lambda i: (self.ssim[i], -self.rms_error[i], -self.stat_delta[i]))
        return failing[:count]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "verdict": self.verdict,
            "shape": list(self.shape) if self.shape is not None else None,
            "golden_shape": list(self.golden_shape) if self.golden_shape is not None else None,
            "channels": list(self.channels),
            "ssim": list(self.ssim),
            "stat_delta": list(self.stat_delta),
            "rms_error": list(self.rms_error),
            "threshold": self.threshold,
            "stat_tolerance": self.stat_tolerance,
            "rms_tolerance": self.rms_tolerance,
            "reason": self.reason,
            "noise_floor": self.noise.to_dict() if self.noise is not None else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerResult:
        def shape(value: Any) -> tuple[int, ...] | None:
            return None if value is None else tuple(int(v) for v in value)

        return cls(
            name=str(data["name"]),
            verdict=str(data["verdict"]),
            shape=shape(data.get("shape")),
            golden_shape=shape(data.get("golden_shape")),
            channels=tuple(int(c) for c in data.get("channels", ())),
            ssim=tuple(float(v) for v in data.get("ssim", ())),
            stat_delta=tuple(float(v) for v in data.get("stat_delta", ())),
            rms_error=tuple(float(v) for v in data.get("rms_error", ())),
            threshold=float(data.get("threshold", 0.0)),
            stat_tolerance=float(data.get("stat_tolerance", 0.0)),
            rms_tolerance=float(data.get("rms_tolerance", 0.0)),
            reason=str(data.get("reason", "")),
            noise=NoiseFloor.from_dict(data.get("noise_floor")),
        )


@dataclass(frozen=True, slots=True)
class CalibrationRun:
    """One benign perturbation of a snapshot under ``--featviz-calibrate``, scored against the golden.

    ``layers`` are the per-layer scores of the perturbed run; ``note`` says why the perturbation was skipped
    (``layers`` is then empty).
    """

    perturbation: str
    layers: tuple[LayerResult, ...] = ()
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"perturbation": self.perturbation, "layers": [r.to_dict() for r in self.layers], "note": self.note}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CalibrationRun:
        return cls(
            perturbation=str(data["perturbation"]),
            layers=tuple(LayerResult.from_dict(d) for d in data.get("layers", ())),
            note=str(data.get("note", "")),
        )


@dataclass(frozen=True, slots=True)
class SnapshotResult:
    """The outcome of one ``feature_snapshot`` call.

    ``outcome`` is one of ``matched``, ``drifted``, ``missing`` (check mode, no golden), ``created`` or ``updated``
    (update mode), or ``unreadable`` (a golden that could not be read: no layers; ``message`` is the error its test
    failed with, which says why and how to fix it). ``layers`` are in forward order. ``artifacts`` maps a role (for
    example ``"mosaic:layer1"``) to a file the report wrote for this snapshot. ``xfail``: its test is marked xfail and
    failed, so its drift was expected (set by the session, from the test's report); ``caught``: its test caught the
    :class:`FeatureDriftError`, so its drift was expected too (a test that a change is detected).
    ``update_dir``: where
    ``--featviz-update`` (and ``featviz promote``) would write (``drifted``) or wrote (``updated``) this snapshot's
    golden when that is not ``golden_dir``, the golden it was compared with: the device's own golden, when
    environment-keyed goldens are on and the shared one drifted on a device that had none. ``device``: with
    environment-keyed goldens on, the device type this run's goldens are keyed by (``cuda``), also where no path shows
    it (a missing golden). ``recreated``: an ``updated`` snapshot whose golden was damaged and was written anew.
    ``replaces``: for a ``drifted`` or ``missing`` snapshot, the :func:`~pytest_featviz.golden.sidecar_digest` of
    the golden that accepting it would write over, as this run read it (``""``: there was none), so that
    ``featviz promote`` can refuse a golden that changed since (a pull, a checkout, another update). ``unwritten``: a
    ``drifted`` or ``missing`` snapshot of an update or create run whose golden could not be written (a read-only or
    full disk; its ``message`` starts with why), so it keeps the verdict of its check.
    """

    test_id: str
    name: str
    golden_dir: str
    outcome: str
    layers: tuple[LayerResult, ...] = ()
    message: str = ""
    artifacts: dict[str, str] = field(default_factory=dict)
    calibration: tuple[CalibrationRun, ...] = ()  # --featviz-calibrate only
    xfail: bool = False
    caught: bool = False
    update_dir: str | None = None
    device: str | None = None
    recreated: bool = False
    replaces: str | None = None
    unwritten: bool = False

    @property
    def expected(self) -> bool:
        """Whether its test expected this drift: marked xfail and failed, or caught the error."""
        return self.xfail or self.caught

    @property
    def drifted_layers(self) -> list[LayerResult]:
        """The layers that differ from the golden; none for a snapshot without one (missing or created)."""
        if self.outcome in (MISSING, CREATED, UNREADABLE):
            return []
        return [layer for layer in self.layers if layer.drifted]

    @property
    def first_drifted(self) -> str | None:
        drifted = self.drifted_layers
        return drifted[0].name if drifted else None

    def layer(self, name: str) -> LayerResult:
        """The result of layer ``name``; ``KeyError`` lists the layers when there is no such layer."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer {name!r} in snapshot {self.name!r}; layers: {[lr.name for lr in self.layers]}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "test_id": self.test_id,
            "name": self.name,
            "golden_dir": self.golden_dir,
            "outcome": self.outcome,
            "first_drifted": self.first_drifted,
            "layers": [layer.to_dict() for layer in self.layers],
            "message": self.message,
            "artifacts": dict(sorted(self.artifacts.items())),
            **({"calibration": [run.to_dict() for run in self.calibration]} if self.calibration else {}),
            **({"xfail": True} if self.xfail else {}),
            **({"caught": True} if self.caught else {}),
            **({"update_dir": self.update_dir} if self.update_dir is not None else {}),
            **({"device": self.device} if self.device is not None else {}),
            **({"recreated": True} if self.recreated else {}),
            **({"replaces": self.replaces} if self.replaces is not None else {}),
            **({"unwritten": True} if self.unwritten else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SnapshotResult:
        return cls(
            test_id=str(data["test_id"]),
            name=str(data["name"]),
            golden_dir=str(data["golden_dir"]),
            outcome=str(data["outcome"]),
            layers=tuple(LayerResult.from_dict(d) for d in data.get("layers", ())),
            message=str(data.get("message", "")),
            artifacts={str(k): str(v) for k, v in data.get("artifacts", {}).items()},
            calibration=tuple(CalibrationRun.from_dict(d) for d in data.get("calibration", ())),
            xfail=data.get("xfail") is True,
            caught=data.get("caught") is True,
            update_dir=str(data["update_dir"]) if data.get("update_dir") is not None else None,
            device=str(data["device"]) if data.get("device") is not None else None,
            recreated=data.get("recreated") is True,
            replaces=str(data["replaces"]) if data.get("replaces") is not None else None,
            unwritten=data.get("unwritten") is True,
        )


@dataclass(frozen=True, slots=True)
class LayerEvidence:
    """The pictures behind one layer's verdict, for the report (never written to the golden directory).

    ``golden_tiles`` and ``current_tiles`` are (C, H, W) integer tiles of the compared channels, the current ones
    rendered in the golden's frame; either is ``None`` when the layer could not be compared (new, gone, reshaped).
    """

    name: str
    golden_tiles: npt.NDArray[np.unsignedinteger[Any]] | None
    current_tiles: npt.NDArray[np.unsignedinteger[Any]] | None


@dataclass(frozen=True, slots=True)
class Evidence:
    """A result with its pictures; ``fresh`` renders what ``--featviz-update`` would write (sidecar text and
    PNG bytes by file name), computed only when called."""

    result: SnapshotResult
    layers: tuple[LayerEvidence, ...]
    bit_depth: int
    fresh: Callable[[], tuple[str, dict[str, bytes]]]


# FeatureDriftError.__init__ names SnapshotResult in its annotations: resolvable at run time (typing.get_type_hints,
# documentation tools) once the records exist, as when it was defined here
outcomes.SnapshotResult = SnapshotResult  # type: ignore[attr-defined]
