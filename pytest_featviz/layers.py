"""Layer selection: dotted names, globs, module classes, call indices, leaf selectors, wrappers, the default choice.

Names are those of ``model.named_modules()``. The prefixes that wrappers add (``_orig_mod.`` from
``torch.compile``, ``module.`` from ``DataParallel`` / ``DistributedDataParallel``) are optional: ``layer1`` and
``module.layer1`` select the same module, and goldens record the name without the prefix. A name may end in a leaf
selector (``backbone+out``, see :mod:`pytest_featviz.layout`) and then in a call index (``block+0@2``). TorchScript
modules (scripted or traced, the root or any submodule) are refused: hooks on them can silently never fire.

Names that reach a module only through an alias (``self.refine = self.decoder``: ``refine.0`` is ``decoder.0``) select
it too; a module object from the model (``layers=[model.layer1]``) selects it by its name. The model itself has no
name: a model without submodules cannot be snapshot (wrap it, ``nn.Sequential(model)``, to snapshot its output).

The default choice (``layers=None``) runs one shape-only forward pass and takes the *output of each stage*: for
every spatial grid that an output takes in the network (H x W of an NCHW or NHWC map or of patch tokens, T x H x W
of a video), the shallowest module producing it, the last one in forward order that does more than pass its input
on (a dropout or identity after a stage's block is passed over for the block). For a ResNet that is ``relu,
layer1, layer2, layer3, layer4``; for a VGG the last ReLU before each pooling; for a Swin its stages. A grid that
comes back after smaller ones (a U-Net's decoder) starts a new set of stages, so an encoder and its decoder are both
chosen (``enc1, enc2, enc3, bottleneck, dec3, dec2, head``). Of a module
that runs several times (RAFT's update block) only the last call counts. Grids of 1 x 1 are skipped when larger ones
exist. When that gives fewer than four layers (isotropic networks such as ViT, dilated
segmentation backbones, RAFT), it adds four evenly spaced blocks of the network's longest run of siblings with a
spatial output (``encoder.layers.encoder_layer_0, _4, _7, _11`` for ViT-B/16): siblings of one class, the run that
holds the most modules (twelve transformer layers before the dropouts inside one), then the shallower parent. At
most eight layers are taken, spread evenly over the forward order. Without any spatial output (a text or sequence
model, an MLP): when such a run is one of blocks (modules with submodules), four of its blocks and the module that
ran last at the top (a GPT's ``h.0, h.4, h.7, h.11, lm_head``); else the shallowest modules that ran (the direct
children of the model, unless only deeper ones ran), topped up by the run when they are fewer than four.

The shape-only pass runs on a copy of the input's tensors and with the random number generators' state restored
afterwards, so a forward pass that normalizes its input in place or draws random numbers computes in the capture
what it computes in a check, which runs no such pass.
"""

from __future__ import annotations

import contextlib
import difflib
import itertools
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Any, Union

import torch
from torch import nn
from torch.nn.parameter import is_lazy

from pytest_featviz.capture import LayerTrace, Target, trace
from pytest_featviz.environment import input_tensors
from pytest_featviz.layout import LEAF_SEPARATOR, Hints, InputFacts, LayoutError, hints, input_facts, plan
from pytest_featviz.records import FeatvizError

LayerSpec = Union[None, str, type, nn.Module, Iterable[Union[str, type, nn.Module]]]  # noqa: UP007 (runtime, 3.10)
WRAPPER_PREFIXES = ("_orig_mod.", "module.")
MAX_DEFAULT_LAYERS = 8
MIN_DEFAULT_LAYERS = 4
STAGE_DEPTH_WINDOW = 2
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


def _is_wrapper_name(canonical: str) -> bool:
    return not canonical or canonical + "." in WRAPPER_PREFIXES or canonical in WRAPPER_PREFIXES


def module_index(model: nn.Module) -> dict[str, nn.Module]:
    """Every selectable module by its canonical name, in ``named_modules`` order (the root is not selectable).

    Raises like :func:`refuse_torchscript` when the model holds TorchScript, found in the same walk of the model.
    """
    index: dict[str, nn.Module] = {}
    scripted: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, torch.jit.ScriptModule):
            scripted.append(name)
        canonical = canonical_name(name)
        if not _is_wrapper_name(canonical):
            index.setdefault(canonical, module)
    _refuse_scripted(model, scripted)
    return index


def _aliases(model: nn.Module, index: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """The names that reach a module only through an alias (a module registered twice), not in ``index``."""
    found: dict[str, nn.Module] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        canonical = canonical_name(name)
        if canonical not in index and not _is_wrapper_name(canonical):
            found.setdefault(canonical, module)
    return found


def refuse_torchscript(model: nn.Module) -> None:
    """Raise when ``model`` or a submodule is TorchScript: forward hooks on those can silently never fire."""
    _refuse_scripted(model, [name for name, m in model.named_modules() if isinstance(m, torch.jit.ScriptModule)])


def _refuse_scripted(model: nn.Module, scripted: list[str]) -> None:
    """The error for the scripted modules named ``scripted`` (in ``named_modules`` order), if any."""
    # Only the outermost scripted modules: everything inside a scripted module is scripted too.
    outermost: list[str] = []
    for name in scripted:
        inside = any(name == s or name.startswith(s + ".") for s in outermost if s) or (outermost and not outermost[0])
        if not inside:
            outermost.append(name)
    if outermost:
        shown = "the model itself" if outermost == [""] else ", ".join(repr(n) for n in outermost[:5])
        if len(outermost) > 5:
            shown += f" and {len(outermost) - 5} more"
        raise FeatvizError(
            f"{type(model).__name__} holds TorchScript modules ({shown}): forward hooks on scripted or traced modules"
            " can silently never fire, so feature_snapshot refuses them. Snapshot the eager nn.Module instead (the"
            " one you passed to torch.jit.script / torch.jit.trace)."
        )


def module_hints(
    model: nn.Module, index: dict[str, nn.Module], name: str, known: dict[int, Hints | None] | None = None
) -> Hints:
    """The layout hints of the module ``name``: its own, else its nearest ancestor's (the model last)."""
    parts = name.split(".")
    ancestors = [index[p] for p in (".".join(parts[:k]) for k in range(len(parts) - 1, 0, -1)) if p in index]
    return hints(index.get(name), [*ancestors, model], known)


def _closest(name: str, names: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    if not close:
        close = [n for n in names if "." not in n][:8]
    return ", ".join(repr(n) for n in close)


def _split_leaf(text: str, index: dict[str, nn.Module]) -> tuple[str, str | None]:
    """``"backbone+out"`` -> ``("backbone", "out")``; a module name that itself holds ``+`` wins."""
    if text in index or LEAF_SEPARATOR not in text:
        return text, None
    name, leaf = text.split(LEAF_SEPARATOR, 1)
    return name, leaf or None


def resolve_layers(model: nn.Module, spec: LayerSpec, gone: list[str] | None = None) -> list[Target]:
    """The targets selected by ``spec``; an unknown name or a pattern that matches nothing is an error.

    With ``gone`` given, an unknown exact name is appended to it instead (a golden's layer the model lost).
    """
    if spec is None:
        raise ValueError("resolve_layers needs a selection; use default_layers for layers=None")
    index = module_index(model)  # refuses TorchScript
    names = list(index)
    if not index:
        raise _no_submodules(model)
    items = _items(spec)
    if not items:
        raise FeatvizError("layers is an empty list: select at least one layer, or pass layers=None for the default")
    targets: dict[tuple[str, int | None], Target] = {}
    known: dict[int, Hints | None] = {}
    aliases = _LazyAliases(model, index)
    for item in items:
        if isinstance(item, nn.Module):
            item = _name_of(model, index, aliases, item)
        if isinstance(item, type):
            matched = [n for n, m in index.items() if isinstance(m, item)]
            if not matched:
                raise FeatvizError(f"no layer of type {item.__name__} in {type(model).__name__}")
            for name in matched:
                found = module_hints(model, index, name, known)
                targets.setdefault((name, None), Target(name, index[name], hints=found))
            continue
        if not isinstance(item, str):
            raise FeatvizError(
                f"layers must hold names, glob patterns, module classes or modules; got {type(item).__name__}"
                f" {_short(item)}"
            )
        call: int | None = None
        text = canonical_name(item)
        suffix = _CALL_SUFFIX.match(text)
        if suffix:
            text, call = suffix["name"], int(suffix["call"])
        text, leaf = _split_leaf(text, index)
        if any(ch in text for ch in "*?["):
            matched = [n for n in names if fnmatchcase(n, text)]
            if not matched:
                raise FeatvizError(f"layer pattern {item!r} matches no layer; closest names: {_closest(text, names)}")
        elif text in index:
            matched = [text]
        elif text in aliases.names():
            index[text] = aliases.names()[text]
            matched = [text]
        elif gone is not None:
            gone.append(item)
            continue
        else:
            raise FeatvizError(
                f"unknown layer {item!r} in {type(model).__name__}; closest names:"
                f" {_closest(text, [*names, *aliases.names()])}"
                " (list them all with `featviz layers` or model.named_modules())"
            )
        for name in matched:
            full = name if leaf is None else f"{name}{LEAF_SEPARATOR}{leaf}"
            found = module_hints(model, index, name, known)
            targets.setdefault((full, call), Target(full, index[name], call, leaf, found))
    # ``block`` selects every call, so a ``block@2`` next to it would capture that call twice.
    every_call = {name for name, call in targets if call is None}
    return [t for (name, call), t in targets.items() if call is None or name not in every_call]


class _LazyAliases:
    """:func:`_aliases` of a model, walked for the first name that needs them."""

    def __init__(self, model: nn.Module, index: dict[str, nn.Module]) -> None:
        self._model, self._index = model, dict(index)
        self._found: dict[str, nn.Module] | None = None

    def names(self) -> dict[str, nn.Module]:
        if self._found is None:
            self._found = _aliases(self._model, self._index)
        return self._found


def _items(spec: LayerSpec) -> list[Any]:
    """The items of a layer selection: a name, pattern, class or module alone, or an iterable of them."""
    if isinstance(spec, (str, type, nn.Module)):
        return [spec]
    if isinstance(spec, (bytes, Mapping)) or not isinstance(spec, Iterable):
        raise FeatvizError(
            "layers must be None (the default choice), a name, a glob pattern, a module class, a module, or a list"
            f" of them; got {type(spec).__name__} {_short(spec)}"
        )
    return list(spec)


def _short(value: Any) -> str:
    """``repr(value)``, cut to one short line (a module's repr is its whole tree)."""
    text = repr(value).splitlines()[0] if repr(value) else ""
    return text if len(text) <= 60 else text[:57] + "..."


def _name_of(model: nn.Module, index: dict[str, nn.Module], aliases: _LazyAliases, module: nn.Module) -> str:
    """The canonical name of a module object of ``model``; an error for a module from elsewhere (or the model)."""
    for name, candidate in index.items():
        if candidate is module:
            return name
    for name, candidate in aliases.names().items():
        if candidate is module:
            return name
    what = "the model itself" if module is model else f"a {type(module).__name__} that is not a submodule of it"
    raise FeatvizError(
        f"layers holds {what}; select submodules of {type(model).__name__} by name, glob pattern, class or object"
    )


def _no_submodules(model: nn.Module) -> FeatvizError:
    return FeatvizError(
        f"{type(model).__name__} has no submodules: feature_snapshot hooks the layers inside a model, and the model"
        " itself has no name to select; to snapshot its output, wrap it: feature_snapshot(nn.Sequential(model), x)"
        " (its output is then layer '0')"
    )


# Modules that return their input unchanged in eval mode, where snapshots are taken.
PASS_THROUGH = (
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)


def default_selection(model: nn.Module, inputs: Any) -> list[str]:
    """The default choice for ``model`` on ``inputs`` (one shape-only forward pass; see the module doc)."""
    refuse_torchscript(model)
    if not any(True for _ in model.children()):
        raise _no_submodules(model)
    tensors = itertools.chain(model.parameters(), model.buffers(), input_tensors(inputs))
    devices = sorted({t.device.index or 0 for t in tensors if t.is_cuda})
    with torch.random.fork_rng(devices=devices), _buffers_kept(model):  # as if this pass had not run
        traces = trace(model, _copied(inputs))
    return default_layers(traces, model, facts=input_facts(inputs))


@contextlib.contextmanager
def _buffers_kept(model: nn.Module) -> Iterator[None]:
    """Every buffer and submodule of ``model`` as it was before the block: a forward pass that counts its calls,
    keeps a running state or caches, would otherwise make the golden from its second pass and leave the model one
    pass ahead.

    Submodules the pass added, replaced or deleted are put back as they were, and so are buffers (``None`` ones and
    non-persistent ones included), each in place where it changed, so that buffers shared by modules or viewing one
    another stay so. A buffer the pass moved to another dtype or device (``self.to(...)`` in forward) keeps its new
    tensor, with the old values, as the parameters moved too. A lazy module's buffer, which had no value yet, keeps
    the one the pass gave it (the model needs it).
    """
    modules = list(model.modules())
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
    """The tensor to put back as a buffer that was ``buffer`` and is ``now`` (see :func:`_buffers_kept`), written
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
    """``value`` with each tensor in its dicts, lists and tuples replaced by a copy (for a pass that may write it)."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, Mapping):
        return {key: _copied(item) for key, item in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(_copied(item) for item in value))
    if isinstance(value, (list, tuple)):
        return type(value)(_copied(item) for item in value)
    return value


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

    traces = [t for t in traces if not _is_wrapper_name(module_name(t))]
    # Of a module that runs several times only the last call is eligible: a golden records ``step`` for the first
    # call, and ``step`` selects every call when the golden is checked again.
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
        return _spread([canonical_name(t.name) for t in sorted(picked.values(), key=lambda t: order[id(t)])])
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
    return _spread(list(dict.fromkeys(canonical_name(t.name) for t in ordered)), keep)


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
        key = (name.rpartition(".")[0], type(module).__qualname__ if module is not None else "")
        runs.setdefault(key, []).append(item)
        weights[key] = weights.get(key, 0) + (sum(1 for _ in module.modules()) if module is not None else 1)
        containers[key] = module is not None and any(True for _ in module.children())
    runs = {key: run for key, run in runs.items() if len(run) >= 2}
    if not runs:
        return [], False
    key = max(runs, key=lambda k: (weights[k], -k[0].count(".") - bool(k[0])))
    run = runs[key]
    count = min(MIN_DEFAULT_LAYERS, len(run))
    step = (len(run) - 1) / (count - 1)
    return [run[round(i * step)] for i in range(count)], containers[key]
