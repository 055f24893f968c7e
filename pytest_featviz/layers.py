"""Layer names: dotted names, globs, module classes, call indices, leaf selectors, wrappers, module objects.

Names are those of ``model.named_modules()``. The prefixes that wrappers add (``_orig_mod.`` from
``torch.compile``, ``module.`` from ``DataParallel`` / ``DistributedDataParallel``) are optional: ``layer1`` and
``module.layer1`` select the same module, and goldens record the name without the prefix. A name may end in a leaf
selector (``backbone+out``, see :mod:`pytest_featviz.layout`) and then in a call index (``block+0@2``). TorchScript
modules (scripted or traced, the root or any submodule) are refused: hooks on them can silently never fire; so is a
``torch.fx.GraphModule`` whose graph calls none of its submodules (``ExportedProgram.module()``).

Names that reach a module only through an alias (``self.refine = self.decoder``: ``refine.0`` is ``decoder.0``) select
it too; a module object from the model (``layers=[model.layer1]``) selects it by its name. The model itself has no
name: a model without submodules cannot be snapshot (wrap it, ``nn.Sequential(model)``, to snapshot its output).

This module resolves the selection a test gives; :mod:`pytest_featviz.stages` makes the default choice
(``layers=None``).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Any, Union

import torch
from torch import nn
from torch.nn.utils.parametrize import is_parametrized, type_before_parametrizations

from pytest_featviz.capture import Target, split_call
from pytest_featviz.layout import LEAF_SEPARATOR, Hints, hints
from pytest_featviz.records import FeatvizError, printable

LayerSpec = Union[None, str, type, nn.Module, Iterable[Union[str, type, nn.Module]]]  # noqa: UP007 (runtime, 3.10)
WRAPPER_PREFIXES = ("_orig_mod.", "module.")
_GRAMMAR = re.compile(r"[@+*?\[]")  # characters that make a name a pattern, a call index or a leaf selector


def canonical_name(name: str) -> str:
    """``name`` without the prefixes that ``torch.compile`` and ``DataParallel`` add."""
    stripped = True
    while stripped:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name, stripped = name[len(prefix) :], True
    return name


def is_wrapper_name(canonical: str) -> bool:
    """Whether a canonical name is the model itself or a wrapper around it (``_orig_mod``, ``module``): no layer."""
    return not canonical or canonical + "." in WRAPPER_PREFIXES or canonical in WRAPPER_PREFIXES


def module_index(model: nn.Module) -> dict[str, nn.Module]:
    """Every selectable module by its canonical name, in ``named_modules`` order (the root is not selectable).

    Raises like :func:`refuse_unhookable` when the model holds TorchScript (found in the same walk of the model) or
    is a graph of operators.
    """
    index: dict[str, nn.Module] = {}
    scripted: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, torch.jit.ScriptModule):
            scripted.append(name)
        canonical = canonical_name(name)
        if not is_wrapper_name(canonical):
            index.setdefault(canonical, module)
    _refuse_scripted(model, scripted)
    _refuse_operator_graph(model)
    return index


def _aliases(model: nn.Module, index: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """The names that reach a module only through an alias (a module registered twice), not in ``index``."""
    found: dict[str, nn.Module] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        canonical = canonical_name(name)
        if canonical not in index and not is_wrapper_name(canonical):
            found.setdefault(canonical, module)
    return found


def refuse_unhookable(model: nn.Module) -> None:
    """Raise when ``model`` or a submodule is TorchScript, or ``model`` is a graph of operators: forward hooks on their
    layers can silently never fire."""
    _refuse_scripted(model, [name for name, m in model.named_modules() if isinstance(m, torch.jit.ScriptModule)])
    _refuse_operator_graph(model)


def _refuse_operator_graph(model: nn.Module) -> None:
    """The error for a ``torch.fx.GraphModule`` whose graph calls none of its submodules: the module of a
    ``torch.export`` ``ExportedProgram`` runs ATen operators on weights it holds in empty submodules (and calls only
    the ``_guards_fn`` it generates), so no layer of it ever runs. A ``symbolic_trace`` graph calls its leaf modules."""
    if not isinstance(model, torch.fx.GraphModule):
        return
    if any(node.op == "call_module" and node.target != "_guards_fn" for node in model.graph.nodes):
        return
    raise FeatvizError(
        "the model is a torch.fx GraphModule whose graph calls none of its submodules (the module of a torch.export"
        " ExportedProgram runs ATen operators on the weights; a trace of a forward that calls only functions does"
        " the same), so no layer of it runs and no forward hook on one can fire. Snapshot the eager nn.Module,"
        " selecting modules its forward calls, or for an exported program torch.export.unflatten(exported_program),"
        " which calls its submodules."
    )


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


def under_another_parent(names: Iterable[str], name: str) -> list[str]:
    """Where a golden's layer ``name`` that the model no longer has may be now: the model's layer ``names``
    (:func:`module_index`) whose module ends with the same name parts (``0.relu`` for ``relu``, once the model is
    wrapped in ``nn.Sequential``), with ``name``'s call index and leaf selector; at most five."""
    module = split_call(name)[0].split(LEAF_SEPARATOR, 1)[0]
    rest = name[len(module) :]
    return [other + rest for other in names if other.endswith("." + module)][:5]


def _closest(name: str, names: Sequence[str]) -> str:
    parts = name.split(".")
    # the name inside a wrapped submodule (``body = torch.compile(body)``: ``body._orig_mod.0``) comes first, as the
    # plain names of the other blocks are closer by letters
    known = set(names)
    wrapped = [
        ".".join([*parts[:cut], prefix.rstrip("."), *parts[cut:]])
        for cut in range(1, len(parts))
        for prefix in WRAPPER_PREFIXES
    ]
    close = [n for n in wrapped if n in known]
    close += [n for n in difflib.get_close_matches(name, names, n=5, cutoff=0.5) if n not in close][: 5 - len(close)]
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

    With ``gone`` given, ``spec`` is a golden's record: an unknown exact name is appended to ``gone`` instead (a
    layer the model lost), and each name selects the one call it names (``block`` the first call, ``block@1`` the
    second), not every call of the module: a golden made with ``layers=["block@0"]`` records ``block``.
    """
    if spec is None:
        raise ValueError("resolve_layers needs a selection; use default_layers for layers=None")
    index = module_index(model)  # refuses TorchScript
    names = list(index)
    if not index:
        raise no_submodules(model)
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
                _refuse_unstorable(name)
                found = module_hints(model, index, name, known)
                targets.setdefault((name, None), Target(name, index[name], hints=found))
            continue
        if not isinstance(item, str):
            raise FeatvizError(
                f"layers must hold names, glob patterns, module classes or modules; got {type(item).__name__}"
                f" {_short(item)}"
            )
        call: int | None = None
        leaf: str | None = None
        text = canonical_name(item)
        if text not in index and _GRAMMAR.search(text) and text in aliases.names():
            index[text] = aliases.names()[text]
        if text in index:  # a module's own name, also one holding '@', '+' or glob characters (``down[1]``)
            matched = [text]
        else:
            text, call = split_call(text)
            text, leaf = _split_leaf(text, index)
            found_names = _lookup(model, index, names, aliases, item, text, gone is not None)
            if found_names is None:
                assert gone is not None
                gone.append(item)
                continue
            matched = found_names
        if gone is not None and call is None:  # a golden's record names one call
            call = 0
        for name in matched:
            _refuse_unstorable(name)
            full = name if leaf is None else f"{name}{LEAF_SEPARATOR}{leaf}"
            found = module_hints(model, index, name, known)
            targets.setdefault((full, call), Target(full, index[name], call, leaf, found))
    # ``block`` selects every call, so a ``block@2`` next to it would capture that call twice.
    every_call = {name for name, call in targets if call is None}
    return [t for (name, call), t in targets.items() if call is None or name not in every_call]


def _refuse_unstorable(name: str) -> None:
    """Refuse a module name that no golden can hold: one with a lone surrogate (a ``ModuleDict`` key made with
    ``os.fsdecode`` from bytes that are not UTF-8), which no JSON sidecar, report or xdist message can carry."""
    shown = printable(name)
    if shown != name:
        surrogate = next(c for c in name if 0xD800 <= ord(c) <= 0xDFFF)
        raise FeatvizError(
            f"layer name '{shown}' holds a lone surrogate (\\u{ord(surrogate):04x}), which a golden cannot store;"
            " give that module a name that is valid Unicode"
        )


def _lookup(
    model: nn.Module,
    index: dict[str, nn.Module],
    names: list[str],
    aliases: _LazyAliases,
    item: str,
    text: str,
    tolerate: bool,
) -> list[str] | None:
    """The module names that ``text`` (``item`` without call index and leaf) selects: a pattern's matches among
    ``names`` (the model's own names, no aliases), a name, or an alias (added to ``index``); ``None`` for an unknown
    name when ``tolerate`` (a golden's layer that is gone)."""
    if any(ch in text for ch in "*?["):
        matched = [n for n in names if fnmatchcase(n, text)]
        if not matched:
            raise FeatvizError(
                f"layer pattern {item!r} matches no layer; "
                + (_call_index_last(item, index, names, aliases) or f"closest names: {_closest(text, names)}")
            )
        return matched
    if text in index:
        return [text]
    if text in aliases.names():
        index[text] = aliases.names()[text]
        return [text]
    if tolerate:
        return None
    reordered = _call_index_last(item, index, names, aliases)
    raise FeatvizError(
        f"unknown layer {item!r} in {type(model).__name__}; "
        + (
            reordered
            or f"closest names: {_closest(text, [*names, *aliases.names()])}"
            " (list them all with model.named_modules(), or `featviz layers PACKAGE.MODULE:FACTORY` with a function"
            " that builds the model)"
        )
    )


_CALL_BEFORE_LEAF = re.compile(r"^(?P<before>.+?)(?P<call>@\d+)(?P<after>\+.+)$")


def _call_index_last(item: str, index: dict[str, nn.Module], names: list[str], aliases: _LazyAliases) -> str:
    """The hint for a name with its call index before its leaf selector (``block@1+logits``), when the name written
    the other way round (``block+logits@1``) names a module of the model; else ``""``. The call index is read only
    at the end of a name, so the slip reads as a module called ``block@1``, and the closest names it got listed
    (``block``, ``block.conv``) hid the fix."""
    found = _CALL_BEFORE_LEAF.match(item)
    if found is None:
        return ""
    reordered = found["before"] + found["after"] + found["call"]
    text, _ = split_call(canonical_name(reordered))
    name, _ = _split_leaf(text, index)
    if any(ch in name for ch in "*?["):
        known = any(fnmatchcase(n, name) for n in names)
    else:
        known = name in index or name in aliases.names()
    return f"a call index goes last, after the leaf selector: {reordered!r}" if known else ""


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
    what = "the model itself" if module is model else f"a {type(module).__name__} that is not a submodule of the model"
    raise FeatvizError(
        f"layers holds {what}; select submodules of {type(model).__name__} by name, glob pattern, class or object"
    )


def refuse_layerless(model: nn.Module) -> None:
    """Raise :func:`no_submodules` when ``model`` has no layer to choose: no child, or only the parametrizations
    of a parametrized module (a weight-normed Conv2d)."""
    if not any(name != "parametrizations" or not is_parametrized(model) for name, _ in model.named_children()):
        raise no_submodules(model)


def no_submodules(model: nn.Module) -> FeatvizError:
    """The error for a model without submodules: it says how to snapshot the model's output."""
    return FeatvizError(
        f"{type_before_parametrizations(model).__name__} has no submodules: feature_snapshot hooks the layers inside a"
        " model, and the model itself has no name to select; to snapshot its output, wrap it:"
        " feature_snapshot(nn.Sequential(model), x) (its output is then layer '0')"
    )
