"""A forward pass beside the snapshot's own that leaves no trace: the default choice's shape-only pass, the noise
floor's second run and ``--featviz-calibrate``'s perturbed runs.

A check runs the model once; each of these passes runs it once more. A model with state (a counter, a running
average, a cache, in-place preprocessing of its input, random noise) would otherwise compute in the snapshot, or in
the next snapshot of the same test, what its second pass computes, and a check on another machine, where the extra
pass does not run, would see its first: :func:`unobserved` runs the pass on a copy of the input's tensors, with the
random number generators (torch's, ``random``'s, numpy's and each one a module holds) forked, and puts back every
submodule, buffer and plain attribute of every module of the model. What it does not put back: state outside the
model's modules (a global, an object a module's attribute points to), the values of a large tensor attribute written
in place (see ``_KEPT_TENSOR_BYTES``), parameters changed in ``forward``, what a pass that registers hooks did
(:func:`_attributes_kept`), and what the model's own forward hooks do, which run once more.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import random
from collections import UserDict, deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import is_lazy

from pytest_featviz.environment import input_tensors

# What nn.Module.__init__ puts in every module's __dict__: its parameters, buffers and submodules, which
# _registered_kept puts back, and torch's hooks, which stay as the pass left them (a forward that registers a hook
# once, guarded by a flag kept elsewhere, would lose it for good); of these, ``training`` is the module's own state.
_TORCH_STATE = frozenset(vars(nn.Module())) - {"training"}
# A plain tensor attribute up to this size gets its values back where the pass wrote it in place; a larger one (an
# anchor table, a mask) only its place, since keeping a copy of it would double the memory the model holds there.
_KEPT_TENSOR_BYTES = 16 * 2**20
# torch's hook dicts of a module: a pass that adds to one keeps its effects on the attributes (_attributes_kept)
_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


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
    ``self.training``): put back where the pass rebound it, deleted where the pass added it. A list, dict, set or
    deque gets its items back in place (a cache the pass appended to), a plain tensor of up to
    ``_KEPT_TENSOR_BYTES`` its values (one the pass wrote in place), and a random number generator (torch's,
    ``random.Random``, numpy's) its state; what such an item holds in turn is not looked into. A lazy module that
    the pass initializes is left out: its initialization removes torch's hooks from it for good.

    A pass that registers a hook on a module (a model that instruments itself on its first call, guarded by a flag
    of its own or kept elsewhere) keeps what it did to the attributes, as it keeps its hooks: put back without them,
    the flag would have the next pass register them twice, and taken away with them, a flag kept elsewhere would
    have no pass register them again."""
    saved = [(module, {k: v for k, v in vars(module).items() if k not in _TORCH_STATE}) for module in modules]
    found = {id(value): value for _, attributes in saved for value in attributes.values()}.values()
    items = {id(v): held for v in found if (held := _items(v)) is not None}
    values = {id(v): v.detach().clone() for v in found if _values_kept(v)}
    generators = {id(v): put_back for v in found if (put_back := _generator_state(v)) is not None}
    hooks = [_hook_ids(module) for module in modules]
    try:
        yield
    finally:
        if all(_hook_ids(module) <= before for module, before in zip(modules, hooks, strict=True)):
            for module, attributes in saved:
                state = vars(module)
                for name in [n for n in state if n not in attributes and n not in _TORCH_STATE]:
                    del state[name]
                for name, value in attributes.items():
                    if id(value) in values:
                        value = _put_back_values(value, values[id(value)])
                    elif id(value) in items:
                        _put_back_items(value, items[id(value)])
                    state[name] = value
            for put_back in generators.values():
                put_back()


def _hook_ids(module: nn.Module) -> set[tuple[str, int]]:
    """The forward and backward hooks registered on ``module``, by kind and id."""
    return {(kind, key) for kind in _HOOKS for key in getattr(module, kind, {})}


def _items(value: Any) -> list[Any] | dict[Any, Any] | set[Any] | None:
    """What a list, dict, set or deque attribute holds now, to put back (:func:`_put_back_items`); ``None`` for
    anything else, or one that will not say (a subclass whose iteration fails)."""
    try:
        if isinstance(value, dict):
            return dict(value)
        if isinstance(value, set):
            return set(value)
        if isinstance(value, (list, deque)):
            return list(value)
    except Exception:  # noqa: BLE001 - any: a user's container class; its items are then not put back
        return None
    return None


def _put_back_values(tensor: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``tensor``, a plain tensor attribute, holding ``value`` (its copy from before the pass) again: written in place
    where the pass wrote it, or the copy itself where it takes no write. Unlike a buffer, whose new tensor of another
    dtype or device follows the parameters, it never writes into a tensor the pass put in its place (a buffer the
    attribute was pointed at)."""
    if _same(tensor, value):
        return tensor
    try:
        _write(tensor, value)
    except Exception:  # noqa: BLE001 - any: a view that cannot be written; the copy takes its place
        return value
    return tensor


def _values_kept(value: Any) -> bool:
    """Whether ``value`` is a plain tensor whose values :func:`_attributes_kept` keeps a copy of: a dense torch.Tensor
    (not a subclass, which compares and copies by its own rules; not a parameter) of real memory, up to
    ``_KEPT_TENSOR_BYTES``; an expanded view, which cannot be written in place, is left out whatever its size."""
    if type(value) is not torch.Tensor or value.layout != torch.strided or value.is_nested or value.is_meta:
        return False
    expanded = any(stride == 0 and size > 1 for stride, size in zip(value.stride(), value.shape, strict=True))
    return not expanded and value.numel() * value.element_size() <= _KEPT_TENSOR_BYTES


def _generator_state(value: Any) -> Callable[[], object] | None:
    """What puts a random number generator held as an attribute back to its state now; ``None`` for anything else."""
    if isinstance(value, torch.Generator):
        torch_state = value.get_state()
        return lambda: value.set_state(torch_state)
    if isinstance(value, random.Random):
        python_state = value.getstate()
        return lambda: value.setstate(python_state)
    if isinstance(value, np.random.Generator):
        numpy_state = value.bit_generator.state
        return lambda: setattr(value.bit_generator, "state", numpy_state)
    if isinstance(value, np.random.RandomState):
        legacy_state = value.get_state()
        return lambda: value.set_state(legacy_state)
    return None


def _put_back_items(container: Any, items: Any) -> None:
    """``container`` (a list, dict, set or deque) holding ``items`` (:func:`_items`) again, in place, where the pass
    changed what it holds (compared by identity: a tensor's ``==`` is no answer)."""
    if isinstance(container, dict):
        if container.keys() != items.keys() or any(container[k] is not items[k] for k in items):
            container.clear()
            container.update(items)
    elif isinstance(container, set):
        if {id(item) for item in container} != {id(item) for item in items}:
            container.clear()
            container.update(items)
    elif len(container) != len(items) or any(a is not b for a, b in zip(container, items, strict=False)):
        container.clear()  # a list or a deque
        container.extend(items)


def _same(tensor: torch.Tensor, value: torch.Tensor) -> bool:
    """Whether ``tensor`` holds ``value`` (NaN equal to NaN); ``False`` where they cannot be compared (meta, sparse)."""
    try:
        if tensor.shape != value.shape or tensor.dtype != value.dtype:
            return False
        if tensor.is_floating_point() or tensor.is_complex():
            return bool(torch.allclose(tensor, value, rtol=0.0, atol=0.0, equal_nan=True))
        return bool(torch.equal(tensor, value))
    except Exception:  # noqa: BLE001 - any: a tensor subclass may refuse the comparison with any error
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
        _write(target, value)
    except (RuntimeError, NotImplementedError):
        return target, False
    return target, True


def _write(target: torch.Tensor, value: torch.Tensor) -> None:
    """``value`` written into ``target`` in place, resized to its shape where the pass resized it. A tensor made under
    inference mode (a model built in such a fixture) takes writes only there."""
    with torch.inference_mode() if target.is_inference() else torch.no_grad():
        if target.shape != value.shape:
            target.resize_(value.shape)
        target.copy_(value)


def _copied(value: Any, memo: dict[int, Any] | None = None) -> Any:
    """``value`` with each tensor in its dicts, lists, tuples and dataclass instances replaced by a copy (for a pass
    that may write it); what it holds twice, or within itself (a tree's parent link), it holds so in the copy."""
    memo = {} if memo is None else memo
    if id(value) in memo:
        return memo[id(value)]
    if isinstance(value, torch.Tensor):
        memo[id(value)] = tensor = value.detach().clone()
        return tensor
    if isinstance(value, Mapping):  # before dataclasses: a Hugging Face ModelOutput is both, read as its items
        return _copied_mapping(value, memo)
    if isinstance(value, list):
        try:  # of its own class (a list subclass), where it takes its items back
            memo[id(value)] = listed = copy.copy(value)
            listed[:] = [_copied(item, memo) for item in value]
        except Exception:  # noqa: BLE001 - any: a list class that refuses; a plain list holds the same items
            memo[id(value)] = listed = []
            listed.extend(_copied(item, memo) for item in value)
        return listed
    if isinstance(value, tuple):
        parts = [_copied(item, memo) for item in value]
        memo[id(value)] = made = type(value)(*parts) if hasattr(value, "_fields") else type(value)(parts)
        return made
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        try:
            memo[id(value)] = twin = copy.copy(value)
            _copy_fields(value, twin, memo)
        except Exception:  # noqa: BLE001 - any: a dataclass that refuses to be copied is run on as it is
            memo[id(value)] = value
            return value
        return twin
    return value


def _copied_mapping(value: Mapping[Any, Any], memo: dict[int, Any]) -> Any:
    """A copy of ``value`` for :func:`_copied`: of its own class where a shallow copy of it holds items of its own (a
    dict subclass, such as a ``ModelOutput`` or an ``OrderedDict``, and a ``UserDict``, such as a ``BatchEncoding``:
    ``out.hidden`` keeps working), its dataclass fields copied too; else a plain dict of the same items (another
    mapping class's copy may share its storage with the test's input)."""
    try:
        if not isinstance(value, (dict, UserDict)):
            raise TypeError(type(value))
        memo[id(value)] = twin = copy.copy(value)
        for key, item in value.items():
            twin[key] = _copied(item, memo)
        if dataclasses.is_dataclass(value):  # its fields may be held apart from its items
            _copy_fields(value, twin, memo)
    except Exception:  # noqa: BLE001 - any: a read-only mapping, or a class that refuses to be copied
        plain: dict[Any, Any] = {}
        memo[id(value)] = plain
        plain.update((key, _copied(item, memo)) for key, item in value.items())
        return plain
    return twin


def _copy_fields(value: Any, twin: Any, memo: dict[int, Any]) -> None:
    """``twin``'s dataclass fields set to copies of ``value``'s (:func:`_copied`), a frozen dataclass's too; an
    ``init=False`` field that was never set stays unset."""
    for field in dataclasses.fields(value):
        if hasattr(value, field.name):
            object.__setattr__(twin, field.name, _copied(getattr(value, field.name), memo))
