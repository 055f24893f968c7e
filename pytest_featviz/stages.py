"""The default choice (``layers=None``): one shape-only forward pass, and the output of each stage.

The default choice runs one shape-only forward pass (:func:`pytest_featviz.capture.trace`) and takes the *output of each
stage*: for every spatial grid that an output takes in the network (H x W of an NCHW or NHWC map or of patch tokens, T x
H x W of a video), the shallowest module producing it, the last one in forward order that does more than pass its input
on (a dropout or identity after a stage's block is passed over for the block). For a ResNet that is ``relu, layer1,
layer2, layer3, layer4``; for a VGG the last ReLU before each pooling; for a Swin its stages. A grid that comes back
after smaller ones (a U-Net's decoder) starts a new set of stages, so an encoder and its decoder are both chosen
(``enc1, enc2, enc3, bottleneck, dec3, dec2, head``). Of a module that runs several times (RAFT's update block) only the
last call counts; when the module chosen for it ran two or three times with one output shape and not in a loop (the
shared encoder of a Siamese or triplet network, run once per input; a loop's call takes the previous call's output),
every call is taken, so that each input's branch is compared. Grids of 1 x 1 are skipped when larger ones exist. When
that gives fewer than four layers (isotropic networks such as ViT, dilated segmentation backbones, RAFT), it adds four
evenly spaced blocks of the network's longest run of siblings with a spatial output (``encoder.layers.encoder_layer_0,
_4, _7, _11`` for ViT-B/16): siblings of one class, the run that holds the most modules (twelve transformer layers
before the dropouts inside one), then the shallower parent. At most eight layers are taken, spread evenly over the
forward order. Without any spatial output (a text or sequence model, an MLP): when such a run is one of blocks (modules
with submodules), four of its blocks and the module that ran last at the top (a GPT's ``h.0, h.4, h.7, h.11, lm_head``);
else the shallowest modules that ran (the direct children of the model, unless only deeper ones ran), topped up by the
run when they are fewer than four. The names chosen are canonical (:mod:`pytest_featviz.layers`), and an output's grid
is the one its layout (:mod:`pytest_featviz.layout`) gives. The modules of a parametrization (``weight_norm``,
``spectral_norm``: ``conv.parametrizations.weight``) run whenever their weight is read and return that weight, no
feature map: they are never chosen.

The shape-only pass leaves no trace (:func:`pytest_featviz.sidepass.unobserved`), so a forward pass that normalizes
its input in place, draws random numbers or counts its calls computes in the capture what it computes in a check,
which runs no such pass.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from torch import nn
from torch.nn.utils.parametrize import ParametrizationList, type_before_parametrizations

from pytest_featviz.capture import LayerTrace, split_call, trace
from pytest_featviz.layers import (
    canonical_name,
    is_wrapper_name,
    module_hints,
    module_index,
    refuse_layerless,
    refuse_unhookable,
)
from pytest_featviz.layout import PASS_THROUGH, Hints, InputFacts, LayoutError, input_facts, plan
from pytest_featviz.outcomes import raised_outside
from pytest_featviz.sidepass import unobserved

MAX_DEFAULT_LAYERS = 8
MAX_SHARED_CALLS = 3  # a chosen module that ran 2 or 3 times with one output shape is taken at every call
MIN_DEFAULT_LAYERS = 4
STAGE_DEPTH_WINDOW = 2


def default_selection(model: nn.Module, inputs: Any) -> list[str]:
    """The default choice for ``model`` on ``inputs`` (one shape-only forward pass; see the module doc)."""
    __tracebackhide__ = raised_outside
    refuse_unhookable(model)
    refuse_layerless(model)
    with unobserved(model, inputs) as copied:  # as if this pass had not run
        traces = trace(model, copied)
    return default_layers(traces, model, facts=input_facts(inputs))


def spatial_grid(
    shape: tuple[int, ...] | None,
    module_hints: Hints | None = None,
    *,
    facts: InputFacts = InputFacts(),  # noqa: B008 (frozen)
) -> tuple[int, ...] | None:
    """The spatial grid of an output for the default choice: H x W, T x H x W, or ``None`` when not spatial."""
    if shape is None:
        return None
    try:
        return plan(shape, module_hints, facts=facts).grid
    except LayoutError:
        return None


def default_layers(
    traces: Sequence[LayerTrace],
    model: nn.Module | None = None,
    *,
    facts: InputFacts = InputFacts(),  # noqa: B008 (frozen)
) -> list[str]:
    """The default choice (see the module doc) from a shape trace; names are canonical, with ``@k`` call suffixes.

    ``model`` gives the module types that tell NHWC maps and tokens apart; without it every 4-D output is NCHW.
    ``facts``: what the model's input tells (:func:`layout.input_facts`): without an image, tokens have no grid.
    """
    index = module_index(model) if model is not None else {}
    found: dict[str, Hints] = {}
    known: dict[int, Hints | None] = {}

    def module_name(item: LayerTrace) -> str:
        return canonical_name(item.name).split("@")[0]

    def grid(item: LayerTrace) -> tuple[int, ...] | None:
        name = module_name(item)
        if name not in found:
            found[name] = module_hints(model, index, name, known) if model is not None else Hints()
        return spatial_grid(item.shape, found[name], facts=facts)

    def depth(item: LayerTrace) -> int:
        return module_name(item).count(".") + 1

    def passes_on(item: LayerTrace) -> bool:
        """Whether the module returns its input in eval mode: its output is the previous module's, under a name
        that is gone once the dropout is removed."""
        return isinstance(index.get(module_name(item)), PASS_THROUGH)

    weights = _weight_modules(index.values())
    traces = [t for t in traces if not is_wrapper_name(name := module_name(t)) and id(index.get(name)) not in weights]
    shapes: dict[str, list[tuple[int, ...] | None]] = {}
    chained: set[str] = set()  # modules run in a loop: a call took the previous call's output
    for item in traces:
        shapes.setdefault(module_name(item), []).append(item.shape)
        if item.follows:
            chained.add(module_name(item))
    shapes = {name: ran for name, ran in shapes.items() if name not in chained}
    # Of a module that runs several times only the last call is eligible, and is taken alone (``block@11``) or, by
    # :func:`_every_call`, with its other calls (``block``).
    last_call = {module_name(t): t for t in traces}
    traces = [t for t in traces if last_call[module_name(t)] is t]
    order = {id(t): i for i, t in enumerate(traces)}
    spatial = [(t, g) for t in traces if (g := grid(t)) is not None]
    if not spatial:
        ran = [t for t in traces if t.shape is not None]
        if not ran:
            return []
        top = [t for t in ran if depth(t) == min(depth(t) for t in ran)]
        blocks, are_blocks = _blocks(ran, index)
        if are_blocks:  # a transformer or RNN stack: its blocks, and the module that ran last at the top (the head)
            picked = {id(t): t for t in [*blocks, top[-1]]}
        else:
            picked = {id(t): t for t in top}
            if len(picked) < MIN_DEFAULT_LAYERS:
                picked.update((id(t), t) for t in blocks if id(t) not in picked)
        return _every_call(
            _spread([canonical_name(t.name) for t in sorted(picked.values(), key=lambda t: order[id(t)])]), shapes
        )
    # Deep inside a block, reshapes (window partitions, attention heads) make grids that are no stage of the network.
    shallowest = min(depth(t) for t, _ in spatial)
    spatial = [(t, g) for t, g in spatial if depth(t) <= shallowest + STAGE_DEPTH_WINDOW]
    if any(any(side != 1 for side in g) for _, g in spatial):
        spatial = [(t, g) for t, g in spatial if any(side != 1 for side in g)]
    best: dict[tuple[tuple[int, ...], int], LayerTrace] = {}
    grids = {module_name(t): g for t, g in spatial}  # of every module with a spatial output, for _phases
    staged = [(module_name(t), g) for t, g in spatial]
    for (item, grid_of_item), phase in zip(spatial, _phases(staged, grids), strict=True):
        key = (grid_of_item, phase)
        held = best.get(key)
        if (
            held is None
            or depth(item) < depth(held)
            # of equal depth the last one, unless it only passes its input on (a dropout after the stage's block)
            or (depth(item) == depth(held) and (passes_on(held) or not passes_on(item)))
        ):
            best[key] = item
    chosen = {id(t): t for t in best.values()}
    if len(chosen) < MIN_DEFAULT_LAYERS:
        for item in _blocks([t for t, _ in spatial], index)[0]:
            chosen.setdefault(id(item), item)
    ordered = sorted(chosen.values(), key=lambda t: order[id(t)])
    # the deepest stage (a U-Net's bottleneck) stays when the stages are more than can be taken
    areas = {id(item): math.prod(key[0]) for key, item in best.items()}
    deepest = min((t for t in ordered if id(t) in areas), key=lambda t: areas[id(t)], default=None)
    keep = canonical_name(deepest.name) if deepest is not None else None
    return _every_call(_spread(list(dict.fromkeys(canonical_name(t.name) for t in ordered)), keep), shapes)


def _every_call(names: list[str], shapes: Mapping[str, Sequence[tuple[int, ...] | None]]) -> list[str]:
    """``names`` with each last call ``block@k`` of a module that ran 2 to :data:`MAX_SHARED_CALLS` times with one
    output shape replaced by ``block``, which selects every call: a Siamese network's shared encoder runs once per
    input, and its last call alone left a change to the first input unseen. A module that runs more often, at other
    shapes (an activation reused across stages) or in a loop (each call taking the previous call's output, as
    RAFT's update steps do; left out of ``shapes``) keeps its last call alone."""
    chosen = []
    for name in names:
        module, call = split_call(name)
        ran = shapes.get(module, ())
        shared = (
            call == len(ran) - 1  # the module's last call, not a module of its own named ``down@2``
            and 1 < len(ran) <= MAX_SHARED_CALLS
            and len(set(ran)) == 1
        )
        chosen.append(module if shared else name)
    return chosen


def _phases(staged: Sequence[tuple[str, tuple[int, ...]]], grids: Mapping[str, tuple[int, ...]]) -> list[int]:
    """The phase of each ``(module name, grid)`` in forward order: 0, and one more each time the grids grow back to one
    the current phase already had (a U-Net's decoder going up through its encoder's resolutions).

    Each phase's stages are chosen on their own, so an encoder and its decoder both have their stage outputs chosen,
    and a change in the encoder is found there first, not at the decoder stage that holds the encoder's resolution.
    Growth inside a module whose own output (in ``grids``) is smaller does not count: that is a parallel branch
    starting again from the module's input (an Inception block, RAFT's second encoder), not a decoder. Nor does a
    container that ends larger than its last child (a backbone returning a dict of earlier maps).
    """
    phase, seen, previous, phases = 0, set[tuple[int, ...]](), ("", math.inf), []
    for name, grid in staged:
        area = math.prod(grid)
        parts = name.split(".")
        enclosing = (grids.get(".".join(parts[:end])) for end in range(1, len(parts)))
        if (
            grid in seen
            and area > previous[1]
            and not previous[0].startswith(f"{name}.")  # a container returning an earlier map (a backbone's dict)
            and all(g is None or math.prod(g) >= area for g in enclosing)
        ):
            phase, seen = phase + 1, set()
        seen.add(grid)
        previous = (name, area)
        phases.append(phase)
    return phases


def _spread(names: list[str], keep: str | None = None) -> list[str]:
    """At most :data:`MAX_DEFAULT_LAYERS` of ``names``, evenly spaced, the first and the last included, and ``keep``
    in place of the pick nearest to it (neither the first nor the last) when the spacing passed over it."""
    if len(names) <= MAX_DEFAULT_LAYERS:
        return names
    step = (len(names) - 1) / (MAX_DEFAULT_LAYERS - 1)
    picked = [round(i * step) for i in range(MAX_DEFAULT_LAYERS)]
    at = names.index(keep) if keep in names else None
    if at is not None and at not in picked:
        nearest = min(range(1, MAX_DEFAULT_LAYERS - 1), key=lambda k: (abs(picked[k] - at), k))
        picked[nearest] = at
        picked.sort()
    return [names[i] for i in picked]


def _weight_modules(modules: Iterable[nn.Module]) -> set[int]:
    """The ids of the parametrizations' modules among ``modules`` (``conv.parametrizations.weight`` and what it holds):
    no layers, they compute weights."""
    return {id(m) for p in modules if isinstance(p, ParametrizationList) for m in p.modules()}


def _layer_modules(module: nn.Module) -> list[nn.Module]:
    """``module`` and its submodules but a parametrization's, as :func:`_blocks` weighs a module."""
    weights = _weight_modules(module.modules())
    return [m for m in module.modules() if id(m) not in weights]


def _blocks(items: Sequence[LayerTrace], index: dict[str, nn.Module]) -> tuple[list[LayerTrace], bool]:
    """Evenly spaced members of the heaviest run of sibling modules of one class among ``items``, and whether they
    are blocks (modules with submodules).

    A run weighs the modules its members hold: twelve transformer layers outweigh the three dropouts inside one, and
    three residual stages the five conv-norm units of a small head; among equals the shallower parent, then the
    first in forward order. Without the modules (``index`` empty) all siblings are one run, weighing its length.
    """
    runs: dict[tuple[str, str], list[LayerTrace]] = {}
    weights: dict[tuple[str, str], int] = {}
    containers: dict[tuple[str, str], bool] = {}
    for item in items:
        name = canonical_name(item.name).split("@")[0]
        module = index.get(name)
        kind = type_before_parametrizations(module).__qualname__ if module is not None else ""
        key = (name.rpartition(".")[0], kind)
        runs.setdefault(key, []).append(item)
        size = len(_layer_modules(module)) if module is not None else 1
        weights[key] = weights.get(key, 0) + size
        containers[key] = size > 1
    runs = {key: run for key, run in runs.items() if len(run) >= 2}
    if not runs:
        return [], False
    key = max(runs, key=lambda k: (weights[k], -k[0].count(".") - bool(k[0])))
    run = runs[key]
    count = min(MIN_DEFAULT_LAYERS, len(run))
    step = (len(run) - 1) / (count - 1)
    return [run[round(i * step)] for i in range(count)], containers[key]
