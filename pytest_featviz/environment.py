"""Determinism and provenance: the ``deterministic=True`` context, the environment record and cheap fingerprints.

:func:`deterministic_mode` turns off TF32 (cuBLAS matmul and cuDNN), ``cudnn.benchmark`` and non-deterministic
algorithms for the duration of one snapshot call and restores every flag afterwards, also when the forward pass
raised. :class:`Provenance` is what a golden's sidecar records about the run that made it: the environment (torch
version, device type, dtype, TF32 flags, deterministic flag) and fingerprints of the input, of each selected layer's
parameters and buffers, and of the whole model's. :func:`provenance_sentences` turns the difference between a
golden's provenance and the current one into the sentences a drift message carries.

Parameter fingerprints must cost a fraction of a forward pass and be the same on every device, so they are not
hashes of the bytes: each tensor's bits are read as int32 words and reduced with wrapping integer sums (the sum of
the words, and the per-row and per-column sums weighted by position, which catch permuted output channels and
permuted weights within a row). Wrapping integer addition is exact and associative, so CPU and CUDA give the same
numbers whatever the reduction order; only the few reduced numbers are hashed. They can miss a change that
preserves all three sums: the fingerprints explain a verdict, they never make it.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from pytest_featviz.records import environment_words, tf32_in_effect

FINGERPRINT_LENGTH = 16  # hex digits kept of a sha256: enough to tell versions apart, short in a sidecar
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


def input_tensors(value: Any) -> Iterator[torch.Tensor]:
    """Every tensor in an input: the input itself, or the items of its mappings, lists and tuples, depth first."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, Mapping):
        for key in value:
            yield from input_tensors(value[key])
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from input_tensors(item)


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
        )


def current_environment(model: nn.Module, inputs: Any) -> Environment:
    """The environment of a snapshot of ``model`` on ``inputs`` now (inside :func:`deterministic_mode` if used)."""
    matmul, cudnn = tf32_flags()
    return Environment(
        torch=torch.__version__.split("+")[0],
        device=device_type(model, inputs),
        dtype=_dtype(model, inputs),
        matmul_tf32=matmul,
        cudnn_tf32=cudnn,
        deterministic=torch.are_deterministic_algorithms_enabled(),
    )


# -- fingerprints ----------------------------------------------------------------------------------------------


def _as_compared(tensor: torch.Tensor) -> torch.Tensor:
    """A float64 tensor as float32, else ``tensor``: fingerprints read float64 values rounded to float32, so a model
    and input converted with ``.double()`` keep the fingerprints of their float32 selves (the conversion is exact),
    and a drift message under float64 does not call weights and input changed that only changed type."""
    return tensor.to(torch.float32) if tensor.dtype == torch.float64 else tensor


def _dtype_label(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype == torch.float64 else dtype


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:FINGERPRINT_LENGTH]


# The fingerprint of an input holding an object whose only description is its ``repr`` with a memory address
# (``<Cfg object at 0x7f...>``): that text differs on every run, so no comparison can say whether the input changed.
UNKNOWN_INPUT = "unknown"
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+>")  # the end of a default repr: <...Config object at 0x7f...>


def _as_array(value: Any) -> np.ndarray[Any, Any] | None:
    """``value`` as a numpy array when it is one or exposes the array interface (a PIL image); else ``None``."""
    if isinstance(value, np.ndarray):
        return value
    try:
        return np.asarray(value) if hasattr(value, "__array_interface__") else None
    except Exception:  # a user object whose interface does not hold (any error): it is told by its repr
        return None


def input_fingerprint(inputs: Any) -> str:
    """A hash of the input's values: shape, dtype and bytes of every tensor and array (numpy arrays, PIL images and
    anything else numpy can read as an array), the structure of containers, and the ``repr`` of anything else.

    :data:`UNKNOWN_INPUT` when some part can only be told by a ``repr`` that names a memory address.
    """
    hasher = hashlib.sha256()
    stable = True

    def feed(value: Any) -> None:
        nonlocal stable
        if isinstance(value, torch.Tensor):
            tensor = _as_compared(value.detach())
            hasher.update(f"tensor{tuple(tensor.shape)}{tensor.dtype};".encode())
            if tensor.numel():
                # the bytes, as on the CPU, of a contiguous copy: the same values give the same hash on any device
                flat = tensor.to("cpu").contiguous().reshape(-1)
                hasher.update(flat.view(torch.uint8).numpy().tobytes())
        elif isinstance(value, Mapping):
            hasher.update(f"dict{len(value)};".encode())
            for key in sorted(value, key=str):
                hasher.update(f"{key!s};".encode())
                feed(value[key])
        elif isinstance(value, (list, tuple)):
            hasher.update(f"{type(value).__name__}{len(value)};".encode())
            for item in value:
                feed(item)
        elif (array := _as_array(value)) is not None:
            # The values, not the repr: numpy elides the middle of a large array's repr, and a PIL image's names
            # its address.
            hasher.update(f"{type(value).__name__}{array.shape}{array.dtype.str};".encode())
            if array.dtype.hasobject:
                for item in array.ravel():
                    feed(item)
            else:
                hasher.update(np.ascontiguousarray(array).data)  # no copy of an array that is contiguous already
        else:
            text = repr(value)
            stable = stable and not _ADDRESS.search(text)
            hasher.update(f"{text};".encode())

    feed(inputs)
    return hasher.hexdigest()[:FINGERPRINT_LENGTH] if stable else UNKNOWN_INPUT


_NARROW_INTEGERS = {1: torch.int8, 2: torch.int16}
_TORCH_SUMS_FROM = 1 << 16  # elements: below, a CPU tensor's sums are cheaper in numpy; above, torch uses every core


def _word_rows(tensor: torch.Tensor) -> torch.Tensor | None:
    """``tensor``'s bits as a (rows, words) integer view, one row per first-axis slice; ``None`` when empty.

    4-, 8- and 16-byte elements are 1, 2 or 4 int32 words; 1- and 2-byte elements stay int8 / int16 (the caller
    widens them to int32 in its own library).
    """
    data = _as_compared(tensor.detach())
    if data.numel() == 0:
        return None
    if data.dtype == torch.bool:
        data = data.view(torch.uint8)
    rows = data.shape[0] if data.dim() > 1 else 1
    flat = data.contiguous().reshape(rows, -1)
    return flat.view(torch.int32 if data.element_size() >= 4 else _NARROW_INTEGERS[data.element_size()])


def _tensor_sums(tensor: torch.Tensor) -> torch.Tensor:
    """Three integers that change when any bit of ``tensor`` changes (except in a compensated way)."""
    words = _word_rows(tensor)
    if words is None:
        return torch.zeros(3, dtype=torch.int64, device=tensor.device)
    bits = words.to(torch.int32)
    # Wrapping int32 sums: exact modulo 2**32, so the same whatever order a device reduces in, and as fast as a float
    # sum (an int64 accumulation of int32 values is ten times slower on CPU).
    per_row = bits.sum(dim=1, dtype=torch.int32)
    total = per_row.sum(dtype=torch.int32).to(torch.int64)
    per_row = per_row.to(torch.int64)
    per_column = bits.sum(dim=0, dtype=torch.int32).to(torch.int64)
    # weighted by position: a permutation of rows (output channels) or of columns changes these
    row_weights = torch.arange(1, per_row.numel() + 1, dtype=torch.int64, device=bits.device)
    column_weights = torch.arange(1, per_column.numel() + 1, dtype=torch.int64, device=bits.device)
    return torch.stack([total, (per_row * row_weights).sum(), (per_column * column_weights).sum()])


def _combine(per_row: np.ndarray[Any, Any], per_column: np.ndarray[Any, Any]) -> list[int]:
    """The three integers of :func:`_tensor_sums` from a tensor's wrapped int32 row and column sums (numpy)."""
    total = int(per_row.sum(dtype=np.int32))
    row_weights = np.arange(1, per_row.size + 1, dtype=np.int64)
    column_weights = np.arange(1, per_column.size + 1, dtype=np.int64)
    return [
        total,
        int((per_row.astype(np.int64) * row_weights).sum()),
        int((per_column.astype(np.int64) * column_weights).sum()),
    ]


def _word_sums(words: torch.Tensor | None) -> list[int]:
    """:func:`_tensor_sums` of a CPU tensor, from its :func:`_word_rows`: the same three integers (both wrap the same
    way), with the two passes over the data in torch (every core) for a large tensor and in numpy for a small one,
    where torch's per-call cost would dominate, and the few reduced numbers combined in numpy."""
    if words is None:
        return [0, 0, 0]
    if words.numel() >= _TORCH_SUMS_FROM:
        bits = words.to(torch.int32)
        return _combine(bits.sum(dim=1, dtype=torch.int32).numpy(), bits.sum(dim=0, dtype=torch.int32).numpy())
    array = words.numpy().astype(np.int32, copy=False)
    return _combine(array.sum(axis=1, dtype=np.int32), array.sum(axis=0, dtype=np.int32))


def _one_row_sums(rows: list[np.ndarray[Any, Any]]) -> list[list[int]]:
    """:func:`_tensor_sums` of many one-row CPU tensors (biases, norm weights, scalars) in one numpy pass.

    ``rows`` are their int32 words. With one row, the row sum is the total and the column sums are the words
    themselves, so each tensor's three integers are a segment sum and a position-weighted segment sum.
    """
    lengths = np.array([row.size for row in rows], dtype=np.int64)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    words = np.concatenate(rows).astype(np.int64)
    totals = np.add.reduceat(words, starts)  # exact: under 2**16 words of at most 2**31 per segment
    wrapped = (totals + 2**31) % 2**32 - 2**31  # the int32 sum's wrap-around
    positions = np.arange(1, words.size + 1, dtype=np.int64) - np.repeat(starts, lengths)
    weighted = np.add.reduceat(words * positions, starts)  # wraps modulo 2**64 like the per-tensor int64 sum
    return [[int(t), int(t), int(w)] for t, w in zip(wrapped, weighted, strict=True)]


def _cpu_sums(tensors: list[torch.Tensor]) -> list[list[int]]:
    """:func:`_tensor_sums` of each CPU tensor (:func:`_word_sums`); the small one-row ones are reduced together."""
    sums: list[list[int]] = []
    batch: list[tuple[int, np.ndarray[Any, Any]]] = []  # (position in ``sums``, words) of the small one-row ones
    for tensor in tensors:
        words = _word_rows(tensor)
        if (
            words is not None
            and words.shape[0] == 1
            and words.dtype == torch.int32
            and words.numel() < _TORCH_SUMS_FROM
        ):
            batch.append((len(sums), words.numpy().reshape(-1)))
            sums.append([])  # filled below
        else:
            sums.append(_word_sums(words))
    if batch:
        for (index, _), values in zip(batch, _one_row_sums([row for _, row in batch]), strict=True):
            sums[index] = values
    return sums


@dataclass
class ParameterFingerprints:
    """Fingerprints of modules' parameters and buffers; each tensor is reduced once, however many modules share it."""

    model: nn.Module
    _sums: dict[int, tuple[str, list[int]]] = field(default_factory=dict)
    _walked: dict[int, list[tuple[str, torch.Tensor]]] = field(default_factory=dict)

    def _entries(self, module: nn.Module) -> list[tuple[str, torch.Tensor]]:
        if id(module) not in self._walked:  # each module's tree is walked once per run
            self._walked[id(module)] = [*module.named_parameters(), *module.named_buffers()]
        return self._walked[id(module)]

    def _reduce(self, modules: Iterable[nn.Module]) -> None:
        todo: dict[int, tuple[str, torch.Tensor]] = {}
        for module in modules:
            for name, tensor in self._entries(module):
                if id(tensor) not in self._sums:
                    todo[id(tensor)] = (name, tensor)
        if not todo:
            return
        by_device: dict[torch.device, list[tuple[int, torch.Tensor]]] = {}
        for key, (_, tensor) in todo.items():
            by_device.setdefault(tensor.device, []).append((key, tensor))
        with torch.no_grad():
            for device, group in by_device.items():
                if device.type == "cpu":
                    values = _cpu_sums([tensor for _, tensor in group])
                else:
                    values = torch.stack([_tensor_sums(tensor) for _, tensor in group]).tolist()  # one transfer
                for (key, tensor), sums in zip(group, values, strict=True):
                    label = f"{tuple(tensor.shape)}{_dtype_label(tensor.dtype)}"
                    self._sums[key] = (label, [int(v) for v in sums])

    def of(self, module: nn.Module) -> str:
        """The fingerprint of ``module``'s parameters and buffers (its submodules' included)."""
        self._reduce([module])
        return _digest([[name, *self._sums[id(tensor)]] for name, tensor in self._entries(module)])

    def layers(self, modules: Mapping[str, nn.Module]) -> dict[str, str]:
        """The fingerprint of each named module."""
        self._reduce(modules.values())
        return {name: self.of(module) for name, module in modules.items()}


# -- provenance --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Provenance:
    """What a golden records about the run that made it; compared with the current run when a snapshot drifts."""

    environment: Environment
    input: str
    model: str
    layers: dict[str, str]

    def to_sidecar(self) -> dict[str, Any]:
        """The sidecar's ``environment`` and ``fingerprints`` entries."""
        return {
            "environment": self.environment.to_dict(),
            "fingerprints": {"input": self.input, "model": self.model, "layers": dict(self.layers)},
        }

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
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            return None


def provenance(model: nn.Module, inputs: Any, layers: Mapping[str, nn.Module]) -> Provenance:
    """The provenance of a snapshot of ``model`` on ``inputs`` whose selected layers are ``layers``."""
    prints = ParameterFingerprints(model)
    return Provenance(
        environment=current_environment(model, inputs),
        input=input_fingerprint(inputs),
        model=prints.of(model),
        layers=prints.layers(layers),
    )


def environment_sentence(golden: Environment, current: Environment) -> str | None:
    """``golden made on cpu with torch 2.14.1; running on cuda with torch 2.14.1, TF32 on``; ``None`` when the
    two environments agree on everything that can move activations."""
    if golden.describe() == current.describe():
        return None
    return f"environment differs from the golden's: golden made on {golden.describe()}; running on {current.describe()}"


def provenance_sentences(golden: Provenance | None, current: Provenance) -> list[str]:
    """What a drift message says about where the drift comes from: environment, input, weights, or neither."""
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
    if input_changed:
        lines.append(
            f"the input changed since the golden was made (input fingerprint {golden.input} -> {current.input}):"
            " the drift may come from the input (data, preprocessing, seed) rather than the model"
        )
    if golden.model != current.model:
        changed = [name for name, value in current.layers.items() if golden.layers.get(name, value) != value]
        where = (
            f"; selected layer(s) with changed weights: {', '.join(repr(n) for n in changed)}"
            if changed
            else "; the selected layers' own weights are unchanged, so the change is in other layers or buffers"
        )
        lines.append(
            f"the model's weights or buffers changed since the golden was made"
            f" (model fingerprint {golden.model} -> {current.model}){where}"
        )
    elif not input_known:
        lines.append(
            "the model's weights and buffers are unchanged since the golden was made; whether the input changed is"
            " not known, because part of it has no stable fingerprint (its repr names a memory address): the drift"
            " comes from the input, or from a code or dependency change"
            + (" (or the environment change above)" if environment else "")
        )
    elif not input_changed:
        lines.append(
            "the input and the model's weights and buffers are unchanged since the golden was made, yet activations"
            " moved: a code or dependency change"
            + (" (or the environment change above)" if environment else " (the environment is the same too)")
        )
    return lines
