"""Fingerprints: what a golden's sidecar records of the input and the weights that made it (one role of
:mod:`pytest_featviz.environment`'s provenance).

Parameter fingerprints must cost a fraction of a forward pass and be the same on every device, so they are not
hashes of the bytes: each tensor's bits are read as int32 words and reduced with wrapping integer sums (the sum of
the words, and the per-row and per-column sums weighted by position, which catch permuted output channels and
permuted weights within a row). Wrapping integer addition is exact and associative, so CPU and CUDA give the same
numbers whatever the reduction order; only the few reduced numbers are hashed, with (scheme 2) eight of the words
themselves. They can miss a change that preserves all of these: the fingerprints explain a verdict, they never make
it.

A sidecar records the scheme its fingerprints were made by (``fingerprints.scheme``; 1 where absent), and a drift is
explained by fingerprints of the current weights made by the same scheme, so that goldens written before scheme 2
keep their meaning. Scheme 1 is the three sums alone. Scaling a tensor by a power of two adds the same number to
every word (``k * 2**23``), as a sign flip does (``2**31``), and that cancels in wrapping int32 sums whose lengths are
multiples of 512 (``Conv2d(512, 512, 3)`` doubled), or of 2 for a sign flip: scheme 1 called such a tensor
unchanged. Scheme 2 adds :data:`SAMPLED_WORDS` words spread from the first to the last (about a tenth more time than
the sums alone: docs/performance.md).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parameter import is_lazy

FINGERPRINT_LENGTH = 16  # hex digits kept of a sha256: enough to tell versions apart, short in a sidecar
WEIGHT_SCHEME = 2  # the scheme this version writes (see the module doc)
SCHEMES = (1, 2)  # the schemes it can compute, to explain a drift against a golden written by an older version
SAMPLED_WORDS = 8  # words of each tensor hashed as they are by scheme 2
_SUMS = 3  # the integers of scheme 1: the total, and the position-weighted row and column sums


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
# (``<Cfg object at 0x7f...>``), which differs on every run, or one that leaves values out (``...``: torch and numpy
# shorten a large array's): no comparison can say whether the input changed.
UNKNOWN_INPUT = "unknown"
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+>")  # the end of a default repr: <...Config object at 0x7f...>
# Where torch and numpy leave values out of a large array's repr: "[0., 0.,  ..., 0.]", "[1, ..., 9]", and a row
# "        ...," of a matrix; not an ellipsis in text ("a photo of a cat...", "/data/.../x.png").
_ELIDED = re.compile(r"[,\[]\s*\.\.\.,")


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
    anything else numpy can read as an array), the structure of containers and dataclass instances, and the ``repr``
    of anything else.

    :data:`UNKNOWN_INPUT` when some part can only be told by a ``repr`` that names a memory address or leaves values
    out (``...``).
    """
    hasher = hashlib.sha256()
    stable = True
    within: set[int] = set()  # the containers being fed: one met again within itself is a cycle, fed as a mark

    def feed(value: Any) -> None:
        if isinstance(value, (Mapping, list, tuple)) or (
            dataclasses.is_dataclass(value) and not isinstance(value, type)
        ):
            if id(value) in within:
                hasher.update(b"cycle;")
                return
            within.add(id(value))
            try:
                feed_value(value)
            finally:
                within.discard(id(value))
        else:
            feed_value(value)

    def feed_value(value: Any) -> None:
        nonlocal stable
        if isinstance(value, torch.Tensor):
            tensor = value.detach()
            if tensor.is_quantized:
                tensor = tensor.dequantize()
            if tensor.is_nested:  # a ragged batch: its pieces
                hasher.update(b"nested;")
                feed(list(tensor.unbind()))
                return
            if tensor.layout != torch.strided:  # sparse (a graph's adjacency): its indices and values, never dense
                coalesced = tensor.to_sparse().coalesce()
                hasher.update(f"sparse{tuple(tensor.shape)};".encode())
                feed([coalesced.indices(), coalesced.values()])
                return
            tensor = _as_compared(tensor)
            hasher.update(f"tensor{tuple(tensor.shape)}{tensor.dtype};".encode())
            if tensor.numel():
                # the bytes, as on the CPU, of a contiguous copy: the same values give the same hash on any device
                flat = _dense(tensor.to("cpu").contiguous().reshape(-1))
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
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):  # a batch object: its fields' values
            fields = dataclasses.fields(value)
            hasher.update(f"{type(value).__qualname__}{len(fields)};".encode())
            for field in fields:
                hasher.update(f"{field.name};".encode())
                feed(getattr(value, field.name, None))
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
            # an address changes from run to run; ", ...," is where torch or numpy left the middle of an array out
            elided = not isinstance(value, (str, bytes)) and _ELIDED.search(text)  # text is what it says
            stable = stable and not _ADDRESS.search(text) and not elided
            hasher.update(f"{text};".encode())

    feed(inputs)
    return hasher.hexdigest()[:FINGERPRINT_LENGTH] if stable else UNKNOWN_INPUT


def _dense(tensor: torch.Tensor) -> torch.Tensor:
    """A contiguous ``tensor`` whose last stride is 1, as viewing it as another dtype needs: torch calls a tensor
    whose odd strides belong to dimensions of size 1 contiguous (``t[::50][:1]``, ``arange(5)[None].T``), and
    ``.contiguous()`` returned it as it was; viewing it as bytes or int32 words then raised. A lazy conjugate or
    negation (``z.conj()``) is made real first: torch refuses to view one as another dtype."""
    if tensor.is_conj():
        tensor = tensor.resolve_conj()
    if tensor.is_neg():
        tensor = tensor.resolve_neg()
    if tensor.dim() == 0 or tensor.stride(-1) == 1:
        return tensor
    return tensor.clone(memory_format=torch.contiguous_format)


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
    flat = _dense(data.contiguous().reshape(rows, -1))
    return flat.view(torch.int32 if data.element_size() >= 4 else _NARROW_INTEGERS[data.element_size()])


@functools.lru_cache(maxsize=1024)  # a model's tensors come in few sizes
def _sampled(count: int) -> np.ndarray[Any, np.dtype[np.int64]]:
    """The positions of the :data:`SAMPLED_WORDS` words scheme 2 reads of ``count`` words: spread evenly from the
    first to the last (repeated where there are fewer)."""
    return np.arange(SAMPLED_WORDS, dtype=np.int64) * (count - 1) // (SAMPLED_WORDS - 1)


def _tensor_sums(tensor: torch.Tensor) -> torch.Tensor:
    """The integers of ``tensor``: three sums that change when any bit of ``tensor`` changes (except in a
    compensated way), then :data:`SAMPLED_WORDS` of its words."""
    words = _word_rows(tensor)
    if words is None:
        return torch.zeros(_SUMS + SAMPLED_WORDS, dtype=torch.int64, device=tensor.device)
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
    flat = bits.reshape(-1)
    positions = torch.from_numpy(_sampled(flat.numel())).to(bits.device)
    sums = torch.stack([total, (per_row * row_weights).sum(), (per_column * column_weights).sum()])
    return torch.cat([sums, flat[positions].to(torch.int64)])


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
    """:func:`_tensor_sums` of a CPU tensor, from its :func:`_word_rows`: the same integers (both wrap the same
    way), with the two passes over the data in torch (every core) for a large tensor and in numpy for a small one,
    where torch's per-call cost would dominate, and the few reduced numbers combined in numpy."""
    if words is None:
        return [0] * (_SUMS + SAMPLED_WORDS)
    sampled: list[int] = words.numpy().reshape(-1)[_sampled(words.numel())].tolist()
    if words.numel() >= _TORCH_SUMS_FROM:
        bits = words.to(torch.int32)
        sums = _combine(bits.sum(dim=1, dtype=torch.int32).numpy(), bits.sum(dim=0, dtype=torch.int32).numpy())
        return sums + sampled
    array = words.numpy().astype(np.int32, copy=False)
    return _combine(array.sum(axis=1, dtype=np.int32), array.sum(axis=0, dtype=np.int32)) + sampled


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
    return [
        [int(t), int(t), int(w), *row[_sampled(row.size)].tolist()]
        for t, w, row in zip(wrapped, weighted, rows, strict=True)
    ]


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


def _packed(module: nn.Module) -> Iterable[tuple[str, torch.Tensor]]:
    """The weights of quantized modules in ``module`` (``torch.ao.nn.quantized``), which keep them packed, neither
    parameters nor buffers: the tensors of their state dict, quantized ones as the real values they stand for.
    Without them a quantized model's fingerprints never changed, and a drift message blamed code for new weights."""
    for prefix, sub in module.named_modules():
        packed = getattr(sub, "_packed_params", None)
        if packed is None or isinstance(packed, nn.Module):  # none, or the module that holds the packed ones
            continue
        for key, value in sub.state_dict().items():
            for position, tensor in enumerate(value if isinstance(value, (tuple, list)) else (value,)):
                if isinstance(tensor, torch.Tensor):
                    name = f"{prefix}.{key}.{position}" if prefix else f"{key}.{position}"
                    yield name, tensor.dequantize() if tensor.is_quantized else tensor


@dataclass
class ParameterFingerprints:
    """Fingerprints of modules' parameters and buffers, made by ``scheme`` (one of :data:`SCHEMES`); each tensor is
    reduced once, however many modules share it."""

    model: nn.Module
    scheme: int = WEIGHT_SCHEME
    _sums: dict[int, tuple[str, list[int]]] = field(default_factory=dict)
    _walked: dict[int, list[tuple[str, torch.Tensor]]] = field(default_factory=dict)
    _quantized: bool | None = None  # whether the model holds packed weights (looked for once)

    def _entries(self, module: nn.Module) -> list[tuple[str, torch.Tensor]]:
        if self._quantized is None:
            self._quantized = any(hasattr(sub, "_packed_params") for sub in self.model.modules())
        if id(module) not in self._walked:  # each module's tree is walked once per run
            packed = _packed(module) if self._quantized else ()
            self._walked[id(module)] = [*module.named_parameters(), *module.named_buffers(), *packed]
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
            if is_lazy(tensor):  # of a lazy module that never ran: no shape and no values yet
                self._sums[key] = ("uninitialized", [])
                continue
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

    def by_scheme(self, scheme: int) -> ParameterFingerprints:
        """These fingerprints made by ``scheme``, sharing what is reduced: both schemes hash the integers of one
        reduction, so a tensor reduced for one is not reduced again for the other."""
        return dataclasses.replace(self, scheme=scheme)

    def _integers(self, tensor: torch.Tensor) -> list[Any]:
        """The label and integers of ``tensor`` that its scheme hashes."""
        label, values = self._sums[id(tensor)]
        return [label, values[:_SUMS] if self.scheme == 1 else values]

    def of(self, module: nn.Module) -> str:
        """The fingerprint of ``module``'s parameters and buffers (its submodules' included)."""
        self._reduce([module])
        return _digest([[name, *self._integers(tensor)] for name, tensor in self._entries(module)])

    def values_of(self, module: nn.Module) -> str:
        """The fingerprint of ``module``'s parameters and buffers without their names, in their order: the same
        for a model whose modules were renamed or wrapped (``DataParallel``, ``nn.Sequential(model)``) and whose
        weights were not, where :meth:`of` differs."""
        self._reduce([module])
        return _digest([self._integers(tensor) for _, tensor in self._entries(module)])

    def layers(self, modules: Mapping[str, nn.Module]) -> dict[str, str]:
        """The fingerprint of each named module."""
        self._reduce(modules.values())
        return {name: self.of(module) for name, module in modules.items()}
