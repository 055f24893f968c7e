"""Capture: forward hooks as a context manager that copies only what is kept, and always cleans up (torch).

While the context is open the model is in eval mode and every selected module has a forward hook; on exit the hooks
are removed and every module's training flag is restored, also when the forward pass raised. A model switched from
training mode is switched back with its own ``train()`` (an override that does more than set flags runs as it did
for ``eval()``), then each module's flag is set as it was (a frozen norm layer stays frozen). A hook copies batch
item 0 and the selected channels at hook time, so an in-place operation that follows (``ReLU(inplace=True)``,
``out += identity``) cannot change what was captured.

A module called several times in one forward pass produces one capture per call: the first is named like the module
(``block``), the later ones get the call index (``block@1``, ``block@2``, ...). ``block@1`` can also be selected
alone.
"""

from __future__ import annotations

import itertools
import re
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin

from pytest_featviz.channels import ChannelsError, ChannelSpec, keep
from pytest_featviz.layout import LEAF_SEPARATOR, Hints, LayoutError, first_tensor, input_facts, pick
from pytest_featviz.outcomes import raised_outside
from pytest_featviz.records import FeatvizError


@dataclass(frozen=True, slots=True)
class Target:
    """A module to hook: its user-facing name and which call to keep (``None``: every call)."""

    name: str
    module: nn.Module
    call: int | None = None
    leaf: str | None = None  # selector of a tensor leaf in a tuple/list/dict output (layout.pick)
    hints: Hints | None = None  # layout hints from the module and its ancestors (layers.resolve_layers)


@dataclass(frozen=True, slots=True)
class LayerCapture:
    """What was kept of one call of one module."""

    name: str
    shape: tuple[int, ...]
    channels: tuple[int, ...]
    maps: torch.Tensor  # float32, CPU, (len(channels), H, W)
    layout: str = ""  # layout.Layout.label: how the output was read
    dtype: torch.dtype = torch.float32  # the output's own dtype
    finite: bool = True  # whether every value of the output is finite, also those not kept


@dataclass(frozen=True, slots=True)
class LayerTrace:
    """The output shape of one call of one module, recorded without copying anything."""

    name: str
    shape: tuple[int, ...] | None
    follows: bool = False  # the call took an output of the module's previous call (a loop's ``x = step(x)``)


def _tensors(value: Any, depth: int = 0) -> Iterator[torch.Tensor]:
    """The tensor objects in a hook's ``args`` or ``output`` (tuples, lists, dicts), as they are: no conversion."""
    if isinstance(value, torch.Tensor):
        yield value
    elif depth < 4 and isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item, depth + 1)
    elif depth < 4 and isinstance(value, Mapping):
        for item in value.values():
            yield from _tensors(item, depth + 1)


class Follows:
    """Per module, whether each call takes an output of its previous call as an input, by object identity: a
    refinement loop (``x = step(x)``, RAFT's hidden state) does, a shared encoder run on two pictures does not. Weak
    references: no output is kept alive."""

    def __init__(self) -> None:
        self._previous: list[weakref.ref[torch.Tensor]] = []

    def __call__(self, args: Any, output: Any) -> bool:
        inputs = {id(t): t for t in _tensors(args)}
        follows = any((t := ref()) is not None and inputs.get(id(t)) is t for ref in self._previous)
        self._previous = [weakref.ref(t) for t in _tensors(output)]
        return follows


def call_name(name: str, call: int) -> str:
    """The name of the ``call``-th call (0-based) of module ``name``."""
    return name if call == 0 else f"{name}@{call}"


_CALL_SUFFIX = re.compile(r"^(?P<name>.+)@(?P<call>\d+)$")


def split_call(name: str) -> tuple[str, int | None]:
    """:func:`call_name` read back: ``block@2`` -> ``("block", 2)``; a name without a call index -> ``(name, None)``."""
    found = _CALL_SUFFIX.match(name)
    return (found["name"], int(found["call"])) if found else (name, None)


def run_model(model: nn.Module, inputs: Any) -> Any:
    """Call ``model`` with ``inputs``: a tuple is unpacked as positional, a mapping (a dict, a Hugging Face
    ``BatchEncoding``) as keyword arguments, anything else is the one positional argument.

    A namedtuple is a tuple, unpacked too. A forward that takes the dict or the namedtuple itself fails with a
    ``TypeError``, which gets a note that says how to pass it."""
    __tracebackhide__ = raised_outside  # an error of the model's shows the test's frame, then the model's
    if isinstance(inputs, Mapping):
        try:
            return model(**inputs)
        except TypeError as error:
            if hasattr(error, "add_note") and "keyword argument" in str(error):  # Python 3.11+
                error.add_note(
                    "feature_snapshot passes a dict input as keyword arguments, model(**inputs); for a forward"
                    " that takes the dict itself, pass it as a one-item tuple: feature_snapshot(model, (inputs,))"
                )
            raise
    if isinstance(inputs, tuple):
        try:
            return model(*inputs)
        except TypeError as error:
            named = hasattr(inputs, "_fields")  # a namedtuple (typing.NamedTuple too)
            # a plain tuple: only where it held more arguments than forward takes (``forward(pair)`` given the pair)
            told = "positional argument" in str(error) if named else "were given" in str(error)
            if hasattr(error, "add_note") and told and _at_call(error):
                what = f", also a namedtuple ({type(inputs).__name__})," if named else ""
                error.add_note(
                    f"feature_snapshot passes a tuple input{what} as positional arguments, model(*inputs), here"
                    f" {len(inputs)} of them; for a forward that takes the {'namedtuple' if named else 'tuple'}"
                    " itself, pass it as a one-item tuple: feature_snapshot(model, (inputs,))"
                )
            raise
    return model(inputs)


def _at_call(error: BaseException) -> bool:
    """Whether ``error`` was raised calling the model's forward, where its arguments are bound: every frame below
    :func:`run_model`'s is torch's (its module call, a ``torch.no_grad()`` decorator, a wrapper such as
    ``DataParallel``), none the user's. A wrong call inside forward (of a submodule, of a function of the user's)
    is no sign of how the input was passed."""
    frame = error.__traceback__
    below = frame.tb_next if frame is not None else None
    while below is not None:
        if not Path(below.tb_frame.f_code.co_filename).resolve().is_relative_to(_TORCH_DIR):
            return False
        below = below.tb_next
    return frame is not None


_TORCH_DIR = Path(torch.__file__).resolve().parent


def run_in_inference_mode(model: nn.Module, modules: Iterable[nn.Module], inputs: Any) -> None:
    """Run ``model`` (of ``modules``, ``model.modules()``) on ``inputs`` under inference mode, as a test's own pass
    would run, but let a lazy module (``nn.LazyConv2d`` before its first call) take its first step outside it: made
    under inference mode its parameters were inference tensors, and training the model afterwards raised "Inference
    tensors cannot be saved for backward". The step is torch's own pre-hook, run once and in its place with inference
    mode off, so the parameters are made in place as torch makes them (a weight tied to one or an optimizer built
    before keeps holding it) and the random numbers drawn are the same. A lazy module built under inference mode
    takes it there, as it always did; nothing else in the pass changes, so a forward pass that writes inference
    tensors in place (a cache, a counter, an input) runs as it always did. A forward that computes gradients cannot
    run there (``torch.enable_grad()`` does not turn autograd on): torch's error gets a note that says so."""
    __tracebackhide__ = raised_outside
    swapped: list[tuple[nn.Module, int, Callable[..., Any]]] = []  # module, hook id, torch's hook
    for module in modules:
        if not isinstance(module, LazyModuleMixin) or not module.has_uninitialized_params() or _made_there(module):
            continue
        handle = getattr(module, "_initialize_hook", None)
        hooks = module._forward_pre_hooks
        if handle is not None and handle.id in hooks:
            swapped.append((module, handle.id, hooks[handle.id]))
            hooks[handle.id] = _outside_inference_mode(hooks[handle.id])
    try:
        with torch.inference_mode():
            run_model(model, inputs)
    except RuntimeError as error:
        _note_autograd(error)
        raise
    finally:
        for module, key, step in swapped:
            if key in module._forward_pre_hooks:  # it never ran: torch's step waits for a later call
                module._forward_pre_hooks[key] = step


# torch's errors for autograd run under inference mode: backward / autograd.grad on a result that recorded no graph
# (enable_grad does not turn autograd on there), and a forward that turns inference mode off and uses its tensors
_AUTOGRAD_UNDER_INFERENCE_MODE = (
    "does not require grad and does not have a grad_fn",
    "Inference tensors cannot be saved for backward",
    "Setting requires_grad=True on inference tensor",
)


def _note_autograd(error: RuntimeError) -> None:
    """Add a note to ``error`` when it is one that inference mode causes for a forward that computes gradients
    (an energy model's forces, a PINN's derivatives): torch's message blames the tensors, not the mode the plugin
    chose, and the forward runs fine when the test calls it."""
    if hasattr(error, "add_note") and any(text in str(error) for text in _AUTOGRAD_UNDER_INFERENCE_MODE):
        error.add_note(  # Python 3.11+
            "feature_snapshot runs the model under torch.inference_mode(), where torch.enable_grad() does not turn"
            " autograd on, so a forward that computes gradients (torch.autograd.grad, .backward()) cannot be"
            " snapshotted this way; snapshot the part of the model that needs no gradients (the submodules before the"
            " gradient step, with the inputs they take)"
        )


def _made_there(module: nn.Module) -> bool:
    """Whether the lazy ``module`` was built under inference mode: its parameters are then made in place there."""
    with torch._C.DisableTorchFunctionSubclass():  # an uninitialized parameter answers no question otherwise
        return any(
            tensor.is_inference()
            for tensor in itertools.chain(module._parameters.values(), module._buffers.values())
            if tensor is not None
        )


def _outside_inference_mode(step: Callable[..., Any]) -> Callable[..., Any]:
    """A lazy module's first step (torch's ``_infer_parameters`` pre-hook) run with inference mode off."""

    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None) -> Any:
        __tracebackhide__ = raised_outside
        with torch.inference_mode(False), torch.no_grad():
            return step(module, args, kwargs)

    return hook


def switch_to_eval(model: nn.Module) -> None:
    """``model.eval()``; a model that refuses it (an override that raises, in the model or a submodule) is a usage
    error that names the module that raised."""
    try:
        model.eval()
    except Exception as error:
        names = {id(module): name for name, module in model.named_modules()}
        culprit = ""  # the innermost module of the model whose method the traceback passes through
        trace = error.__traceback__
        while trace is not None:
            owner = trace.tb_frame.f_locals.get("self")
            culprit = names.get(id(owner), culprit)
            trace = trace.tb_next
        raised = "it" if not culprit else f"its submodule {culprit!r} ({type(model.get_submodule(culprit)).__name__})"
        raise FeatvizError(
            f"switching {type(model).__name__} to eval mode failed: {raised} raised {type(error).__name__}: {error}"
            " -- feature_snapshot runs the model in eval mode (its training flags are restored afterwards); snapshot a"
            " model whose modules can be switched"
        ) from error


class _Hooked:
    """Eval mode and hooks for the duration of a ``with`` block, everything restored on exit; :meth:`run` runs the
    model under inference mode (:func:`run_in_inference_mode`)."""

    def __init__(self, model: nn.Module, hooks: Sequence[tuple[nn.Module, Callable[..., None]]]) -> None:
        self._model = model
        self._hooks = hooks
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._modes: list[tuple[nn.Module, bool]] = []  # every module's flag, kept only when a module was training
        self._evaluated = False  # whether eval() ran: train() undoes it, else only the flags are set back
        self._modules: list[nn.Module] = []

    def __enter__(self) -> _Hooked:
        # A model already in eval mode, the usual case, costs one walk and nothing to restore.
        modules = self._modules = list(self._model.modules())
        if any(module.training for module in modules):
            self._modes = [(module, module.training) for module in modules]
        try:
            for module, hook in self._hooks:
                self._handles.append(module.register_forward_hook(hook))
            if self._modes:
                switch_to_eval(self._model)
                self._evaluated = True
        except BaseException:
            self._restore()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._restore()

    def _restore(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        modes, self._modes = self._modes, []
        try:
            evaluated, self._evaluated = self._evaluated, False
            if evaluated and modes[0][1]:  # the root was training: its own train(), as eval() ran its own
                self._model.train()
        finally:
            for module, training in modes:
                if module.training != training:
                    module.training = training

    def run(self, inputs: Any) -> None:
        __tracebackhide__ = raised_outside
        run_in_inference_mode(self._model, self._modules, inputs)


def capture(
    model: nn.Module,
    inputs: Any,
    targets: Sequence[Target],
    channels: ChannelSpec | Callable[[str], ChannelSpec],
    calls: dict[str, int] | None = None,
    channels_from: str = "",
) -> list[LayerCapture]:
    """Run ``model`` once and return what was kept of each target call, in the order the calls happened.

    ``channels`` is one spec for every layer, or a function from capture name to spec; ``calls``, when given,
    receives how many times each target's module ran, by target name; ``channels_from`` names the setting that gave
    ``channels`` in the error of a selection that does not fit a layer (``"--featviz-channels"``).
    """
    __tracebackhide__ = raised_outside
    captured: list[LayerCapture] = []
    errors: list[BaseException] = []
    facts = input_facts(inputs)
    unbatched: list[tuple[nn.modules.conv._ConvNd, tuple[int, ...]]] = []  # a convolution that ran on one sample
    # the convolutions that could run on the model's input as one sample: its tensor, as given, has their rank
    sample = _given_tensor(inputs)
    watched = [
        module
        for module in (model.modules() if sample is not None else ())
        if isinstance(module, nn.modules.conv._ConvNd) and len(module.kernel_size) + 1 == sample.dim()  # type: ignore[union-attr]
    ]

    def watch(module: nn.Module, args: Any, kwargs: dict[str, Any] | None = None) -> None:
        first = args[0] if args else (kwargs or {}).get("input")
        if (
            not unbatched
            and sample is not None
            and isinstance(module, nn.modules.conv._ConvNd)
            and isinstance(first, torch.Tensor)
            and first.dim() == len(module.kernel_size) + 1
            and first.shape == sample.shape  # the model's input itself, or as shaped (a normalization before it)
        ):
            unbatched.append((module, tuple(first.shape)))

    def make_hook(target: Target) -> Callable[..., None]:
        count = 0
        # the layer's name without its leaf selector (``lstm`` of ``lstm+1+0``), put before the leaves an error lists
        layer = target.name if target.leaf is None else target.name[: -len(LEAF_SEPARATOR + target.leaf)]

        def hook(module: nn.Module, args: Any, output: Any) -> None:
            nonlocal count
            call, count = count, count + 1
            if calls is not None:
                calls[target.name] = count
            if target.call is not None and call != target.call:
                return
            name = call_name(target.name, call)
            if first_tensor(output) is None:
                errors.append(FeatvizError(f"layer {name!r} returned {type(output).__name__}, which holds no tensor"))
                return
            try:
                spec = channels(name) if callable(channels) else channels
                found = module if target.hints is None else target.hints
                kept = keep(output, found, target.leaf, spec, facts=facts, layer=layer)
            except ValueError as exc:
                origin = f" (set by {channels_from})" if isinstance(exc, ChannelsError) and channels_from else ""
                errors.append(FeatvizError(f"layer {name!r}{_leaf_shape(output, target.leaf)}: {exc}{origin}"))
                return
            captured.append(
                LayerCapture(name, kept.shape, kept.channels, kept.maps, kept.layout, kept.dtype, kept.finite)
            )

        return hook

    with _Hooked(model, [(t.module, make_hook(t)) for t in targets]) as hooked:
        watching = [module.register_forward_pre_hook(watch, with_kwargs=True) for module in watched]
        try:
            hooked.run(inputs)
        finally:
            for handle in watching:
                handle.remove()
    if unbatched:  # also the layers that ran before the convolution (a normalization of the input)
        _refuse_unbatched(model, *unbatched[0], captured)
    if errors:
        raise errors[0]
    return captured


def _given_tensor(inputs: Any) -> torch.Tensor | None:
    """The model's input tensor as given: the input itself, or the first item of a tuple or mapping input (not one
    inside a list: a list of samples of several sizes is a model's to run one by one and stack)."""
    if isinstance(inputs, Mapping):
        inputs = next(iter(inputs.values()), None)
    elif isinstance(inputs, tuple):
        inputs = inputs[0] if inputs else None
    return inputs if isinstance(inputs, torch.Tensor) else None


def _refuse_unbatched(
    model: nn.Module, conv: nn.modules.conv._ConvNd, shape: tuple[int, ...], captured: Sequence[LayerCapture]
) -> None:
    """Refuse the ``captured`` outputs of the rank a convolution gives when it runs on one sample, as ``conv`` did on
    the model's input as given (of ``shape``): torch's convolutions take ``(C, H, W)`` (``(C, L)``, ``(C, T, H, W)``)
    without a batch, and dimension 0, read as the batch, is then the channels: batch item 0 was channel 0 alone, and
    a change of every other channel passed. A convolution run on one sample of another shape (a slice of a batch in
    a per-sample loop, a learned grid) tells nothing of the model's input, and refuses nothing (a batch of one
    whose slices a loop runs one by one has slices of its own shape: that alone is refused)."""
    refused = next((item for item in captured if len(item.shape) == len(conv.kernel_size) + 1), None)
    if refused is None:
        return
    name = next((name for name, module in model.named_modules() if module is conv), "")
    kind = {1: "(C, L)", 2: "(C, H, W)", 3: "(C, T, H, W)"}[len(conv.kernel_size)]
    raise FeatvizError(
        f"layer {refused.name!r} (output shape {refused.shape}): the model ran on one sample without a batch"
        f" dimension: its convolution {name or type(conv).__name__!r} took the input, of shape {shape}, which torch"
        f" reads as {kind}; feature_snapshot reads dimension 0 of an output as the batch and keeps item 0, which here"
        " would be channel 0 alone. Pass the input with a batch dimension: x.unsqueeze(0) (or x[None])"
    )


def _leaf_shape(output: Any, leaf: str | None) -> str:
    """`` (output shape ...)`` of the leaf a layer's error is about, for its message: the chosen leaf's, not the first
    one's; nothing for a leaf the output lacks (the error says so). Found only once an error is raised, so that a
    hook picks its leaf once (in :func:`~pytest_featviz.channels.keep`)."""
    try:
        return f" (output shape {tuple(pick(output, leaf).shape)})"
    except LayoutError:
        return ""


def trace(model: nn.Module, inputs: Any) -> list[LayerTrace]:
    """Run ``model`` once with shape-only hooks on every submodule; one record per call, in call order."""
    __tracebackhide__ = raised_outside
    records: list[LayerTrace] = []

    def make_hook(name: str) -> Callable[..., None]:
        calls = 0
        follows = Follows()

        def hook(module: nn.Module, args: Any, output: Any) -> None:
            nonlocal calls
            tensor = first_tensor(output)
            shape = tuple(tensor.shape) if tensor is not None else None
            records.append(LayerTrace(call_name(name, calls), shape, follows(args, output)))
            calls += 1

        return hook

    hooks = [(module, make_hook(name)) for name, module in model.named_modules() if name]
    with _Hooked(model, hooks) as hooked:
        hooked.run(inputs)
    return records
