"""Output layouts: how one module output is read as channel maps ``(channels, height, width)`` (torch).

A hook hands :func:`pytest_featviz.channels.keep` the module and its output. The output's *leaf* is picked (see
below) and its *layout* is decided here, from its shape, the module's type and what the model's input tells
(:func:`input_facts`: the image's sides and batch size, or that there is no image); :mod:`pytest_featviz.channels`
then selects the channels and copies batch item 0's, at hook time, as the maps each layout below names. The layout
decision is a pure function of those, so it is the same on every run; its label is stored in the golden's sidecar.

Batch axis. Batch item 0 is taken from dimension 0 or, for some 3-D outputs, from dimension 1 (the label then says
``(batch axis 1)``):

* an RNN's hidden states (``lstm+1+0``: ``h_n`` is ``(layers, B, H)`` whatever ``batch_first`` says): dimension 1;
  attention weights (``attn+1``: ``(B, L, S)`` whatever ``batch_first`` says): dimension 0;
* when the input holds an image of batch size B and exactly one of dimensions 0 and 1 is B: that one (a DETR or
  CLIP model's ``(S, B, E)`` and ``(B, S, E)`` outputs told apart, whatever modules make them);
* else dimension 1 for the output of an RNN, ``nn.MultiheadAttention``, transformer layer or ``nn.Transformer`` of
  torch built with ``batch_first=False`` (the torch default), and of any module inside such a transformer module;
  dimension 0 for everything else, modules of your own around a sequence-first attention included (they may
  transpose around it).

Layouts (``label``: rule -> maps):

* ``nchw``: ``(B, C, H, W)`` -> C maps of H x W.
* ``nhwc``: ``(B, H, W, C)`` -> C maps of H x W. Taken when the module is not a convolution, norm or pooling layer
  and its last dimension is one of the module's feature sizes while its dimension 1 is not, or is too but the
  module certainly works on its last dimension (see :func:`own_hints`), or the module is a permute to channels
  last. What made the output tells first (:func:`_made_by`: a permute by its ``dims``, an ``nn.Sequential`` by its
  last module, an activation inside one by the module before it); a module that tells nothing else and holds
  convolutions but no ``Linear`` is channels first when dimension 1 is one of their channel counts and the last
  dimension is not (:attr:`Hints.channel_sizes`); any other, such as a reshape, takes the hints of its nearest
  ancestor that does. torchvision's Swin stages give ``(1, 56, 56, 96)``.
* ``tokens:P+HxW``: ``(B, N, C)`` from a module whose last dimension is a feature size (as above), in a model whose
  input holds an image (a tensor of 4 or more dimensions, or an array or picture), and whose ``N`` minus ``P``
  prefix tokens (class, register, distillation tokens; ``P`` from 0 to 8, the smallest that fits, and fewer than a
  grid row) is a square ``H x H`` with ``H >= 2`` and H dividing both sides of the image (patches cover the picture:
  a text tower's 128 tokens beside a 224 px image are no 11 x 11 grid) -> C maps of H x H, the prefix tokens
  dropped.
* ``token-image``: ``(B, N, C)`` from such a module when no square grid fits or the input holds no image (a text or
  sequence model: its tokens are no patches of a picture, and none is dropped), or from an RNN -> one map of N x C
  (token rows, channel columns; channel selection does not apply).
* ``map``: ``(B, H, W)`` whose ``H x W`` are the sides of the input's image, or both divided by one whole factor, from
  a module that is not channels first -> one map of H x W (a segmentation head's argmax mask, a depth map; channel
  selection does not apply).
* ``ncl``: any other ``(B, C, L)`` -> C maps of 1 x L.
* ``features``: ``(B, F)``, and a global pool's ``(B, C, 1, 1)``, ``(B, 1, 1, C)``, ``(B, C, 1)`` or
  ``(B, C, 1, 1, 1)`` -> one map of 1 x F (channel selection does not apply). Read as C maps of one value each, a
  pooled output was judged value by value, each in units of the layer's largest value (a flat map has no spread of
  its own): emulated TF32 rounding failed 25 of 36 pooled outputs of six random-init CNNs on three photos, against
  2 of 36 read as one vector.
* ``ncthw``: ``(B, C, T, H, W)`` video -> C maps of H x (T * W), the T frames side by side.

Nested tensors (``nn.TransformerEncoder``'s fast path with a padding mask) are read padded with zeros.

Leaves. A tuple, list, dict or namedtuple output is a tree; each tensor leaf has a *selector*, its path of keys
joined with ``+``: list/tuple positions (``lstm+0``, ``lstm+1+0`` for ``h_n`` of ``(output, (h_n, c_n))``), dict keys
(``model+out``, ``backbone.fpn+p3``) and namedtuple field names. A layer name without a selector takes the first
tensor leaf in that order; non-tensor leaves are skipped. ``+`` is safe in file names and means nothing to fnmatch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, is_dataclass, replace
from typing import Any, TypeGuard

import torch
from torch import nn
from torch.ao.nn import quantized

LEAF_SEPARATOR = "+"
UNBATCHED = -1  # Layout.batch_axis of an unbatched sequence: the whole output is item 0
MAX_PREFIX_TOKENS = 8

_CHANNELS_FIRST = (
    nn.modules.conv._ConvNd,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.GroupNorm,
    quantized.modules.conv._ConvNd,
)
# a Linear as quantization leaves it: ``quantize_dynamic``'s class (whose forward is its own) is no ``nn.Linear``
_LINEAR = (nn.Linear, quantized.Linear, quantized.dynamic.Linear)


class LayoutError(ValueError):
    """An output that cannot be rendered as channel maps, or a leaf selector that names nothing."""


@dataclass(frozen=True, slots=True)
class Layout:
    """How an output of one shape is read: its kind, channel count, spatial grid and dropped prefix tokens."""

    kind: str  # nchw, nhwc, tokens, token-image, map, ncl, features, ncthw
    channels: int
    grid: tuple[int, ...] | None  # (H, W) or (T, H, W) for spatial layouts and a global pool, else None
    prefix: int = 0
    batch_axis: int = 0  # 1 for a sequence-first (S, B, E) output and an RNN's hidden states; UNBATCHED: no batch

    @property
    def label(self) -> str:
        """The name stored in the sidecar, e.g. ``nhwc``, ``tokens:1+14x14`` or ``token-image (batch axis 1)``."""
        label = self.kind
        if self.kind == "tokens" and self.grid is not None:
            label = f"tokens:{self.prefix}+{self.grid[0]}x{self.grid[1]}"
        if self.batch_axis == UNBATCHED:
            return f"{label} (unbatched)"
        return label if self.batch_axis == 0 else f"{label} (batch axis {self.batch_axis})"

    @staticmethod
    def batch_axis_of(label: str) -> int:
        """The batch axis a :attr:`label` (as a sidecar stores it) names: 0, 1, ... or :data:`UNBATCHED`."""
        if label.endswith(" (unbatched)"):
            return UNBATCHED
        found = re.search(r" \(batch axis (\d+)\)$", label)
        return int(found.group(1)) if found else 0

    @staticmethod
    def kind_of(label: str) -> str:
        """The kind a :attr:`label` names (``token-image (batch axis 1)`` -> ``token-image``)."""
        return label.split(" ", 1)[0].split(":", 1)[0]

    @property
    def single_picture(self) -> bool:
        """Whether the layout renders the whole output as one picture (channel selection does not apply)."""
        return self.kind in ("features", "token-image", "map")


@dataclass(frozen=True, slots=True)
class Hints:
    """What a module says about its output: channels first (conv-like), feature sizes of its last dim, RNN."""

    channels_first: bool = False
    feature_sizes: frozenset[int] = frozenset()
    recurrent: bool = False
    attention: bool = False  # nn.MultiheadAttention: its weights leaf (attn+1) is (B, L, S) whatever batch_first says
    sequence_first: bool = False  # 3-D outputs are (S, B, E): see the module doc
    sequence: bool = False  # a torch RNN, attention or transformer module, or inside one: 2-D outputs are unbatched
    # when dimension 1 is a feature size too (a sequence as long as the model is wide, Swin's 96 x 96 x 96 at 384 px),
    # the last dimension is still the features: certainly (a Linear, a plain LayerNorm, torch's sequence modules), or
    # from a block of linear layers and attention with nothing channels first; see :func:`own_hints`
    last_when_tied: bool = False
    linear_block: bool = False
    # of a module holding token embeddings and no layer norm, attention, RNN or channels-first layer (a GPT whose norm
    # is F.layer_norm): the sizes that a 3-D output of a model without an image has last, (B, T, C)
    token_sizes: frozenset[int] = frozenset()
    # a permute to channels last (``Permute([0, 2, 3, 1])``): a 4-D output is (B, H, W, C) whatever its sizes
    channels_last: bool = False
    # of a module that tells nothing itself and holds channels-first layers but no Linear or Embedding (a block of
    # your own wrapping a Conv1d): their channel counts; an output whose dimension 1 is one of them and whose last
    # dimension is not is channels first, whatever the ancestors' hints say (see :func:`hints`)
    channel_sizes: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class InputFacts:
    """What a model's input tells about its outputs: the sides of its image (``()``: nothing tells, any token grid
    may be one; ``None``: the input holds no image, tokens are no picture) and the image's batch size."""

    image_sides: tuple[int, ...] | None = ()
    batch: int | None = None


def _sizes(modules: Sequence[nn.Module]) -> frozenset[int]:
    sizes: set[int] = set()
    for inner in modules:
        if isinstance(inner, nn.LayerNorm) and len(inner.normalized_shape) == 1:
            # over the last dimension alone; a LayerNorm([C, H, W]) of a map (a WGAN critic's) tells no feature size
            sizes.add(int(inner.normalized_shape[-1]))
        elif isinstance(inner, _LINEAR):
            sizes.add(int(inner.out_features))
        elif isinstance(inner, nn.Embedding):
            sizes.add(int(inner.embedding_dim))
        elif isinstance(inner, nn.MultiheadAttention):
            sizes.add(int(inner.embed_dim))
        elif isinstance(inner, nn.RNNBase):
            sizes.add(int(inner.hidden_size) * (2 if inner.bidirectional else 1))
    return frozenset(sizes)


def _plain(module: nn.Module, kinds: tuple[type[nn.Module], ...]) -> bool:
    """Whether ``module`` is one of ``kinds`` with its forward pass unchanged (ConvNeXt's ``LayerNorm2d`` overrides it
    to normalize channels first), a layer norm over one dimension."""
    if isinstance(module, nn.LayerNorm) and len(module.normalized_shape) != 1:
        return False
    return any(isinstance(module, kind) and type(module).forward is kind.forward for kind in kinds)


_LAST_ONLY = (*_LINEAR, nn.Embedding, nn.LayerNorm)

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


def _channels_last_only(module: nn.Module) -> bool:
    """Whether ``module``'s output certainly has its features last, even when its dimension 1 is a feature size too:
    a ``Linear``, ``Embedding`` or ``LayerNorm`` with its own forward pass, or an ``nn.Sequential`` whose last module
    (dropouts and identities passed over) is one, as a Swin's stem (a convolution, a permute, a layer norm) is."""
    if _plain(module, _LAST_ONLY):
        return True
    if isinstance(module, nn.Sequential):
        last = [m for m in module if not isinstance(m, PASS_THROUGH)]
        return bool(last) and _channels_last_only(last[-1])
    return False


def _linear_block(inner: Sequence[nn.Module]) -> bool:
    """Whether a module whose ``modules()`` are ``inner`` holds linear layers, attention or RNNs and nothing that works
    channels first (no convolution, norm or pooling layer, no layer norm with a forward pass of its own or over several
    dimensions): such a block (a GPT's, a Swin stage) gives ``(B, T, C)`` or ``(B, H, W, C)`` even when T or H equals
    one of its feature sizes. A module holding layer norms alone is not one: a channel norm written by hand permutes a
    map back to NCHW around its layer norm."""
    return not any(
        isinstance(m, _CHANNELS_FIRST) or (isinstance(m, nn.LayerNorm) and not _plain(m, (nn.LayerNorm,)))
        for m in inner
    ) and any(isinstance(m, (*_LINEAR, nn.MultiheadAttention, nn.RNNBase)) for m in inner)


# modules whose output has their input's layout: what made their input tells it (see :func:`_made_by`); the GLU is
# not one (it halves a dimension)
_ELEMENTWISE = (
    *PASS_THROUGH,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Sigmoid,
    nn.Tanh,
    nn.Softplus,
    nn.Softsign,
    nn.Tanhshrink,
    nn.Threshold,
    nn.Hardtanh,
    nn.Hardshrink,
    nn.Softshrink,
    nn.LogSigmoid,
    nn.Softmax,
    nn.LogSoftmax,
    nn.Softmin,
)
_TO_CHANNELS_LAST = (0, 2, 3, 1)
_TO_CHANNELS_FIRST = (0, 3, 1, 2)


def _permute_hints(module: nn.Module) -> Hints | None:
    """What a permute module of a map tells: a module named ``Permute`` (torchvision's, or one of your own) whose
    ``dims`` are ``[0, 2, 3, 1]`` makes a channels-last map, ``[0, 3, 1, 2]`` a channels-first one; ``None`` for
    any other module."""
    if type(module).__name__ != "Permute":
        return None
    dims = getattr(module, "dims", None)
    if not isinstance(dims, (list, tuple)) or not all(isinstance(d, int) for d in dims):
        return None
    if tuple(dims) == _TO_CHANNELS_LAST:
        return Hints(channels_last=True)
    return Hints(channels_first=True) if tuple(dims) == _TO_CHANNELS_FIRST else None


def _plain_sequential(module: nn.Module | None) -> TypeGuard[nn.Sequential]:
    """Whether ``module`` is an ``nn.Sequential`` with torch's forward pass: its output is its last module's."""
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def _own(module: nn.Module, cache: dict[int, Hints | None]) -> Hints | None:
    if id(module) not in cache:
        cache[id(module)] = own_hints(module)
    return cache[id(module)]


def _made_by(module: nn.Module, parent: nn.Module | None, cache: dict[int, Hints | None]) -> Hints | None:
    """What tells the layout of ``module``'s own output before its ancestors are asked (``None``: they are).

    A permute of a map tells by its ``dims`` (:func:`_permute_hints`). An ``nn.Sequential``'s output is its last
    module's, so that module tells it (ConvNeXt's ``block`` ends in a permute back to NCHW; a ``Sequential(Permute,
    Linear)`` makes the ``Linear``'s channels-last output). An activation, dropout or identity that tells nothing
    itself keeps its input's layout: inside an ``nn.Sequential``, the module before it tells (ConvNeXt's GELU
    between its two ``Linear`` layers). Else the module's own hints (:func:`own_hints`).
    """
    permuted = _permute_hints(module)
    if permuted is not None:
        return permuted
    if _plain_sequential(module) and len(module):
        made = _made_by(module[-1], module, cache)
        if made is not None:
            return made
    own = _own(module, cache)
    if own is None and _plain(module, _ELEMENTWISE) and _plain_sequential(parent):
        siblings = list(parent)
        positions = [i for i, sibling in enumerate(siblings) if sibling is module]
        if len(positions) == 1 and positions[0] > 0:  # one place: one module before it
            return _made_by(siblings[positions[0] - 1], parent, cache)
    return own


def _channel_sizes(module: nn.Module) -> frozenset[int]:
    """The channel counts of the convolutions and norms inside ``module`` (see :attr:`Hints.channel_sizes`); none
    when it also holds a ``Linear`` or an ``Embedding``, which may make tokens or a channels-last map of them (a
    hybrid's convolutional stem projected to its width) whose length may be a channel count too."""
    inner_modules = list(module.modules())
    if any(isinstance(inner, (*_LINEAR, nn.Embedding)) for inner in inner_modules):
        return frozenset()
    sizes: set[int] = set()
    for inner in inner_modules:
        if isinstance(inner, _CHANNELS_FIRST):
            for attribute in ("out_channels", "num_features", "num_channels"):
                value = getattr(inner, attribute, None)
                if isinstance(value, int):
                    sizes.add(value)
    return frozenset(sizes)


def own_hints(module: nn.Module) -> Hints | None:
    """What ``module`` itself tells, or ``None`` when it tells nothing (an activation, dropout, a reshape...).

    A convolution, norm or pooling layer is channels first. A ``Linear``, ``LayerNorm`` or ``Embedding`` gives its
    own size. A
    module holding a ``LayerNorm``, attention or RNN gives the sizes of every ``LayerNorm``, ``Linear``, attention
    and RNN inside it; one holding an ``Embedding`` and none of those, nor anything channels first, gives its sizes
    for the 3-D outputs of a model without an image (a GPT whose norm is ``F.layer_norm``). A module holding only
    ``Linear`` layers (a CNN's classifier head) tells nothing: a 4-D map
    whose width happens to equal a head's size must stay NCHW. Whether a tie (dimension 1 a feature size as well as
    the last) still reads the last dimension as features: :func:`_channels_last_only` and :func:`_linear_block`.
    """
    if isinstance(module, _CHANNELS_FIRST):
        return Hints(channels_first=True)
    if isinstance(module, (*_LINEAR, nn.LayerNorm, nn.Embedding)):
        return Hints(feature_sizes=_sizes([module]), last_when_tied=_channels_last_only(module))
    inner = list(module.modules())
    if any(isinstance(m, (nn.LayerNorm, nn.MultiheadAttention, nn.RNNBase)) for m in inner):
        return Hints(
            feature_sizes=_sizes(inner),
            recurrent=isinstance(module, nn.RNNBase),
            attention=isinstance(module, nn.MultiheadAttention),
            last_when_tied=_channels_last_only(module),
            linear_block=_linear_block(inner),
        )
    if any(isinstance(m, nn.Embedding) for m in inner) and not any(isinstance(m, _CHANNELS_FIRST) for m in inner):
        return Hints(token_sizes=_sizes(inner), linear_block=_linear_block(inner))
    return None


_TRANSFORMERS = (
    nn.Transformer,
    nn.TransformerEncoder,
    nn.TransformerDecoder,
    nn.TransformerEncoderLayer,
    nn.TransformerDecoderLayer,
)


def batch_first(module: nn.Module) -> bool | None:
    """``batch_first`` of an RNN, attention or transformer module of torch; ``None`` for any other module."""
    if isinstance(module, (nn.RNNBase, nn.MultiheadAttention, nn.Transformer)):
        return bool(module.batch_first)
    if isinstance(module, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)):
        return bool(module.self_attn.batch_first)
    if isinstance(module, (nn.TransformerEncoder, nn.TransformerDecoder)) and len(module.layers):
        return batch_first(module.layers[0])
    return None


def hints(
    module: nn.Module | None, ancestors: Sequence[nn.Module] = (), known: dict[int, Hints | None] | None = None
) -> Hints:
    """The layout hints of ``module``: what made its output (:func:`_made_by`), else those of its nearest ancestor
    that has any (nearest first), with the channel counts of the convolutions inside ``module`` when it tells
    nothing itself (:attr:`Hints.channel_sizes`: one of your own, or an ``nn.Sequential`` ending in such a module).

    Sequence first when the module is an RNN, attention or transformer module of torch built with
    ``batch_first=False``, or lies inside such a transformer module (its ``linear1``, ``norm2``): torch fixes the
    layout of their insides. A module of your own around a sequence-first attention tells nothing: it may transpose.
    ``known`` caches :func:`own_hints` by module id across calls on one model (a module's own hints walk its subtree).
    """
    cache: dict[int, Hints | None] = {} if known is None else known
    made = _made_by(module, ancestors[0] if ancestors else None, cache) if module is not None else None
    if made is not None:
        found = made
    else:  # the nearest ancestor that tells, with the channel counts of the convolutions inside the module
        found = next((own for own in (_own(a, cache) for a in ancestors) if own is not None), Hints())
        sizes = _channel_sizes(module) if module is not None else frozenset()
        found = replace(found, channel_sizes=sizes) if sizes else found
    told = batch_first(module) if module is not None else None
    if told is None:
        told = next((batch_first(a) for a in ancestors if isinstance(a, _TRANSFORMERS)), None)
    # torch's sequence modules and their insides compute on (..., E): the features are last in a tie too
    return found if told is None else replace(found, sequence=True, sequence_first=not told, last_when_tied=True)


def input_facts(inputs: Any) -> InputFacts:
    """What a model's input tells (:class:`InputFacts`): the first tensor of 4 or more dimensions is the image
    (``(B, C, H, W)``, ``(B, C, T, H, W)``), else an array or picture (anything with the array interface: a numpy
    array, a PIL image); an input with tensors but no image holds none (token ids, a ``(B, L, E)`` sequence); an
    input with neither (a path, a caption) tells nothing."""
    seen_tensor = False
    stack = [inputs]
    while stack:
        value = stack.pop(0)
        if isinstance(value, torch.Tensor):
            if value.dim() >= 4:
                return InputFacts(tuple(int(s) for s in value.shape[-2:]), int(value.shape[0]))
            seen_tensor = True
        elif isinstance(value, Mapping):
            stack.extend(value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend(value)
        else:
            interface = getattr(value, "__array_interface__", None)
            shape = tuple(interface.get("shape", ())) if isinstance(interface, dict) else ()
            if len(shape) >= 4:
                return InputFacts(tuple(int(s) for s in shape[-2:]), int(shape[0]))
            if len(shape) == 3:  # (H, W, C) as pictures and most arrays come, or (C, H, W)
                return InputFacts(tuple(int(s) for s in (shape[:2] if shape[2] <= 4 else shape[1:])))
            if len(shape) == 2:
                return InputFacts(tuple(int(s) for s in shape))
    return InputFacts(None) if seen_tensor else InputFacts()


def _square_grid(tokens: int, image_sides: tuple[int, ...]) -> tuple[int, int] | None:
    """The smallest prefix P and side H with ``tokens - P == H * H``, ``2 <= H``, ``P < H`` and H dividing each side
    of the image (a grid of patches covers the picture; ``image_sides`` empty: not known); ``None`` if none fits."""
    for prefix in range(min(MAX_PREFIX_TOKENS, tokens) + 1):
        side = math.isqrt(tokens - prefix)
        if side >= 2 and prefix < side and side * side == tokens - prefix:
            return (prefix, side) if all(length % side == 0 for length in image_sides) else None
    return None


def _image_map(sides: tuple[int, ...], image_sides: tuple[int, ...] | None) -> bool:
    """Whether ``sides`` (H, W) are the input image's, or those divided by one whole factor: the per-pixel map of a
    segmentation or depth head (an argmax mask), not C rows of length L."""
    if not image_sides or len(image_sides) != 2 or min(sides) < 2:
        return False
    factor = image_sides[0] // sides[0]
    return factor >= 1 and all(side * factor == whole for side, whole in zip(sides, image_sides, strict=True))


def plan(
    shape: Sequence[int],
    module_hints: Hints | None = None,
    *,
    facts: InputFacts = InputFacts(),  # noqa: B008 (frozen)
    hidden: bool = False,
    leading: bool = False,
    unbatched: bool = False,
    weights: bool = False,
) -> Layout:
    """The layout of an output of ``shape`` from a module with ``module_hints`` (see the module doc).

    ``facts``: what the model's input tells (:func:`input_facts`); ``hidden``: the output is an RNN's hidden state,
    batch on axis 1; ``leading``: the batch is known to lead (attention weights, a padded packed sequence);
    ``unbatched``: the module was called without a batch (an attention's per-head weights ``(heads, L, S)``);
    ``weights``: the output is an attention's weights, ``(B, L, S)`` one map of L x S an item, as the unbatched
    ``(L, S)`` is (their rows read as channels kept 16 of L, in strips).
    """
    shape = tuple(int(s) for s in shape)
    found = module_hints or Hints()
    if len(shape) == 2 and found.sequence:  # torch's sequence modules take one unbatched (L, E) sequence too
        return Layout("token-image", 1, None, batch_axis=UNBATCHED)
    if len(shape) == 3 and unbatched:  # every head a map of L x S: the heads were read as the batch, head 0 kept
        return Layout("nchw", shape[0], shape[1:], batch_axis=UNBATCHED)
    if len(shape) == 3 and weights and 0 not in shape:  # (B, L, S): batch item 0's L x S, every query
        return Layout("token-image", 1, None)
    if len(shape) == 3 and not leading:
        batch = facts.batch
        if hidden:
            second = True
        elif batch is not None and (shape[0] == batch) != (shape[1] == batch):
            second = shape[1] == batch  # the image's batch size tells the batch axis of (S, B, E) and (B, S, E)
        else:
            second = found.sequence_first
        if second:
            return replace(_plan((shape[1], shape[0], shape[2]), found, facts), batch_axis=1)
    return _plan(shape, found, facts)


def _plan(shape: tuple[int, ...], found: Hints, facts: InputFacts) -> Layout:
    if shape and shape[0] == 0:
        raise LayoutError(f"the output's batch is empty (shape {shape}); feature_snapshot keeps batch item 0")
    if 0 in shape:  # a detection head that found nothing (1, 0, 4), a map cropped away (1, 8, 0, 0)
        raise LayoutError(
            "the output holds no values: batch item 0 has nothing to picture; snapshot a layer (or"
            " an input) that gives it values"
        )
    # a module of your own wrapping convolutions: dimension 1 is one of their channel counts, the last is not
    sized_first = len(shape) >= 3 and shape[1] in found.channel_sizes and shape[-1] not in found.channel_sizes
    last_is_feature = (
        not found.channels_first
        and not sized_first
        and len(shape) >= 3
        and (
            (found.channels_last and len(shape) == 4)
            or (
                shape[-1] in found.feature_sizes
                and (shape[1] not in found.feature_sizes or found.last_when_tied or found.linear_block)
            )
        )
    )
    if len(shape) == 2:
        return Layout("features", 1, None)
    if len(shape) == 3:
        if found.recurrent:
            return Layout("token-image", 1, None)
        tokens = found.token_sizes
        text = facts.image_sides is None and not sized_first
        if text and shape[-1] in tokens and (shape[1] not in tokens or found.linear_block):
            return Layout("token-image", 1, None)  # a text model that tells its sizes by its embeddings only
        if last_is_feature:
            grid = _square_grid(shape[1], facts.image_sides) if facts.image_sides is not None else None
            if grid is None:
                return Layout("token-image", 1, None)
            return Layout("tokens", shape[2], (grid[1], grid[1]), grid[0])
        if _image_map(shape[1:], facts.image_sides) and not found.channels_first:
            return Layout("map", 1, shape[1:])  # a (B, H, W) mask or depth map of the image: one picture
        if shape[2] == 1:
            return Layout("features", 1, None)  # a global pool's (B, C, 1): one vector
        return Layout("ncl", shape[1], None)
    if len(shape) == 4:
        if (shape[1:3] if last_is_feature else shape[2:]) == (1, 1):
            # a global pool's (B, C, 1, 1): one vector, as its flattened (B, C); its 1 x 1 grid is still a spatial
            # grid to the default choice (stages.spatial_grid)
            return Layout("features", 1, (1, 1))
        if last_is_feature:
            return Layout("nhwc", shape[3], (shape[1], shape[2]))
        return Layout("nchw", shape[1], shape[2:])
    if len(shape) == 5:
        if shape[2:] == (1, 1, 1):
            return Layout("features", 1, (1, 1, 1))  # a video model's global pool (B, C, 1, 1, 1): one vector
        return Layout("ncthw", shape[1], shape[2:])
    raise LayoutError(
        f"an output of shape {shape} cannot be rendered as feature maps;"
        " expected (B, F), (B, C, L), (B, N, C), (B, C, H, W), (B, H, W, C) or (B, C, T, H, W)"
    )


def first_tensor(output: Any) -> torch.Tensor | None:
    """The first tensor leaf of a module output (tensor, tuple, list, dict, namedtuple), or ``None``."""
    return next((tensor for _, tensor in tensor_leaves(output)), None)


def tensor_leaves(output: Any, path: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor leaf of ``output`` with its selector (``""`` for a bare tensor), depth first, in order."""
    if isinstance(output, torch.Tensor):
        # a nested tensor (ragged batch) has no shape to read; its padded form does; a quantized one is read as the
        # real values it stands for
        if output.is_nested:
            output = output.to_padded_tensor(0.0)
        yield path, output.dequantize() if output.is_quantized else output
        return
    if isinstance(output, nn.utils.rnn.PackedSequence):  # an RNN's packed output: padded, (B, T, H)
        padded, _ = nn.utils.rnn.pad_packed_sequence(output, batch_first=True)
        padded.featviz_leading = True  # type: ignore[attr-defined]  # the batch leads, whatever batch_first says
        yield path, padded
        return
    if isinstance(output, dict):
        items: list[tuple[str, Any]] = [(str(key), value) for key, value in output.items()]
    elif isinstance(output, tuple) and hasattr(output, "_fields"):
        items = [(str(field), getattr(output, field)) for field in output._fields]
    elif isinstance(output, (tuple, list)):
        items = [(str(position), value) for position, value in enumerate(output)]
    elif is_dataclass(output) and not isinstance(output, type):  # by field, as a namedtuple
        items = [(field.name, getattr(output, field.name)) for field in fields(output)]
    else:
        return
    for key, value in items:
        yield from tensor_leaves(value, f"{path}{LEAF_SEPARATOR}{key}" if path else key)


def pick(output: Any, leaf: str | None, layer: str = "") -> torch.Tensor:
    """The tensor leaf of ``output`` named by ``leaf`` (a selector without the layer name; ``None``: the first).
    ``layer``: the name of the layer the output is of, which the error for an unknown leaf puts before each leaf it
    lists, so that they read as names to pass (``'lstm+0', 'lstm+1+0'``)."""
    leaves = list(tensor_leaves(output))
    if not leaves:
        raise LayoutError(f"the output is a {type(output).__name__}, which holds no tensor")
    if leaf is None:
        return leaves[0][1]
    for selector, tensor in leaves:
        if selector == leaf:
            return tensor
    known = ", ".join(repr(layer + LEAF_SEPARATOR + s) for s, _ in leaves if s) or "none: the output is a single tensor"
    raise LayoutError(f"the output has no leaf {LEAF_SEPARATOR + leaf!r}; its tensor leaves: {known}")
