"""The noise floor: ``--featviz-calibrate`` scores each snapshot under benign perturbations against its golden.

A benign perturbation changes how the numbers are computed but not what the model computes: another thread count,
``channels_last`` memory format, TF32 rounding (emulated on any device by :func:`tf32_emulation`: every convolution
and matrix product rounds its operands and result to TF32's 10-bit mantissa) and float64. What each does to the
scores is the margin a team has between the noise it must tolerate and its thresholds. ``channels_last`` and
float64 run on deep copies of the model (threads and TF32 need none), so the model under test is never changed; a
model that cannot be copied skips them with a note. Nothing is written to the golden directory. The same TF32
emulation measures a layer's noise floor during a check (``noisefloor.fit_noise_floor``).

:func:`calibrate` runs the perturbations (torch is imported there); :func:`summary_lines` formats the records for
the terminal summary and imports nothing heavy, since the xdist controller calls it without ever running a model.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytest_featviz.records import CalibrationRun, LayerResult, SnapshotResult

if TYPE_CHECKING:
    import torch
    from torch import nn

PERTURBATIONS = ("threads", "channels_last", "tf32", "float64")
TF32_MANTISSA_BITS = 10

# Scores one (possibly perturbed) model on (possibly perturbed) inputs against the golden, one result per layer.
Measure = Callable[["nn.Module", Any], Sequence[LayerResult]]


class Skip(Exception):
    """A perturbation that does not apply to this model or input; the message is the note shown."""


def round_tf32(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` rounded to TF32 precision (10 explicit mantissa bits, round half to even); non-float32 unchanged."""
    import torch

    if tensor.dtype != torch.float32:
        return tensor
    mantissa, exponent = torch.frexp(tensor)  # mantissa in [0.5, 1): 1 implicit + 10 explicit bits = 11 bits
    scale = float(1 << (TF32_MANTISSA_BITS + 1))
    return torch.ldexp(torch.round(mantissa * scale) / scale, exponent)


def _map_tensors(value: Any, convert: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return convert(value)
    if isinstance(value, dict):
        return {key: _map_tensors(item, convert) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        mapped = [_map_tensors(item, convert) for item in value]
        return tuple(mapped) if isinstance(value, tuple) else mapped
    return value


def _copy(model: nn.Module) -> nn.Module:
    try:
        return copy.deepcopy(model)
    except Exception as exc:  # deepcopy raises whatever a module's attributes raise
        raise Skip(f"the model cannot be copied ({type(exc).__name__}: {exc})") from exc


@contextlib.contextmanager
def _threads(model: nn.Module, inputs: Any) -> Iterator[tuple[nn.Module, Any, str]]:
    import torch

    before = torch.get_num_threads()
    threads = 1 if before > 1 else 2
    torch.set_num_threads(threads)
    try:
        yield model, inputs, f"threads={threads}"  # the model is only run, never changed: no copy needed
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _channels_last(model: nn.Module, inputs: Any) -> Iterator[tuple[nn.Module, Any, str]]:
    import torch

    found = False

    def convert(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal found
        if tensor.dim() != 4:
            return tensor
        found = True
        return tensor.contiguous(memory_format=torch.channels_last)

    moved = _map_tensors(inputs, convert)
    if not found:
        raise Skip("no 4-D input tensor to store channels_last")
    yield _copy(model).to(memory_format=torch.channels_last), moved, "channels_last"


def _tf32_functions() -> frozenset[Any]:
    """The torch functions a GPU runs on its TF32 tensor cores: convolutions and every kind of matrix product."""
    import torch
    import torch.nn.functional as F

    names = (
        (F, ("conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "linear")),
        (F, ("bilinear", "scaled_dot_product_attention")),
        (torch, ("matmul", "mm", "bmm", "addmm", "baddbmm", "addbmm", "einsum", "conv1d", "conv2d", "conv3d")),
        # Run as one function each, inside which the mode is off: their input, weights and outputs are rounded
        # (not each product inside), so their noise floor is not 0.
        (torch, ("lstm", "gru", "rnn_tanh", "rnn_relu")),
        (F, ("multi_head_attention_forward",)),
        (torch.Tensor, ("__matmul__", "__rmatmul__", "matmul", "mm", "bmm")),
    )
    return frozenset(getattr(owner, name) for owner, group in names for name in group if hasattr(owner, name))


@contextlib.contextmanager
def tf32_emulation() -> Iterator[None]:
    """Inside: every convolution and matrix product rounds its float32 operands and result to TF32.

    A ``TorchFunctionMode``, so it reaches functional calls (attention's matrix products, ``F.linear`` in custom
    modules) as well as layers, on any device, without copying or changing the model. Rounding the result too
    over-states the hardware slightly (it accumulates in float32): the emulation errs on the side of more noise.
    """
    from torch.overrides import TorchFunctionMode

    rounded = _tf32_functions()

    class _Mode(TorchFunctionMode):
        def __torch_function__(
            self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
        ) -> Any:
            kwargs = kwargs or {}
            if func not in rounded:
                return func(*args, **kwargs)
            result = func(*_map_tensors(args, round_tf32), **_map_tensors(kwargs, round_tf32))
            return _map_tensors(result, round_tf32)

    with _Mode():
        yield


def has_float32(model: nn.Module, inputs: Any) -> bool:
    """Whether TF32 rounding can touch this run: some float32 parameter or input tensor."""
    import torch

    from pytest_featviz.environment import input_tensors

    return any(t.dtype == torch.float32 for t in itertools.chain(input_tensors(inputs), model.parameters()))


@contextlib.contextmanager
def _tf32(model: nn.Module, inputs: Any) -> Iterator[tuple[nn.Module, Any, str]]:
    if not has_float32(model, inputs):
        raise Skip("no float32 parameter or input to round")
    with tf32_emulation():
        yield model, inputs, "tf32 rounding"  # the model is only run, never changed: no copy needed


@contextlib.contextmanager
def _float64(model: nn.Module, inputs: Any) -> Iterator[tuple[nn.Module, Any, str]]:
    def convert(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.double() if tensor.is_floating_point() else tensor

    yield _copy(model).double(), _map_tensors(inputs, convert), "float64"


_RUNNERS: dict[str, Callable[[nn.Module, Any], contextlib.AbstractContextManager[tuple[nn.Module, Any, str]]]] = {
    "threads": _threads,
    "channels_last": _channels_last,
    "tf32": _tf32,
    "float64": _float64,
}


def calibrate(model: nn.Module, inputs: Any, measure: Measure) -> tuple[CalibrationRun, ...]:
    """Score ``model`` on ``inputs`` under each benign perturbation with ``measure``; never changes ``model``."""
    from pytest_featviz.sidepass import unobserved

    runs = []
    for name in PERTURBATIONS:
        try:
            # each perturbation starts from the model and input as the check's own pass left them, whatever the
            # perturbation before did
            with (
                unobserved(model, inputs) as copied,
                _RUNNERS[name](model, copied) as (perturbed, perturbed_inputs, label),
            ):
                runs.append(CalibrationRun(label, tuple(measure(perturbed, perturbed_inputs))))
        except Skip as exc:
            runs.append(CalibrationRun(name, (), f"skipped: {exc}"))
        except Exception as exc:  # a perturbation the model does not support (a dtype or memory format it refuses)
            runs.append(CalibrationRun(name, (), f"failed: {type(exc).__name__}: {exc}"))
    return tuple(runs)


# -- the terminal summary (no torch) -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LayerFloor:
    """The worst scores one layer reached over every perturbation, each with the perturbation that caused it."""

    name: str
    ssim: tuple[float, str]
    picture: tuple[float, str]
    statistics: tuple[float, str]
    threshold: float
    rms_tolerance: float
    stat_tolerance: float
    reasons: tuple[str, ...]

    @property
    def exceeded(self) -> bool:
        return (
            bool(self.reasons)
            or self.ssim[0] < self.threshold
            or self.picture[0] > self.rms_tolerance
            or self.statistics[0] > self.stat_tolerance
        )


def layer_floors(runs: Sequence[CalibrationRun]) -> list[LayerFloor]:
    """Per layer (in forward order), the lowest SSIM and largest picture and statistics change over ``runs``."""
    names: list[str] = []
    found: dict[str, list[tuple[str, LayerResult]]] = {}
    for run in runs:
        for layer in run.layers:
            if layer.name not in found:
                names.append(layer.name)
            found.setdefault(layer.name, []).append((run.perturbation, layer))
    floors = []
    for name in names:
        scored = [(label, layer) for label, layer in found[name] if layer.ssim]
        reasons = tuple(f"{label}: {layer.reason or layer.verdict}" for label, layer in found[name] if not layer.ssim)
        if scored:
            ssim = min(((layer.min_ssim, label) for label, layer in scored), key=lambda x: x[0])
            picture = max(((layer.max_rms_error, label) for label, layer in scored), key=lambda x: x[0])
            statistics = max(((layer.max_stat_delta, label) for label, layer in scored), key=lambda x: x[0])
            first = scored[0][1]
        else:
            ssim = picture = statistics = (math.nan, "")
            first = found[name][0][1]
        floors.append(
            LayerFloor(
                name, ssim, picture, statistics, first.threshold, first.rms_tolerance, first.stat_tolerance, reasons
            )
        )
    return floors


def _cell(value: tuple[float, str], limit: float, digits: int) -> str:
    number, label = value
    if math.isnan(number):
        return "-"
    return f"{number:.{digits}f} ({limit:g}) {label}"


def summary_lines(results: Sequence[SnapshotResult]) -> list[str]:
    """The ``featviz calibrate`` section: per snapshot and layer, the worst scores next to the thresholds."""
    calibrated = [r for r in results if r.calibration]  # listed, with why where no perturbation ran
    measured = sum(1 for r in calibrated if any(not run.note for run in r.calibration))
    uncalibrated = [r for r in results if not r.calibration]
    lines = [
        f"noise floor of {measured} snapshot(s) under benign perturbations ({', '.join(PERTURBATIONS)});"
        " worst value seen (threshold) and the perturbation that caused it; no golden was written"
    ]
    header = ("layer", "lowest SSIM", "largest picture change", "largest statistics change")
    for result in calibrated:
        ran = ", ".join(run.perturbation for run in result.calibration if not run.note) or "none"
        lines.append(f"{result.test_id} [snapshot {result.name!r}], perturbations run: {ran}")
        floors = layer_floors(result.calibration)
        rows = [header] + [
            (
                floor.name + (" !" if floor.exceeded else ""),
                _cell(floor.ssim, floor.threshold, 5),
                _cell(floor.picture, floor.rms_tolerance, 4),
                _cell(floor.statistics, floor.stat_tolerance, 4),
            )
            for floor in floors
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines.extend(
            "  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in (rows if floors else [])
        )
        for floor in floors:
            lines.extend(f"  {floor.name}: not comparable under {reason}" for reason in floor.reasons)
        lines.extend(f"  {run.perturbation}: {run.note}" for run in result.calibration if run.note)
        if any(floor.exceeded for floor in floors):
            lines.append("  ! a benign perturbation already crosses a threshold here: this layer has no margin")
    if uncalibrated:
        lines.append(f"{len(uncalibrated)} snapshot(s) not calibrated (no golden to compare with, or not checked)")
    return lines
