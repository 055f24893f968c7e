"""Layer selection: dotted names, globs, module classes, call indices, wrapper prefixes and the default choice.

Names are those of ``model.named_modules()``. The prefixes that wrappers add (``_orig_mod.`` from
``torch.compile``, ``module.`` from ``DataParallel`` / ``DistributedDataParallel``) are optional: ``layer1`` and
``module.layer1`` select the same module, and goldens record the name without the prefix.

The default choice (``layers=None``) runs one shape-only forward pass and takes the *output of each stage*: for
every spatial resolution that a 4-D feature map takes in the network, the shallowest module producing it, the last
one in forward order. For a ResNet that is ``relu, layer1, layer2, layer3, layer4``; for a VGG the last ReLU
before each pooling. Maps of 1 x 1 are skipped when larger ones exist, and at most eight stages are taken, spread
evenly over the depth. Without any 4-D output, the direct children of the model that return a tensor are taken.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from fnmatch import fnmatchcase
from typing import Union

from torch import nn

from pytest_featviz.capture import LayerTrace, Target
from pytest_featviz.records import FeatvizError

LayerSpec = Union[None, str, type, Sequence[Union[str, type]]]  # noqa: UP007 (a runtime alias on 3.10)
WRAPPER_PREFIXES = ("_orig_mod.", "module.")
MAX_DEFAULT_LAYERS = 8
_CALL_SUFFIX = re.compile(r"^(?P<name>.+)@(?P<call>\d+)$")


def canonical_name(name: str) -> str:
    """``name`` without the prefixes that ``torch.compile`` and ``DataParallel`` add."""
    stripped = True
    while stripped:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name, stripped = name[len(prefix) :], True
    return name


def module_index(model: nn.Module) -> dict[str, nn.Module]:
    """Every selectable module by its canonical name, in ``named_modules`` order (the root is not selectable)."""
    index: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        canonical = canonical_name(name)
        if canonical and canonical not in WRAPPER_PREFIXES and canonical + "." not in WRAPPER_PREFIXES:
            index.setdefault(canonical, module)
    return index


def _closest(name: str, names: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    if not close:
        close = [n for n in names if "." not in n][:8]
    return ", ".join(repr(n) for n in close)


def resolve_layers(model: nn.Module, spec: LayerSpec) -> list[Target]:
    """The targets selected by ``spec``; an unknown name or a pattern that matches nothing is an error."""
    if spec is None:
        raise ValueError("resolve_layers needs a selection; use default_layers for layers=None")
    index = module_index(model)
    names = list(index)
    items: list[str | type] = [spec] if isinstance(spec, (str, type)) else list(spec)
    if not items:
        raise FeatvizError("layers is an empty list: select at least one layer, or pass layers=None for the default")
    targets: dict[tuple[str, int | None], Target] = {}
    for item in items:
        if isinstance(item, type):
            matched = [n for n, m in index.items() if isinstance(m, item)]
            if not matched:
                raise FeatvizError(f"no layer of type {item.__name__} in {type(model).__name__}")
            for name in matched:
                targets.setdefault((name, None), Target(name, index[name]))
            continue
        if not isinstance(item, str):
            raise FeatvizError(f"layers must hold names, glob patterns or module classes; got {item!r}")
        call: int | None = None
        text = canonical_name(item)
        suffix = _CALL_SUFFIX.match(text)
        if suffix:
            text, call = suffix["name"], int(suffix["call"])
        if any(ch in text for ch in "*?["):
            matched = [n for n in names if fnmatchcase(n, text)]
            if not matched:
                raise FeatvizError(f"layer pattern {item!r} matches no layer; closest names: {_closest(text, names)}")
        elif text in index:
            matched = [text]
        else:
            raise FeatvizError(
                f"unknown layer {item!r} in {type(model).__name__}; closest names: {_closest(text, names)}"
                " (list them all with `featviz layers` or model.named_modules())"
            )
        for name in matched:
            targets.setdefault((name, call), Target(name, index[name], call))
    return list(targets.values())


def default_layers(traces: Sequence[LayerTrace]) -> list[str]:
    """The default choice (see the module doc) from a shape trace; names are canonical, with ``@k`` call suffixes."""

    def depth(item: LayerTrace) -> int:
        return canonical_name(item.name).count(".") + 1

    traces = [t for t in traces if canonical_name(t.name).split("@")[0] + "." not in WRAPPER_PREFIXES]
    maps = [t for t in traces if t.shape is not None and len(t.shape) == 4]
    if not maps:
        return [canonical_name(t.name) for t in traces if depth(t) == 1 and t.shape is not None]
    if any(t.shape is not None and t.shape[2:] != (1, 1) for t in maps):
        maps = [t for t in maps if t.shape is not None and t.shape[2:] != (1, 1)]
    best: dict[tuple[int, ...], LayerTrace] = {}
    for item in maps:
        assert item.shape is not None
        key = item.shape[2:]
        held = best.get(key)
        if held is None or depth(item) <= depth(held):
            best[key] = item
    order = {id(t): i for i, t in enumerate(traces)}
    chosen = sorted(best.values(), key=lambda t: order[id(t)])
    if len(chosen) > MAX_DEFAULT_LAYERS:
        step = (len(chosen) - 1) / (MAX_DEFAULT_LAYERS - 1)
        chosen = [chosen[round(i * step)] for i in range(MAX_DEFAULT_LAYERS)]
    return [canonical_name(t.name) for t in chosen]
