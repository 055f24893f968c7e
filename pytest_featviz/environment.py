"""Determinism and provenance: the ``deterministic=True`` context, the environment record and provenance.

:func:`deterministic_mode` turns off TF32 (cuBLAS matmul and cuDNN), ``cudnn.benchmark`` and non-deterministic
algorithms for the duration of one snapshot call and restores every flag afterwards, also when the forward pass
raised. :class:`Provenance` is what a golden's sidecar records about the run that made it: the environment (torch
version, device type, dtype, TF32 flags, deterministic flag) and fingerprints of the input, of each selected layer's
parameters and buffers, and of the whole model's (:mod:`pytest_featviz.fingerprint`). :func:`provenance_sentences`
turns the difference between a golden's provenance and the current one into the sentences a drift message carries.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pytest_featviz.fingerprint import SCHEMES, UNKNOWN_INPUT, WEIGHT_SCHEME, ParameterFingerprints, input_fingerprint
from pytest_featviz.layout import LEAF_SEPARATOR
from pytest_featviz.records import environment_words, tf32_in_effect

# cuBLAS is deterministic only with one of these workspace settings, read by CUDA when it first creates a handle.
DETERMINISTIC_CUBLAS_CONFIGS = (":4096:8", ":16:8")
# The new fine-grained TF32 switches (torch >= 2.9) that the legacy allow_tf32 setters also move; restored as read.
_PRECISION_ATTRIBUTES = (
    ("", "fp32_precision"),
    ("cuda.matmul", "fp32_precision"),
    ("cudnn", "fp32_precision"),
    ("cudnn.conv", "fp32_precision"),
    ("cudnn.rnn", "fp32_precision"),
    ("mkldnn", "fp32_precision"),
    ("mkldnn.matmul", "fp32_precision"),
    ("mkldnn.conv", "fp32_precision"),
    ("mkldnn.rnn", "fp32_precision"),
)


# -- the determinism context -------------------------------------------------------------------------------------


def _backend(path: str) -> Any:
    namespace: Any = torch.backends
    for part in filter(None, path.split(".")):
        namespace = getattr(namespace, part)
    return namespace


def _precision_flags() -> dict[tuple[str, str], str]:
    flags = {}
    for path, name in _PRECISION_ATTRIBUTES:
        with contextlib.suppress(AttributeError, RuntimeError):
            flags[(path, name)] = str(getattr(_backend(path), name))
    return flags


def _matmul_precision() -> str | None:
    """``highest``, ``high`` or ``medium``; ``None`` when torch refuses to read it (legacy and new API were mixed)."""
    try:
        return torch.get_float32_matmul_precision()
    except RuntimeError:
        return None


def _cudnn_allow_tf32() -> bool | None:
    """The legacy cuDNN TF32 flag; ``None`` when torch refuses to read it (legacy and new API were mixed)."""
    try:
        return bool(torch.backends.cudnn.allow_tf32)
    except RuntimeError:
        return None


@dataclass(frozen=True, slots=True)
class DeterminismFlags:
    """Every global flag :func:`deterministic_mode` changes, as read before it changed them."""

    matmul_precision: str | None
    cudnn_allow_tf32: bool | None
    precision: dict[tuple[str, str], str]
    cudnn_benchmark: bool
    cudnn_deterministic: bool
    deterministic_algorithms: bool
    deterministic_warn_only: bool

    @classmethod
    def read(cls) -> DeterminismFlags:
        return cls(
            matmul_precision=_matmul_precision(),
            cudnn_allow_tf32=_cudnn_allow_tf32(),
            precision=_precision_flags(),
            cudnn_benchmark=bool(torch.backends.cudnn.benchmark),
            cudnn_deterministic=bool(torch.backends.cudnn.deterministic),
            deterministic_algorithms=torch.are_deterministic_algorithms_enabled(),
            deterministic_warn_only=torch.is_deterministic_algorithms_warn_only_enabled(),
        )

    def restore(self) -> None:
        """Put every flag back as it was read; the legacy setters first, since they also move the new switches."""
        if self.matmul_precision is not None:
            torch.set_float32_matmul_precision(self.matmul_precision)
        if self.cudnn_allow_tf32 is not None:
            torch.backends.cudnn.allow_tf32 = self.cudnn_allow_tf32
        for (path, name), value in self.precision.items():
            with contextlib.suppress(AttributeError, RuntimeError, ValueError):
                setattr(_backend(path), name, value)
        torch.backends.cudnn.benchmark = self.cudnn_benchmark
        torch.backends.cudnn.deterministic = self.cudnn_deterministic
        torch.use_deterministic_algorithms(self.deterministic_algorithms, warn_only=self.deterministic_warn_only)


@contextlib.contextmanager
def deterministic_mode(enabled: bool = True, *, warn_only: bool = True) -> Iterator[None]:
    """For the ``with`` block: TF32 off for matmul (float32 matmul precision ``highest``) and cuDNN,
    ``cudnn.benchmark`` off, ``cudnn.deterministic`` on, ``torch.use_deterministic_algorithms(True,
    warn_only=warn_only)``; every flag restored on exit, also on error.

    ``warn_only=True`` (the default) makes an operation that has no deterministic implementation warn instead of
    raise, so a snapshot test that works without ``deterministic=True`` keeps working with it; the warning shows in
    pytest's warnings summary. cuBLAS is deterministic only when the environment variable ``CUBLAS_WORKSPACE_CONFIG``
    is ``:4096:8`` or ``:16:8`` before CUDA starts; it cannot be set from here (CUDA reads it once), so on CUDA without
    it torch warns. With ``enabled=False`` nothing is touched.
    """
    if not enabled:
        yield
        return
    saved = DeterminismFlags.read()
    try:
        _tf32_off()
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=warn_only)
        yield
    finally:
        saved.restore()


@contextlib.contextmanager
def full_precision() -> Iterator[None]:
    """For the ``with`` block: float32 matmuls at ``highest`` precision and no TF32 in cuDNN; restored on exit."""
    saved = DeterminismFlags.read()
    try:
        _tf32_off()
        yield
    finally:
        saved.restore()


def _tf32_off() -> None:
    """Float32 matmuls at ``highest`` precision and no TF32 in cuDNN (the callers restore the flags).

    The legacy setters keep the legacy and new switches consistent (torch refuses to run on a mix); "highest" also
    stops oneDNN from computing float32 matmuls in bfloat16 ("medium").
    """
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = False


def reduced_precision(model: nn.Module, inputs: Any) -> bool:
    """Whether a float32 run of ``model`` computes below float32 now: TF32 (or bfloat16 matmuls, precision
    ``medium``) allowed for matmuls, or cuDNN TF32 on a CUDA device."""
    matmul, cudnn = tf32_flags()
    return matmul or (cudnn and device_type(model, inputs) == "cuda")


def tf32_flags() -> tuple[bool, bool]:
    """Whether TF32 is allowed for (cuBLAS matmul, cuDNN) now; a flag torch refuses to read counts as on."""
    matmul = _matmul_precision() != "highest"
    cudnn = _cudnn_allow_tf32()
    return matmul, True if cudnn is None else cudnn


def cublas_deterministic() -> bool:
    """Whether ``CUBLAS_WORKSPACE_CONFIG`` holds a setting under which cuBLAS is deterministic."""
    return os.environ.get("CUBLAS_WORKSPACE_CONFIG", "") in DETERMINISTIC_CUBLAS_CONFIGS


# -- the environment record --------------------------------------------------------------------------------------


def input_tensors(value: Any, _within: frozenset[int] = frozenset()) -> Iterator[torch.Tensor]:
    """Every tensor in an input: the input itself, or the items of its mappings, lists, tuples and dataclass
    instances, depth first; a container met again within itself (a tree's parent link) is not walked again."""
    if isinstance(value, torch.Tensor):
        yield value
        return
    if id(value) in _within:
        return
    within = _within | {id(value)}
    if isinstance(value, Mapping):
        for key in value:
            yield from input_tensors(value[key], within)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from input_tensors(item, within)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            yield from input_tensors(getattr(value, field.name, None), within)


def device_type(model: nn.Module, inputs: Any) -> str:
    """The device type a snapshot runs on (``cpu``, ``cuda``, ``mps``, ...): the model's first parameter or buffer,
    else the input's first tensor, else ``cpu``. Goldens keyed by device use it as key."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device.type
    for tensor in input_tensors(inputs):
        return tensor.device.type
    return "cpu"


def _dtype(model: nn.Module, inputs: Any) -> str:
    for tensor in itertools.chain(model.parameters(), model.buffers(), input_tensors(inputs)):
        if tensor.is_floating_point():
            return str(tensor.dtype).removeprefix("torch.")
    return "none"


@dataclass(frozen=True, slots=True)
class Environment:
    """Where a snapshot was computed: torch version, device type, floating dtype, TF32 flags, deterministic flag."""

    torch: str
    device: str
    dtype: str
    matmul_tf32: bool
    cudnn_tf32: bool
    deterministic: bool
    # the dtype autocast computes in on the snapshot's device type (``bfloat16``), "" when autocast is off; written
    # only when on, so that a sidecar of a run without autocast reads as it did before it was recorded
    autocast: str = ""

    @property
    def tf32(self) -> bool:
        """Whether TF32 could round this run's float32 matmuls or convolutions (only CUDA has TF32 units)."""
        return tf32_in_effect(self.to_dict())

    def describe(self) -> str:
        """``cuda with torch 2.14.1, TF32 on``: the facts that can move activations, in words."""
        return environment_words(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return {
            "torch": self.torch,
            "device": self.device,
            "dtype": self.dtype,
            "matmul_tf32": self.matmul_tf32,
            "cudnn_tf32": self.cudnn_tf32,
            "deterministic": self.deterministic,
            **({"autocast": self.autocast} if self.autocast else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Environment:
        return cls(
            torch=str(data["torch"]),
            device=str(data["device"]),
            dtype=str(data["dtype"]),
            matmul_tf32=bool(data["matmul_tf32"]),
            cudnn_tf32=bool(data["cudnn_tf32"]),
            deterministic=bool(data["deterministic"]),
            autocast=str(data.get("autocast") or ""),
        )


def current_environment(model: nn.Module, inputs: Any) -> Environment:
    """The environment of a snapshot of ``model`` on ``inputs`` now (inside :func:`deterministic_mode` if used)."""
    matmul, cudnn = tf32_flags()
    device = device_type(model, inputs)
    return Environment(
        torch=torch.__version__.split("+")[0],
        device=device,
        dtype=_dtype(model, inputs),
        matmul_tf32=matmul,
        cudnn_tf32=cudnn,
        deterministic=torch.are_deterministic_algorithms_enabled(),
        autocast=autocast_dtype(device),
    )


def autocast_dtype(device: str) -> str:
    """The dtype ``torch.autocast`` computes in on ``device`` now (``bfloat16``), or "" when it is off there (or the
    device type has no autocast)."""
    try:
        if torch.is_autocast_enabled(device):
            return str(torch.get_autocast_dtype(device)).removeprefix("torch.")
    except (RuntimeError, ValueError, TypeError):  # a device type autocast does not know
        pass
    return ""


# -- provenance --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Provenance:
    """What a golden records about the run that made it; compared with the current run when a snapshot drifts."""

    environment: Environment
    input: str
    model: str
    layers: dict[str, str]
    # the model's parameters and buffers without their names ("" in goldens written before it was recorded)
    values: str = ""
    scheme: int = 1  # how the weight fingerprints were made (fingerprint.WEIGHT_SCHEME; 1 where a sidecar has none)

    def to_sidecar(self) -> dict[str, Any]:
        """The sidecar's ``environment`` and ``fingerprints`` entries."""
        prints: dict[str, Any] = {"input": self.input, "model": self.model, "layers": dict(self.layers)}
        if self.values:
            prints["values"] = self.values
        if self.scheme != 1:
            prints["scheme"] = self.scheme
        return {"environment": self.environment.to_dict(), "fingerprints": prints}

    @classmethod
    def from_sidecar(cls, data: Mapping[str, Any] | None) -> Provenance | None:
        """The provenance of a sidecar; ``None`` for a sidecar written before it was recorded, or a garbled one."""
        if not data:
            return None
        try:
            prints = data["fingerprints"]
            return cls(
                environment=Environment.from_dict(data["environment"]),
                input=str(prints["input"]),
                model=str(prints["model"]),
                layers={str(k): str(v) for k, v in prints["layers"].items()},
                values=str(prints.get("values", "")),
                scheme=int(prints.get("scheme", 1)),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            return None


def provenance(
    model: nn.Module,
    inputs: Any,
    layers: Mapping[str, nn.Module],
    scheme: int = WEIGHT_SCHEME,
    reduced: ParameterFingerprints | None = None,
) -> Provenance:
    """The provenance of a snapshot of ``model`` on ``inputs`` whose selected layers are ``layers``, its weight
    fingerprints made by ``scheme`` (a golden's, to compare with it; the newest, to write), from the tensors
    ``reduced`` holds reduced already where it is given (the same run's provenance by another scheme)."""
    prints = reduced.by_scheme(scheme) if reduced is not None else ParameterFingerprints(model, scheme)
    return Provenance(
        environment=current_environment(model, inputs),
        input=input_fingerprint(inputs),
        model=prints.of(model),
        layers=prints.layers(layers),
        values=prints.values_of(model),
        scheme=scheme,
    )


def environment_sentence(golden: Environment, current: Environment) -> str | None:
    """``golden made on cpu with torch 2.14.1; running on cuda with torch 2.14.1, TF32 on``; ``None`` when the
    two environments agree on everything that can move activations."""
    if golden.describe() == current.describe():
        return None
    return f"environment differs from the golden's: golden made on {golden.describe()}; running on {current.describe()}"


def _by_module(names: Sequence[str]) -> str:
    """``names`` of layers listed by module: the outputs of one module's tuple or dict (``m+0``, ``m+1+box``) share
    its fingerprint, so they are named together under it, not each as if its own weights changed."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(name.split(LEAF_SEPARATOR, 1)[0], []).append(name)
    return ", ".join(
        repr(module)
        if leaves == [module]
        else f"{module!r} (weights are per module: its outputs {', '.join(repr(n) for n in leaves)})"
        for module, leaves in groups.items()
    )


def _converted(golden: str, current: str) -> str:
    """What a drift message adds to a changed model fingerprint when the model's dtype changed: converting a tensor
    to another dtype rounds its values, which alone changes its fingerprint (float64 is fingerprinted as float32).
    Not said of the input: the environment's dtype is the model's, and a model can cast its input itself."""
    exact = {"float32", "float64"}
    if golden == current or {golden, current} <= exact or "none" in (golden, current):
        return ""
    return (
        f"; the dtype changed too ({golden} -> {current}), and converting a tensor to another dtype rounds its"
        " values, which alone changes its fingerprint"
    )


# What a drift message adds where the fingerprints of a golden written before scheme 2 call weights unchanged.
SCHEME_1_BLIND = (
    "(the golden's weight fingerprints are of scheme 1, written before pytest-featviz recorded a scheme: they miss a"
    " weight tensor scaled by a power of two or negated as a whole, which reads as unchanged here; a golden written"
    " now, by --featviz-update, records scheme 2, which sees it)"
)


def _changed_layers(golden: Provenance, current: Provenance) -> list[str]:
    """The selected layers (by name, without a call index) whose weights differ from those of the golden's layer of
    that name."""
    return [name for name in current.layers if name in golden.layers and golden.layers[name] != current.layers[name]]


def _renamed(golden: Provenance, current: Provenance) -> bool:
    """Whether the model's weights and buffers hold the golden's values under other names: a module renamed, moved
    or wrapped, no weight changed (a golden written before ``values`` was recorded cannot tell)."""
    return golden.model != current.model and bool(golden.values) and golden.values == current.values


def layers_with_new_weights(golden: Provenance | None, current: Provenance) -> set[str]:
    """The selected layers whose own weights changed since the golden was made, where the fingerprints can tell: none
    for a golden without provenance or of another scheme, or where the model's values are the golden's under other
    names (a module renamed or wrapped: a name may select another module now)."""
    if golden is None or golden.scheme != current.scheme:
        return set()
    return set() if _renamed(golden, current) else set(_changed_layers(golden, current))


def provenance_sentences(
    golden: Provenance | None,
    current: Provenance,
    compared: bool = True,
    order: Sequence[str] = (),
    names_moved: bool = False,
) -> list[str]:
    """What a drift message says about where the drift comes from: environment, input, weights, or neither.

    ``compared=False``: no activation was compared (only the snapshot's settings changed), so the sentences name
    what changed and conclude nothing about activations that moved. ``order``: the layers in forward order, the
    order in which the message names layers with changed weights (else the order of selection). ``names_moved``:
    the model lost layers the golden holds, so a name that still selects a module may select another one now.
    """
    if golden is None:
        return [
            "the golden records no provenance (made before pytest-featviz recorded it); refresh it with"
            " --featviz-update to get environment, input and weight checks in this message"
        ]
    lines = []
    environment = environment_sentence(golden.environment, current.environment)
    if environment:
        lines.append(environment)
    input_known = UNKNOWN_INPUT not in (golden.input, current.input)
    input_changed = input_known and golden.input != current.input
    converted = _converted(golden.environment.dtype, current.environment.dtype)
    if input_changed:
        lines.append(
            f"the input changed since the golden was made (input fingerprint {golden.input} -> {current.input}):"
            " the drift may come from the input (data, preprocessing, seed) rather than the model; an input meant to"
            " be the same differs too where its float preprocessing rounds otherwise here (the fingerprint is of its"
            " exact bits, which another thread count, device or library version can move)"
        )
    if golden.scheme != current.scheme:  # a golden of a newer version, whose fingerprints this one cannot make
        lines.append(
            f"whether the model's weights changed is not known: the golden's weight fingerprints were made by a newer"
            f" pytest-featviz (scheme {golden.scheme}; this one makes {', '.join(map(str, SCHEMES))}): upgrade"
            " pytest-featviz to compare them"
        )
        return lines
    # the selected layers whose weights differ from those of the golden's layer of that name, in forward order
    known = [name for name in current.layers if name in golden.layers]
    changed = _changed_layers(golden, current)
    position = {name.split("@")[0]: i for i, name in reversed(list(enumerate(order)))}
    changed.sort(key=lambda name: position.get(name, len(position)))  # stable: the rest keep their order
    renamed = _renamed(golden, current)
    if renamed:
        lines.append(
            "the model's weights and buffers hold the values they held when the golden was made, under other names"
            f" (model fingerprint {golden.model} -> {current.model}): a module was renamed, moved or wrapped"
            + (
                f"; layer name(s) {_by_module(changed)} now select modules with other weights than the golden's"
                " layers of those names, so the golden's pictures of them show other modules"
                if changed
                else ""
            )
        )
        compared = compared and not changed  # nothing can be said of activations compared with another module's
    said = len(lines)
    if golden.model != current.model and not renamed:
        if changed and names_moved:
            where = (
                f"; selected layer(s) whose weights differ from those of the golden's layer of that name:"
                f" {_by_module(changed)}, though the model lost layers the golden holds, so a name may select another"
                " module now (a wrapper or a rename) and which layers' weights changed is not known"
            )
        elif changed:
            where = f"; selected layer(s) with changed weights: {_by_module(changed)}"
        elif known and len(known) == len(current.layers):
            where = "; the selected layers' own weights are unchanged, so the change is in other layers or buffers"
        elif known:
            where = (
                "; the selected layers the golden also holds have their own weights unchanged (the others are not"
                " in the golden)"
            )
        else:  # the model's names changed: a wrapper or a rename, with weights changed too
            where = "; no selected layer is in the golden under its name, so which layers' weights changed is not known"
        lines.append(
            f"the model's weights or buffers changed since the golden was made"
            f" (model fingerprint {golden.model} -> {current.model}){where}{converted}"
        )
    elif compared and not input_known:
        lines.append(
            "the model's weights and buffers are unchanged since the golden was made; whether the input changed is"
            " not known, because part of it has no stable fingerprint (its repr names a memory address or leaves values"
            " out): the drift"
            " comes from the input, or from a code or dependency change"
            + (" (or the environment change above)" if environment else "")
        )
    elif compared and not input_changed:
        lines.append(
            "the input and the model's weights and buffers are unchanged since the golden was made, yet activations"
            " moved: a code or dependency change"
            + (" (or the environment change above)" if environment else " (the environment is the same too)")
        )
    elif input_changed and not renamed:  # said, so that "unchanged" is not read as "not checked"
        lines.append("the model's weights and buffers are unchanged since the golden was made")
    # weights (all, or the selected layers') called unchanged by the fingerprints of a golden written before scheme 2
    unchanged = golden.model == current.model or renamed or (not changed and bool(known))
    if golden.scheme == 1 and unchanged and (renamed or len(lines) > said):
        lines.append(SCHEME_1_BLIND)
    return lines
