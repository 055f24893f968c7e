"""A forward pass beside the snapshot's own that leaves no trace: the default choice's shape-only pass, the noise
floor's second run and ``--featviz-calibrate``'s perturbed runs.

A check runs the model once; each of these passes runs it once more. A model with state (a counter, a running
average, a cache, in-place preprocessing of its input, random noise) would otherwise compute in the snapshot, or in
the next snapshot of the same test, what its second pass computes, and a check on another machine, where the extra
pass does not run, would see its first: :func:`unobserved` runs the pass on a copy of the input's tensors, with the
random number generators (torch's, ``random``'s, numpy's and every ``torch.Generator`` a module holds) forked, and
puts back every submodule, buffer and plain attribute of every module of the model. What it cannot put back:
state outside the model's modules (a global, an object a module's attribute points to), parameters changed in
``forward``, and what the model's own forward hooks do, which run once more.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import random
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import is_lazy

from pytest_featviz.environment import input_tensors

# the parts of a module's __dict__ that _model_kept puts back as buffers and submodules, not as plain attributes
_TORCH_STATE = frozenset({"_parameters", "_buffers", "_modules", "_non_persistent_buffers_set"})


@contextlib.contextmanager
def unobserved(model: nn.Module, inputs: Any) -> Iterator[Any]:
    """Run the block as if it had not run: yields a copy of ``inputs`` (its tensors copied) to run ``model`` on, and
    afterwards puts back the random number generators and the model's state (see the module doc)."""
    tensors = itertools.chain(model.parameters(), model.buffers(), input_tensors(inputs))
    devices = sorted({t.device.index or 0 for t in tensors if t.is_cuda})
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=devices), _model_kept(model):
            yield _copied(inputs)
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


@contextlib.contextmanager
def _model_kept(model: nn.Module) -> Iterator[None]:
    """Every buffer, submodule and plain attribute of ``model``'s modules as it was before the block: a forward pass
    that counts its calls, keeps a running state or caches, would otherwise make the golden from its second pass and
    leave the model one pass ahead. Plain attributes: :func:`_attributes_kept`.

    Submodules the pass added, replaced or deleted are put back as they were, and so are buffers (``None`` ones and
    non-persistent ones included), each in place where it changed, so that buffers shared by modules or viewing one
    another stay so. A buffer the pass moved to another dtype or device (``self.to(...)`` in forward) keeps its new
    tensor, with the old values, as the parameters moved too. A lazy module's buffer, which had no value yet, keeps
    the one the pass gave it (the model needs it), and a lazy module that the pass initialized keeps the buffers and
    submodules it added (a custom ``initialize_parameters`` may register them beside its parameters).
    """
    modules = list(model.modules())
    lazy = {id(m) for m in modules if isinstance(m, LazyModuleMixin) and m.has_uninitialized_params()}
    with _attributes_kept([m for m in modules if id(m) not in lazy]), _registered_kept(modules, lazy):
        yield


@contextlib.contextmanager
def _registered_kept(modules: list[nn.Module], lazy: set[int]) -> Iterator[None]:
    """The submodules and buffers of :func:`_model_kept`."""
    saved = [
        (module, dict(module._modules), dict(module._buffers), set(module._non_persistent_buffers_set))
        for module in modules
    ]
    values = {
        id(buffer): buffer.detach().clone()
        for _, _, buffers, _ in saved
        for buffer in buffers.values()
        if buffer is not None and not is_lazy(buffer)
    }
    try:
        yield
    finally:
        unwritten: list[tuple[nn.Module, str, torch.Tensor]] = []
        for module, children, buffers, transient in saved:
            now = dict(module._buffers)
            if id(module) in lazy:  # what its initialization added stays; what it had is put back as for any module
                children = {**children, **{n: m for n, m in module._modules.items() if n not in children}}
                added = {name: buffer for name, buffer in now.items() if name not in buffers}
                transient = transient | (module._non_persistent_buffers_set & added.keys())
                buffers = {**buffers, **added}
            module._modules.clear()
            module._modules.update(children)
            module._buffers.clear()
            module._non_persistent_buffers_set.clear()
            module._non_persistent_buffers_set.update(transient)
            for name, buffer in buffers.items():
                module._buffers[name], written = _restored(buffer, now.get(name), values)
                if not written:
                    unwritten.append((module, name, values[id(buffer)]))
        for module, name, value in unwritten:  # views: in place if writing what they view fixed them, else a copy
            current = module._buffers[name]
            if current is None or not _same(current, value):
                module._buffers[name] = value


@contextlib.contextmanager
def _attributes_kept(modules: list[nn.Module]) -> Iterator[None]:
    """Every plain attribute of ``modules`` as it was before the block (``self.calls += 1``, ``self.pos = ...``,
    ``self.training``): put back where the pass rebound it, deleted where the pass added it. A list, dict or set
    gets its items back in place (a cache the pass appended to), a tensor its values (one it wrote in place), and a
    ``torch.Generator`` its state; what such an item holds in turn is not looked into. A lazy module that the pass
    initializes is left out: its initialization removes torch's hooks from it for good."""
    saved = [(module, {k: v for k, v in vars(module).items() if k not in _TORCH_STATE}) for module in modules]
    found = [value for _, attributes in saved for value in attributes.values()]
    items: dict[int, Any] = {id(v): copy.copy(v) for v in found if isinstance(v, (list, dict, set))}
    values = {
        id(v): v.detach().clone()
        for v in found
        if isinstance(v, torch.Tensor) and not isinstance(v, nn.Parameter) and not is_lazy(v)
    }
    generators = {id(v): v.get_state() for v in found if isinstance(v, torch.Generator)}
    try:
        yield
    finally:
        for module, attributes in saved:
            state = vars(module)
            for name in [n for n in state if n not in attributes and n not in _TORCH_STATE]:
                del state[name]
            for name, value in attributes.items():
                now = state.get(name)
                if id(value) in values:
                    value, written = _restored(value, now if isinstance(now, torch.Tensor) else None, values)
                    value = value if written else values[id(value)]
                elif id(value) in generators:
                    value.set_state(generators[id(value)])
                elif id(value) in items:
                    _put_back_items(value, items[id(value)])
                state[name] = value


def _put_back_items(container: list[Any] | dict[Any, Any] | set[Any], items: Any) -> None:
    """``container`` holding ``items`` (a shallow copy of it) again, in place, where the pass changed what it holds
    (compared by identity: a tensor's ``==`` is no answer)."""
    if isinstance(container, list):
        if len(container) != len(items) or any(a is not b for a, b in zip(container, items, strict=False)):
            container[:] = items
    elif isinstance(container, dict):
        if container.keys() != items.keys() or any(container[k] is not items[k] for k in items):
            container.clear()
            container.update(items)
    elif {id(item) for item in container} != {id(item) for item in items}:
        container.clear()
        container.update(items)


def _same(tensor: torch.Tensor, value: torch.Tensor) -> bool:
    """Whether ``tensor`` holds ``value`` (NaN equal to NaN); ``False`` where they cannot be compared (meta, sparse)."""
    try:
        if tensor.shape != value.shape or tensor.dtype != value.dtype:
            return False
        if tensor.is_floating_point() or tensor.is_complex():
            return bool(torch.allclose(tensor, value, rtol=0.0, atol=0.0, equal_nan=True))
        return bool(torch.equal(tensor, value))
    except (RuntimeError, NotImplementedError):
        return False


def _restored(
    buffer: torch.Tensor | None, now: torch.Tensor | None, values: dict[int, torch.Tensor]
) -> tuple[torch.Tensor | None, bool]:
    """The tensor to put back as a buffer that was ``buffer`` and is ``now`` (see :func:`_model_kept`), written
    back where it changed, and ``False`` where that write failed (a view that cannot be written, a meta or sparse
    tensor)."""
    if buffer is None:
        return None, True
    if id(buffer) not in values:  # lazy: the model keeps what the pass gave it
        return (buffer if now is None else now), True
    value = values[id(buffer)]
    target = buffer
    if now is not None and now.device.type != "meta" and (now.dtype, now.device) != (buffer.dtype, buffer.device):
        target = now  # the model moved to another dtype or device in forward: its parameters did too
    if target is buffer and _same(buffer, value):
        return buffer, True  # unchanged (and perhaps not writable: an expanded view)
    try:
        # made under inference_mode (a model built in such a fixture), it takes writes only there
        with torch.inference_mode() if target.is_inference() else torch.no_grad():
            if target.shape != value.shape:
                target.resize_(value.shape)
            target.copy_(value)
    except (RuntimeError, NotImplementedError):
        return target, False
    return target, True


def _copied(value: Any) -> Any:
    """``value`` with each tensor in its dicts, lists, tuples and dataclass instances replaced by a copy (for a pass
    that may write it)."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        try:
            twin = copy.copy(value)
            for field in dataclasses.fields(value):
                object.__setattr__(twin, field.name, _copied(getattr(value, field.name)))  # a frozen one too
        except Exception:  # noqa: BLE001 - any: a dataclass that refuses to be copied is run on as it is
            return value
        return twin
    if isinstance(value, Mapping):
        return {key: _copied(item) for key, item in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(_copied(item) for item in value))
    if isinstance(value, (list, tuple)):
        return type(value)(_copied(item) for item in value)
    return value
