"""Channels: which channels of an output a hook keeps, and the copy it keeps of them (torch).

A hook hands :func:`keep` the module and its output. Its leaf is picked and its layout decided
(:mod:`pytest_featviz.layout`); then the channels are selected, and only batch item 0 and the selected channels are
copied, at hook time, to float32 on the CPU, as the ``(channels, height, width)`` maps the layout names
(:func:`extract`): a channels-last map's channels come first, patch tokens lose their prefix tokens and lie on their
grid, a video's frames lie side by side, and a layout of one picture (``features``, ``token-image``, ``map``) is kept
whole.

Channels: a count N (N channels spread evenly over the output, from channel 0: every C/N-th of C; all of them where
there are N or fewer), a list of indices, ``"all"``, or ``"top:N"``: the N channels of highest activation energy
(mean square over the kept positions of batch item 0; ties to the lower index), listed in index order. Spread, not
the first N: an output that concatenates its input and its own work (DenseNet) or its branches (Inception) begins
with one part only. The chosen indices of a count or ``top:N`` are stored in the sidecar and reused by later runs
while they are as many as the count selects (:class:`StoredChannels`): a golden keeps its channels, also one made
when a count meant the first N. A layout of one picture has no channels to choose from: it keeps channel 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

import torch
from torch import nn

from pytest_featviz.layout import (
    LEAF_SEPARATOR,
    UNBATCHED,
    Hints,
    InputFacts,
    Layout,
    LayoutError,
    first_tensor,
    hints,
    pick,
    plan,
)

ChannelSpec = Union[int, Sequence[int], Literal["all"], str, "StoredChannels"]  # noqa: UP007 (runtime alias, 3.10)

TOP_PREFIX = "top:"


class ChannelsError(ValueError):
    """A channel selection that does not fit the layer it is applied to (an index out of range, an empty list)."""


@dataclass(frozen=True, slots=True)
class StoredChannels:
    """Channels recorded in a golden, reused while they fit the layer and are as many as ``fallback`` (a count or
    ``top:N``) selects; else ``fallback`` selects anew."""

    indices: tuple[int, ...]
    fallback: ChannelSpec

    def fit(self, count: int) -> bool:
        """Whether the stored indices serve a layer of ``count`` channels."""
        spec = self.fallback
        wanted = top_count(spec) if isinstance(spec, str) and spec.startswith(TOP_PREFIX) else spec
        if isinstance(wanted, int) and len(self.indices) != min(wanted, count):
            return False
        return bool(self.indices) and all(0 <= i < count for i in self.indices)


@dataclass(frozen=True, slots=True)
class Kept:
    """What a hook keeps of one output: the leaf's shape, the channels, the maps (float32, CPU) and the layout."""

    shape: tuple[int, ...]
    channels: tuple[int, ...]
    maps: torch.Tensor
    layout: str
    dtype: torch.dtype = torch.float32  # the leaf's own dtype, before its maps were made float32
    finite: bool = True  # whether every value of the whole leaf is finite, the channels and items not kept too


def select_channels(spec: ChannelSpec, count: int) -> tuple[int, ...]:
    """Resolve a channel spec (N spread over the layer, a list of indices, or ``"all"``) against ``count`` channels."""
    if isinstance(spec, StoredChannels):
        return spec.indices if spec.fit(count) else select_channels(spec.fallback, count)
    if isinstance(spec, str):
        if spec.startswith(TOP_PREFIX):  # without the activation, a spread is all there is to go on
            return spread(top_count(spec), count)
        if spec != "all":
            raise ChannelsError(f"channels must be an int, a list of indices, 'all' or 'top:N'; got {spec!r}")
        return tuple(range(count))
    if isinstance(spec, bool):
        raise ChannelsError(f"channels must be an int, a list of indices, 'all' or 'top:N'; got {spec!r}")
    if isinstance(spec, int):
        if spec < 1:
            raise ChannelsError(f"channels must be at least 1; got {spec}")
        return spread(spec, count)
    indices = tuple(int(i) for i in spec)
    if not indices:
        raise ChannelsError("channels is an empty list: select at least one channel")
    bad = [i for i in indices if not 0 <= i < count]
    if bad:
        raise ChannelsError(f"channel indices {bad} are out of range for a layer with {count} channels")
    if len(set(indices)) != len(indices):
        raise ChannelsError(f"channel indices repeat: {list(indices)}")
    return indices


def spread(wanted: int, count: int) -> tuple[int, ...]:
    """``wanted`` of ``count`` channels spread evenly from channel 0 (every ``count / wanted``-th); all of them where
    ``wanted`` is not less than ``count``."""
    if wanted >= count:
        return tuple(range(count))
    return tuple(i * count // wanted for i in range(wanted))


def top_count(spec: str) -> int:
    """N of a ``"top:N"`` spec; ``ValueError`` when it is not one."""
    text = spec[len(TOP_PREFIX) :] if spec.startswith(TOP_PREFIX) else ""
    if not text.strip().isdigit() or int(text) < 1:
        raise ValueError(f"channels 'top:N' needs a count N of at least 1; got {spec!r}")
    return int(text)


def _item(tensor: torch.Tensor, layout: Layout) -> torch.Tensor:
    """Batch item 0 of ``tensor`` (a view); an unbatched sequence whole."""
    if layout.batch_axis == UNBATCHED:
        return tensor.detach()
    return tensor.detach().select(layout.batch_axis, 0)


def _channel_view(item: torch.Tensor, layout: Layout) -> torch.Tensor:
    """Batch item 0 as (C, ...) with channels first, without copying (prefix tokens dropped)."""
    if layout.kind == "nhwc":
        return item.permute(2, 0, 1)
    if layout.kind == "tokens":
        return item[layout.prefix :].transpose(0, 1)
    return item


def energies(tensor: torch.Tensor, layout: Layout) -> list[float]:
    """Mean square activation of each channel of batch item 0 (computed where the tensor lives)."""
    view = _channel_view(_item(tensor, layout), layout)
    # float64 (where the device has it): the square of a float32 value above 1.8e19 overflows, and every such channel
    # would tie at inf
    wide = torch.float32 if view.device.type == "mps" else torch.float64
    energy = view.reshape(view.shape[0], -1).to(wide).square().mean(dim=1)
    return [float(e) for e in energy.cpu().tolist()]


def choose_channels(spec: ChannelSpec, tensor: torch.Tensor, layout: Layout) -> tuple[int, ...]:
    """The channels ``spec`` selects in ``tensor`` read with ``layout`` (``top:N`` ranks by energy)."""
    if isinstance(spec, StoredChannels):
        return spec.indices if spec.fit(layout.channels) else choose_channels(spec.fallback, tensor, layout)
    if layout.single_picture:  # one picture of the whole output: there are no channels to choose from
        return (0,)
    if isinstance(spec, str) and spec.startswith(TOP_PREFIX) and layout.channels > 1:
        count = min(top_count(spec), layout.channels)
        # NaN ranks first, so that a broken channel is kept and reported rather than hidden.
        ranked = sorted(
            enumerate(energies(tensor, layout)), key=lambda item: -(math.inf if math.isnan(item[1]) else item[1])
        )
        return tuple(sorted(index for index, _ in ranked[:count]))
    return select_channels(spec, layout.channels)


def extract(tensor: torch.Tensor, layout: Layout, channels: tuple[int, ...]) -> torch.Tensor:
    """Copy batch item 0 and ``channels`` of ``tensor`` to a new float32 CPU tensor of shape (k, H, W)."""
    item = _item(tensor, layout)
    if layout.kind == "features":
        return item.reshape(1, 1, -1).to(device="cpu", dtype=torch.float32, copy=True)
    if layout.kind in ("token-image", "map"):
        return item.reshape(1, item.shape[0], -1).to(device="cpu", dtype=torch.float32, copy=True)
    view = _channel_view(item, layout)
    if channels == tuple(range(channels[0], channels[0] + len(channels))):
        kept = view[channels[0] : channels[0] + len(channels)]
    else:
        kept = view.index_select(0, torch.tensor(channels, device=view.device))
    if layout.kind == "ncl":
        kept = kept.unsqueeze(1)
    elif layout.kind == "tokens":
        assert layout.grid is not None
        kept = kept.reshape(len(channels), *layout.grid)
    elif layout.kind == "ncthw":
        count, frames, height, width = kept.shape
        kept = kept.permute(0, 2, 1, 3).reshape(count, height, frames * width)
    # Only the kept channels travel to the CPU; the conversion to float32 happens there.
    return kept.to(device="cpu", copy=True).to(dtype=torch.float32)


def _later_leaf(leaf: str | None) -> bool:
    """Whether ``leaf`` names anything but a tuple output's first item (an RNN's states, attention weights)."""
    return leaf is not None and leaf.split(LEAF_SEPARATOR)[0] != "0"


# Outputs whose values a view reads: strided ones, and the nested (jagged) tensors torch gives them as.
_READ_LAYOUTS = (torch.strided, getattr(torch, "jagged", torch.strided))


def keep(
    output: Any,
    module: Hints | nn.Module | None,
    leaf: str | None,
    spec: ChannelSpec,
    *,
    facts: InputFacts = InputFacts(),  # noqa: B008 (frozen)
    layer: str = "",
) -> Kept:
    """What a hook keeps of ``output`` of ``module`` (or of a module with these hints): the leaf, its layout, its
    selected channels as maps. ``facts``: what the model's input tells (:func:`layout.input_facts`); ``layer``: the
    layer's name without its leaf, for the error naming the leaves there are (:func:`layout.pick`)."""
    tensor = pick(output, leaf, layer)
    if tensor.is_complex():  # float32 maps would keep the real part only, silently
        raise LayoutError(
            f"the output is complex ({tensor.dtype}); feature maps are real: snapshot a module that returns its"
            " magnitude or real part (.abs(), .real), or an earlier layer"
        )
    if tensor.layout not in _READ_LAYOUTS:  # sparse, mkldnn: never densified here (a graph's adjacency may not fit)
        stored = str(tensor.layout).removeprefix("torch.")
        raise LayoutError(
            f"the output is a {'sparse' if stored.startswith('sparse') else 'non-strided'} tensor ({stored}); feature"
            " maps are dense: snapshot a module that returns it dense (.to_dense()), or an earlier layer"
        )
    if tensor.is_meta:
        raise LayoutError("the output is on the meta device, which holds no values: run the model on a real device")
    found = module if isinstance(module, Hints) else hints(module)
    layout = leaf_layout(output, tensor, found, leaf, facts)
    channels = choose_channels(spec, tensor, layout)
    maps = extract(tensor, layout, channels)
    return Kept(tuple(tensor.shape), channels, maps, layout.label, tensor.dtype, _finite(tensor))


def leaf_layout(output: Any, tensor: torch.Tensor, found: Hints, leaf: str | None, facts: InputFacts) -> Layout:
    """The layout of ``tensor``, the ``leaf`` of ``output`` of a module with hints ``found``: a recurrent module's
    later leaves are its hidden states, an attention module's its weights (:func:`layout.plan`)."""
    later = _later_leaf(leaf)
    leading = (found.attention and later) or getattr(tensor, "featviz_leading", False)
    # nn.MultiheadAttention called with one (L, E) sequence returns (L, E), and its weights unbatched too
    unbatched = found.attention and later and (first := first_tensor(output)) is not None and first.dim() == 2
    return plan(
        tuple(tensor.shape),
        found,
        facts=facts,
        hidden=found.recurrent and later,
        leading=leading,
        unbatched=unbatched,
        weights=found.attention and later,
    )


def _finite(tensor: torch.Tensor) -> bool:
    """Whether every value of ``tensor`` is finite: its least and greatest values are (NaN reaches both), found in
    one pass with no copy of the tensor, as the maps kept of it are only a part."""
    if not tensor.is_floating_point() or tensor.numel() == 0 or tensor.is_sparse:
        return True
    data = tensor.detach()
    if data.element_size() == 1:  # float8: no aminmax of its own; as float16 (exact), half the bytes of a float32 copy
        data = data.to(torch.float16)
    try:
        low, high = torch.aminmax(data)
    except (RuntimeError, NotImplementedError):  # a dtype or device without aminmax: the kept maps were scanned
        return True
    return bool(torch.isfinite(low)) and bool(torch.isfinite(high))
