"""A model surveyed for ``featviz layers``: every module of it with what each of its calls gave (output shape,
layout, the leaf selectors of a tuple/dict output), found by one forward pass with shape-only hooks, and the layers the
default choice (``layers=None``) takes. The model's training flags are restored and its hooks removed afterwards.
torch and the layer code are imported only when a model is surveyed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SurveyedLayer:
    """A module of the surveyed model: its name and type, per call its output shape and layout, and the leaf
    selectors of a tuple/dict output with their shapes and layouts (at its first call)."""

    name: str
    kind: str
    shapes: list[tuple[int, ...] | None] = field(default_factory=list)
    layouts: list[str] = field(default_factory=list)
    leaves: list[tuple[str, tuple[int, ...], str]] = field(default_factory=list)


def survey(model: Any, inputs: Any) -> tuple[list[SurveyedLayer], list[str]]:
    """Every module of ``model`` with its calls (shape-only hooks, one forward pass), and the default choice."""
    from pytest_featviz.capture import Follows, LayerTrace, call_name, run_in_inference_mode, switch_to_eval
    from pytest_featviz.layers import canonical_name, module_hints, module_index, refuse_layerless
    from pytest_featviz.layout import LayoutError, input_facts, plan, tensor_leaves
    from pytest_featviz.stages import default_layers

    index = module_index(model)  # refuses TorchScript
    refuse_layerless(model)
    found = {name: SurveyedLayer(name, type(module).__name__) for name, module in index.items()}
    traces: list[LayerTrace] = []
    known: dict[int, Any] = {}
    facts = input_facts(inputs)

    def make_hook(name: str) -> Callable[..., None]:
        layer = found[name]
        found_hints = module_hints(model, index, name, known)
        follows = Follows()

        def hook(module: Any, args: Any, output: Any) -> None:
            leaves = list(tensor_leaves(output))
            shape = tuple(leaves[0][1].shape) if leaves else None
            traces.append(LayerTrace(call_name(name, len(layer.shapes)), shape, follows(args, output)))
            layer.shapes.append(shape)
            try:
                layer.layouts.append(plan(shape, found_hints, facts=facts).label if shape is not None else "")
            except LayoutError:
                layer.layouts.append("-")
            if not layer.leaves and leaves and leaves[0][0]:  # a tuple/list/dict output
                layer.leaves = [
                    (selector, tuple(t.shape), _leaf_label(output, t, found_hints, selector, facts))
                    for selector, t in leaves
                ]

        return hook

    handles = []
    training = [(m, m.training) for m in model.modules()]
    try:
        for raw, module in model.named_modules():
            name = canonical_name(raw)
            if name in found and index[name] is module:
                handles.append(module.register_forward_hook(make_hook(name)))
        switch_to_eval(model)
        run_in_inference_mode(model, list(model.modules()), inputs)
    finally:
        for handle in handles:
            handle.remove()
        for module, flag in training:
            module.training = flag
    return list(found.values()), default_layers(traces, model, facts=facts)


def _leaf_label(output: Any, tensor: Any, found: Any, selector: str, facts: Any) -> str:
    """The layout a snapshot of the leaf ``selector`` gets, as the hook that keeps it reads it; "-" for none."""
    from pytest_featviz.channels import leaf_layout
    from pytest_featviz.layout import LayoutError

    try:
        return leaf_layout(output, tensor, found, selector, facts).label
    except LayoutError:
        return "-"
