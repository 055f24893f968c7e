"""Output layouts: what each output shape becomes as channel maps, batch axes, leaf selectors, input facts."""

from __future__ import annotations

import warnings
from collections import namedtuple
from dataclasses import dataclass, replace
from typing import Any

import pytest
import torch
from torch import nn

from pytest_featviz.channels import extract, keep
from pytest_featviz.layout import (
    UNBATCHED,
    Hints,
    InputFacts,
    Layout,
    LayoutError,
    hints,
    input_facts,
    pick,
    plan,
    tensor_leaves,
)

TOKENS = hints(nn.LayerNorm(8))  # a transformer block of width 8 tells: the last dimension is features
TEXT = InputFacts(image_sides=None)  # a model's input that holds no image


def ramp(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.arange(torch.Size(shape).numel(), dtype=torch.float64).reshape(shape).to(dtype)


def test_nhwc_output_of_a_layernorm_module_is_read_channels_last() -> None:
    output = ramp(1, 6, 6, 8)  # Swin-style (B, H, W, C)
    kept = keep(output, nn.LayerNorm(8), None, 3)
    assert kept.layout == "nhwc"
    assert kept.maps.shape == (3, 6, 6)
    assert kept.channels == (0, 2, 5)  # spread over the 8 channels
    assert torch.equal(kept.maps, output[0].permute(2, 0, 1)[[0, 2, 5]])


def test_the_same_shape_from_a_convolution_stays_nchw() -> None:
    assert plan((1, 6, 6, 8), hints(nn.Conv2d(3, 6, 1))).kind == "nchw"
    assert plan((1, 6, 6, 8)).kind == "nchw"  # nothing known of the module: NCHW


def test_a_classifier_head_does_not_turn_a_cnn_map_into_nhwc() -> None:
    # A ReLU inside a CNN whose head has 8 outputs, on 8 x 8 maps: Linear alone tells nothing.
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 8))
    assert plan((1, 4, 8, 8), hints(net[1], [net])).kind == "nchw"


class LayerNorm2d(nn.LayerNorm):
    """ConvNeXt's channels-first layer norm: a LayerNorm subclass whose output is (B, C, H, W)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class GPTBlock(nn.Module):
    """A text model's block of your own: layer norms and linear layers on (B, T, C)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm(x))


def test_a_sequence_as_long_as_the_model_is_wide_keeps_every_token() -> None:
    # (1, 32, 32): 32 tokens of width 32. Read as 32 channels of length 32, only the first 16 tokens were compared.
    text = InputFacts(None)
    layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
    assert plan((1, 32, 32), hints(layer), facts=text).label == "token-image"
    assert plan((1, 32, 32), hints(layer.linear2, [layer]), facts=text).label == "token-image"
    first = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0)  # (S, B, E)
    assert plan((32, 1, 32), hints(first), facts=text).label == "token-image (batch axis 1)"
    block = GPTBlock(64)  # 64 tokens, as wide as the block
    assert plan((1, 64, 64), hints(block), facts=text).label == "token-image"
    assert plan((1, 256, 256), hints(block.mlp[1], [block.mlp, block]), facts=text).label == "token-image"
    assert plan((1, 64, 64), hints(nn.Linear(8, 64)), facts=text).label == "token-image"
    # beside an image, the same block's 64 tokens are patches: an 8 x 8 grid
    assert plan((1, 64, 64), hints(block), facts=InputFacts((64, 64), 1)).label == "tokens:0+8x8"
    output = ramp(1, 32, 32)
    kept = keep(output, hints(layer), None, 16, facts=text)
    assert kept.maps.shape == (1, 32, 32) and torch.equal(kept.maps[0], output[0])  # all 32 tokens


class BareGPT(nn.Module):
    """A GPT whose layer norm is ``F.layer_norm``: embeddings and linear layers, nothing else that tells a size."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.wte = nn.Embedding(50, width)
        self.h = nn.ModuleList([nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))])


def test_a_text_model_that_tells_its_sizes_by_its_embeddings_keeps_every_token() -> None:
    """Its blocks hold linear layers only, which tell nothing: (1, 64, 32) was read as 64 channels of 32 values, and
    only the first 16 tokens were compared."""
    model = BareGPT()
    text = InputFacts(None)
    block = model.h[0]
    assert plan((1, 64, 32), hints(block, [model.h, model]), facts=text).label == "token-image"
    assert plan((1, 32, 32), hints(block, [model.h, model]), facts=text).label == "token-image"  # T == C
    # beside an image, the embeddings tell nothing: a module that tells nothing itself reads channels first...
    image = InputFacts((64, 64), 1)
    assert plan((1, 64, 32), hints(nn.Tanh(), [model.h, model]), facts=image).label == "ncl"
    # ...while the block, an nn.Sequential ending in a Linear, makes that Linear's output: its features are last
    assert plan((1, 64, 32), hints(block, [model.h, model]), facts=image).label == "tokens:0+8x8"
    # a text CNN (embeddings, then Conv1d over (B, E, L)) keeps its channels first
    cnn = nn.Sequential(nn.Embedding(50, 32), nn.Conv1d(32, 16, 3), nn.ReLU())
    assert plan((1, 16, 32), hints(cnn[2], [cnn]), facts=text).label == "ncl"


def test_a_channels_last_output_as_tall_as_it_is_wide_stays_channels_last_where_that_is_certain() -> None:
    # Swin at 384 px: (1, 96, 96, 96) from its stem, a convolution, a permute and a plain layer norm
    stem = nn.Sequential(nn.Conv2d(3, 96, 4, 4), nn.GELU(), nn.LayerNorm(96), nn.Dropout())
    assert plan((1, 96, 96, 96), hints(stem)).label == "nhwc"  # its output is the plain LayerNorm's
    assert plan((1, 96, 96, 96), hints(nn.Linear(8, 96))).label == "nhwc"
    # a stage of blocks holding layer norms and linear layers, no convolution: torchvision's Swin at 384 px
    stage = nn.Sequential(GPTBlock(96), GPTBlock(96))
    assert plan((1, 96, 96, 96), hints(stage), facts=InputFacts((384, 384), 1)).label == "nhwc"
    assert plan((1, 96, 96, 384), hints(stage[0].mlp[1], [stage[0].mlp, stage[0], stage])).label == "nhwc"


class ChannelNorm(nn.Module):
    """A layer norm over the channels of a (B, C, H, W) map written by hand: its output is channels first."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def test_a_channels_first_output_as_tall_as_it_is_wide_stays_nchw() -> None:
    """ConvNeXt's LayerNorm2d, a hand-written channel norm and a block holding a convolution, at (1, 32, 16, 32) and
    (1, 96, 96, 96): read channels last, the channels kept were columns of the map and a real change passed."""
    assert plan((1, 96, 96, 96), hints(LayerNorm2d(96))).label == "nchw"
    norm = ChannelNorm(32)
    assert plan((1, 32, 16, 32), hints(norm)).label == "nchw"
    assert plan((1, 32, 16, 32), hints(norm), facts=InputFacts((16, 32), 1)).label == "nchw"
    block = nn.Sequential(nn.Conv2d(96, 96, 7, padding=3, groups=96), LayerNorm2d(96), nn.Conv2d(96, 384, 1))
    assert plan((1, 96, 96, 96), hints(block)).label == "nchw"
    mixed = nn.Sequential(nn.Conv2d(96, 96, 1), nn.LayerNorm(96), nn.Linear(96, 96), nn.Conv2d(96, 96, 1))
    assert plan((1, 96, 96, 96), hints(mixed)).label == "nchw"
    # a text model's hand-written channel norm over (B, C, L): no linear layer, so no block of linear layers
    assert plan((1, 32, 32), hints(ChannelNorm(32)), facts=InputFacts(None)).label == "ncl"
    # a layer norm over a whole (C, H, W) map (a WGAN-GP critic's) tells no feature size: its W is no channel axis
    critic = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.LayerNorm([16, 32, 32]), nn.LeakyReLU())
    assert plan((1, 16, 32, 32), hints(critic[1], [critic])).label == "nchw"
    assert plan((1, 16, 32, 32), hints(critic[2], [critic])).label == "nchw"


def test_an_activation_inside_a_transformer_block_takes_its_parents_hints() -> None:
    block = nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 32), nn.GELU(), nn.Linear(32, 8))
    assert plan((1, 4, 4, 32), hints(block[2], [block])).label == "nhwc"


class Permute(nn.Module):
    """A permute module of your own, as torchvision's ``Permute``: a ``dims`` list."""

    def __init__(self, dims: list[int]) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(self.dims)


def test_a_convnext_block_is_channels_last_between_its_permutes_also_where_h_equals_c() -> None:
    """torchvision's CNBlock at 384 px: its permute and its GELU give (1, 96, 96, 96) and (1, 96, 96, 384), whose
    H is a feature size of the block too; they were read NCHW there (and NHWC at 64 px), so 16 of 96 rows of the map
    were kept as its channels."""
    from torchvision.models.convnext import CNBlock

    torch.manual_seed(0)
    cnblock = CNBlock(96, 1e-6, 0.0).eval()
    model = nn.Sequential(cnblock)
    names = dict(model.named_modules())
    seen: dict[str, torch.Tensor] = {}

    def keeper(name: str) -> Any:
        def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            seen[name] = output

        return hook

    for name in ("0.block", "0.block.1", "0.block.4", "0.block.6"):
        names[name].register_forward_hook(keeper(name))
    with torch.inference_mode():
        model(torch.randn(1, 96, 96, 96))

    def label(name: str) -> str:
        ancestors = [names[".".join(name.split(".")[:k])] for k in range(name.count("."), 0, -1)]
        return plan(seen[name].shape, hints(names[name], [*ancestors, model])).label

    assert [label(n) for n in ("0.block.1", "0.block.4", "0.block.6", "0.block")] == ["nhwc", "nhwc", "nchw", "nchw"]
    gelu = hints(names["0.block.4"], [names["0.block"], cnblock, model])
    kept = keep(seen["0.block.4"], gelu, None, 16)
    assert kept.maps.shape == (16, 96, 96)  # 16 of the 384 channels, each a 96 x 96 map
    assert torch.equal(kept.maps, seen["0.block.4"][0].permute(2, 0, 1)[list(kept.channels)])


def test_a_sequential_is_read_as_the_module_it_ends_in() -> None:
    # Sequential(Permute, Linear) in a CNN: channels last, like its Linear, also where H equals the Linear's width
    mix = nn.Sequential(Permute([0, 2, 3, 1]), nn.Linear(8, 12))
    cnn = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), mix)
    assert plan((1, 12, 12, 12), hints(mix, [cnn])).label == "nhwc"
    assert plan((1, 12, 12, 12), hints(mix[1], [mix, cnn])).label == "nhwc"
    assert plan((1, 12, 12, 8), hints(mix[0], [mix, cnn])).label == "nhwc"  # the permute to channels last
    assert plan((1, 8, 12, 12), hints(Permute([0, 3, 1, 2]), [cnn])).label == "nchw"
    assert plan((1, 12, 12, 8), hints(Permute([0, 1, 3, 2]), [cnn])).label == "nchw"  # no map permute: tells nothing
    # a Sequential with a forward of its own may not end in its last module: the old rules apply
    backwards = type("Backwards", (nn.Sequential,), {"forward": lambda self, x: self[0](x)})(
        nn.Conv2d(3, 8, 1), nn.Linear(8, 12)
    )
    assert plan((1, 12, 12, 12), hints(backwards, [cnn])).label == "nchw"


def test_an_activation_in_a_sequential_keeps_the_layout_of_the_module_before_it() -> None:
    head = nn.Sequential(nn.Conv2d(8, 8, 1), nn.GELU(), nn.Dropout(), Permute([0, 2, 3, 1]), nn.LayerNorm(8), nn.ReLU())
    block = nn.Sequential(nn.LayerNorm(8), head)  # its layer norm makes 8 a feature size around the head
    assert plan((1, 5, 12, 8), hints(head[1], [head, block])).label == "nchw"  # after the convolution
    assert plan((1, 5, 12, 8), hints(head[2], [head, block])).label == "nchw"  # after the GELU, after the convolution
    assert plan((1, 8, 8, 8), hints(head[5], [head, block])).label == "nhwc"  # after the layer norm
    # the same ReLU in two places has no one module before it: its ancestors tell, as before
    relu = nn.ReLU()
    twice = nn.Sequential(nn.Conv2d(8, 8, 1), relu, Permute([0, 2, 3, 1]), nn.Linear(8, 8), relu)
    assert plan((1, 5, 12, 8), hints(relu, [twice, block])).label == "nhwc"
    # a GLU halves a dimension, so it does not pass on the layout of what came before
    gated = nn.Sequential(nn.Conv2d(8, 16, 1), nn.GLU(dim=1))
    assert plan((1, 5, 12, 8), hints(gated[1], [gated, block])).label == "nhwc"


class ConvWrapper(nn.Module):
    """A block of your own around a Conv1d, and one that transposes (B, T, C) around it as a Conformer's does."""

    def __init__(self, transpose: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv1d(16, 16, 3, padding=1)
        self.transpose = transpose

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.transpose(1, 2)).transpose(1, 2) if self.transpose else self.conv(x)


def test_a_block_of_your_own_around_a_conv1d_stays_channels_first() -> None:
    """Under a model whose layer norm is as wide as the sequence is long, (1, 16, 64) was read as 16 tokens of width
    64 while the Conv1d inside gave the same tensor as 16 channels."""
    wrap, conformer = ConvWrapper(), ConvWrapper(transpose=True)
    model = nn.Sequential(wrap, conformer, nn.LayerNorm(64), nn.LayerNorm(16))
    assert plan((1, 16, 64), hints(wrap, [model]), facts=TEXT).label == "ncl"
    assert plan((1, 16, 64), hints(wrap.conv, [wrap, model]), facts=TEXT).label == "ncl"
    # dimension 1 no channel count of its convolution, or both ends one: the ancestors tell, as before
    assert plan((1, 64, 16), hints(conformer, [model]), facts=TEXT).label == "token-image"
    assert plan((1, 16, 16), hints(conformer, [model]), facts=TEXT).label == "token-image"
    assert plan((1, 64, 16), hints(ConvWrapper(transpose=True), [nn.LayerNorm(16)]), facts=TEXT).kind == "token-image"


class ConvStem(nn.Module):
    """A hybrid's convolutional stem: convolutions of 32 and 64 channels, then a Linear projecting to the width."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.Conv2d(32, 64, 3, 2, 1))
        self.proj = nn.Linear(64, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.convs(x).flatten(2).transpose(1, 2))


def test_a_stem_of_convolutions_projected_by_a_linear_is_not_read_by_their_channel_counts() -> None:
    """Its 64 tokens (8 x 8 at 32 px) of width 192, or its (1, 64, 64, 96) map, have 64 first as its last convolution
    has 64 channels: they were read as 64 channels of 1 x 192 (and 64 x 96) while its Linear read them right."""
    stem = ConvStem(192)
    model = nn.Sequential(stem, nn.LayerNorm(192))
    image = InputFacts((32, 32), 1)
    assert plan((1, 64, 192), hints(stem, [model]), facts=image).label == "tokens:0+8x8"
    assert plan((1, 64, 192), hints(stem.proj, [stem, model]), facts=image).label == "tokens:0+8x8"
    swin = nn.Sequential(ConvStem(96), nn.LayerNorm(96))
    assert plan((1, 64, 64, 96), hints(swin[0], [swin])).label == "nhwc"


@pytest.mark.parametrize(
    ("tokens", "prefix", "side"),
    [(16, 0, 4), (17, 1, 4), (18, 2, 4), (41, 5, 6), (197, 1, 14), (201, 5, 14)],
)
def test_patch_tokens_drop_the_prefix_and_lie_on_their_grid(tokens: int, prefix: int, side: int) -> None:
    output = ramp(1, tokens, 8)
    layout = plan(output.shape, TOKENS)
    assert layout.label == f"tokens:{prefix}+{side}x{side}"
    maps = extract(output, layout, (0, 5))
    assert maps.shape == (2, side, side)
    # channel 5 of the first patch token (just after the prefix), then of the token to its right
    assert maps[1, 0, 0] == output[0, prefix, 5]
    assert maps[1, 0, 1] == output[0, prefix + 1, 5]
    assert maps[1, side - 1, side - 1] == output[0, tokens - 1, 5]


@pytest.mark.parametrize("tokens", [7, 15, 21, 50 + 9])
def test_tokens_without_a_square_grid_become_one_token_by_channel_image(tokens: int) -> None:
    output = ramp(1, tokens, 8)
    kept = keep(output, TOKENS, None, 16)
    assert kept.layout == "token-image"
    assert kept.channels == (0,)
    assert kept.maps.shape == (1, tokens, 8)
    assert torch.equal(kept.maps[0], output[0])


def test_an_rnn_sequence_is_a_token_by_channel_image_even_with_a_square_length() -> None:
    lstm = nn.LSTM(4, 8, batch_first=True)
    output, _ = lstm(torch.randn(1, 16, 4))
    kept = keep(output, lstm, None, 16)
    assert kept.layout == "token-image"
    assert kept.maps.shape == (1, 16, 8)


def test_features_and_sequences() -> None:
    features = keep(ramp(2, 10), nn.Linear(3, 10), None, 16)
    assert (features.layout, features.channels, tuple(features.maps.shape)) == ("features", (0,), (1, 1, 10))
    sequence = keep(ramp(1, 6, 9), nn.Conv1d(3, 6, 1), None, 4)
    assert (sequence.layout, sequence.channels, tuple(sequence.maps.shape)) == ("ncl", (0, 1, 3, 4), (4, 1, 9))


@pytest.mark.parametrize(
    ("output", "module"),
    [
        (ramp(2, 12, 1, 1), nn.AdaptiveAvgPool2d(1)),  # a CNN's global pool before its classifier
        (ramp(2, 1, 1, 12), nn.LayerNorm(12)),  # the same, channels last
        (ramp(2, 12, 1), nn.AdaptiveAvgPool1d(1)),  # a sequence model's global pool
        (ramp(2, 12, 1, 1, 1), nn.AdaptiveAvgPool3d(1)),  # a video model's
    ],
    ids=["nchw", "nhwc", "ncl", "ncthw"],
)
def test_a_global_pools_output_is_one_vector(output: torch.Tensor, module: nn.Module) -> None:
    """Read as 12 maps of one value each, a pooled output was judged value by value in units of the layer's largest
    value: TF32 rounding alone failed most pooled layers of random-init CNNs. It is one vector, as its flattened
    (B, C) is: one picture of 1 x C, every channel in it."""
    kept = keep(output, module, None, 4)
    assert (kept.layout, kept.channels, tuple(kept.maps.shape)) == ("features", (0,), (1, 1, 12))
    assert torch.equal(kept.maps.flatten(), output[0].flatten())
    # a map of one row or one column is still a map of channels
    assert keep(ramp(2, 12, 1, 5), nn.Conv2d(3, 12, 1), None, 4).layout == "nchw"


def test_the_default_choice_still_sees_a_global_pool_as_a_1x1_grid() -> None:
    from pytest_featviz.stages import spatial_grid

    assert spatial_grid((1, 12, 1, 1), hints(nn.AdaptiveAvgPool2d(1))) == (1, 1)
    assert spatial_grid((1, 12, 1, 1, 1), hints(nn.AdaptiveAvgPool3d(1))) == (1, 1, 1)
    assert spatial_grid((1, 12, 7, 7), hints(nn.Conv2d(3, 12, 1))) == (7, 7)
    assert spatial_grid((1, 12), hints(nn.Linear(3, 12))) is None


@pytest.mark.parametrize(("shape", "image"), [((1, 64, 48), (64, 48)), ((2, 16, 12), (64, 48))])
def test_a_mask_of_the_image_is_one_picture(shape: tuple[int, ...], image: tuple[int, int]) -> None:
    # an argmax mask (B, H, W) was read as H channels of 1 x W rows: 16 rows of 64 compared, the rest never
    output = ramp(*shape).long()
    facts = InputFacts(image, shape[0])
    kept = keep(output, nn.Identity(), None, 16, facts=facts)
    assert (kept.layout, kept.channels, tuple(kept.maps.shape)) == ("map", (0,), (1, *shape[1:]))
    assert torch.equal(kept.maps[0], output[0].float())


@pytest.mark.parametrize(
    ("shape", "image", "module"),
    [((1, 6, 64), (64, 64), nn.Identity()), ((1, 64, 64), (64, 64), nn.Conv1d(3, 64, 1)), ((1, 8, 8), (), None)],
)
def test_rows_that_are_no_map_of_the_image_stay_ncl(
    shape: tuple[int, ...], image: tuple[int, ...], module: nn.Module | None
) -> None:
    # not the image's sides at one scale, a convolution's channels, or beside no image
    assert plan(shape, hints(module) if module else None, facts=InputFacts(image, 1)).kind == "ncl"


def test_video_frames_lie_side_by_side() -> None:
    output = ramp(1, 3, 4, 2, 5)  # (B, C, T, H, W)
    kept = keep(output, nn.Conv3d(1, 3, 1), None, [2])
    assert kept.layout == "ncthw"
    assert kept.maps.shape == (1, 2, 4 * 5)
    for frame in range(4):
        assert torch.equal(kept.maps[0, :, frame * 5 : (frame + 1) * 5], output[0, 2, frame].float())


def test_an_output_of_six_dimensions_is_refused_with_the_shapes_that_work() -> None:
    with pytest.raises(LayoutError, match=r"\(1, 2, 3, 4, 5, 6\) cannot be rendered.*\(B, H, W, C\)"):
        plan((1, 2, 3, 4, 5, 6))


def test_leaves_of_nested_outputs_have_selectors_and_skip_non_tensors() -> None:
    pair = namedtuple("pair", ["logits", "hidden"])
    output = {"out": torch.zeros(1, 2), "aux": [None, "text", pair(torch.ones(1, 3), (torch.ones(1, 4), 5))]}
    selectors = [(s, tuple(t.shape)) for s, t in tensor_leaves(output)]
    assert selectors == [("out", (1, 2)), ("aux+2+logits", (1, 3)), ("aux+2+hidden+0", (1, 4))]
    assert pick(output, None).shape == (1, 2)  # no selector: the first tensor leaf
    assert pick(output, "aux+2+hidden+0").shape == (1, 4)


def test_a_dataclass_output_has_its_fields_as_leaves_and_quantized_ones_read_as_values() -> None:
    """A dataclass output failed with "returned Out, which holds no tensor", and a quantized model's output with
    torch's "Creation of quantized tensor requires quantized dtype" from inside the plugin."""

    @dataclass
    class Out:
        logits: torch.Tensor
        note: str

    values = torch.linspace(-1.0, 1.0, 8).reshape(1, 2, 2, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's notice that quantized tensors move to torchao
        quantized = torch.quantize_per_tensor(values, scale=0.1, zero_point=10, dtype=torch.quint8)
    leaves = list(tensor_leaves(Out(quantized, "x")))
    assert [selector for selector, _ in leaves] == ["logits"]
    assert torch.equal(leaves[0][1], quantized.dequantize())
    kept = keep(quantized, None, None, 2)
    assert torch.equal(kept.maps, quantized.dequantize()[0])


def test_an_unknown_leaf_lists_the_leaves_there_are() -> None:
    with pytest.raises(LayoutError, match=r"no leaf '\+aux'; its tensor leaves: '\+out', '\+0'"):
        pick({"out": torch.zeros(1), "0": torch.zeros(1)}, "aux")
    with pytest.raises(LayoutError, match="holds no tensor"):
        pick((None, 3), None)


def test_the_layout_decision_is_a_function_of_shape_and_module_only() -> None:
    first = plan((1, 197, 8), hints(nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 8))))
    second = plan((1, 197, 8), Hints(feature_sizes=frozenset({8})))
    assert first == second and first.label == "tokens:1+14x14"


# -- sequence-first outputs, RNN hidden states, sequence models, nested tensors ------------------------------------


def test_sequence_first_transformer_output_keeps_item_zero_of_every_token() -> None:
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0)  # batch_first=False: (S, B, E)
    output = ramp(12, 2, 8)
    kept = keep(output, hints(layer.linear2, [layer]), None, "all")
    assert kept.layout == "token-image (batch axis 1)"
    assert kept.maps.shape == (1, 12, 8)
    assert torch.equal(kept.maps[0], output[:, 0])  # all 12 tokens of batch item 0, not token 0 of both items


class Transposing(nn.Module):
    """A block of your own that takes (B, N, E) and transposes around its sequence-first attention."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2)
        self.mlp = nn.Sequential(nn.Linear(8, 8), nn.GELU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.transpose(0, 1)
        x = x + self.attn(y, y, y)[0].transpose(0, 1)
        return x + self.mlp(x)


def test_only_torchs_own_sequence_modules_and_their_insides_are_sequence_first() -> None:
    block = Transposing()
    assert hints(block.attn, [block]).sequence_first  # the attention itself: torch says (S, B, E)
    assert not hints(block.mlp[1], [block.mlp, block]).sequence_first  # a block of your own may transpose
    assert not hints(block).sequence_first
    assert not hints(nn.MultiheadAttention(8, 2, batch_first=True)).sequence_first
    layer = nn.TransformerEncoderLayer(8, 2, 16)
    assert hints(layer.norm1, [layer]).sequence_first  # inside torch's layer, torch fixes the layout


def test_a_batch_first_block_around_sequence_first_attention_keeps_item_zero() -> None:
    block = Transposing()
    output = ramp(3, 6, 8)  # (B=3, N=6, E)
    kept = keep(output, hints(block.mlp[1], [block.mlp, block]), None, "all")
    assert kept.layout == "token-image" and torch.equal(kept.maps[0], output[0])


def test_the_images_batch_size_tells_the_batch_axis() -> None:
    facts = InputFacts((32, 32), 3)  # a batch of 3 pictures
    sequence_first = ramp(10, 3, 8)  # DETR's encoder: (S, B, E), from a module of your own
    kept = keep(sequence_first, TOKENS, None, "all", facts=facts)
    assert kept.layout == "token-image (batch axis 1)" and torch.equal(kept.maps[0], sequence_first[:, 0])
    heads = ramp(3, 10, 8)  # DETR's heads after hs.transpose(0, 1): (B, Q, E), though inside nothing tells
    kept = keep(heads, replace(TOKENS, sequence_first=True), None, "all", facts=facts)
    assert kept.layout == "token-image" and torch.equal(kept.maps[0], heads[0])
    # when both or neither dimension is the batch size, the modules tell
    assert keep(ramp(3, 3, 8), replace(TOKENS, sequence_first=True), None, "all", facts=facts).layout.endswith(
        "(batch axis 1)"
    )


def test_attention_weights_are_batch_first_whatever_the_attention_says() -> None:
    torch.manual_seed(0)
    attn = nn.MultiheadAttention(8, 2).eval()  # batch_first=False
    x = torch.randn(6, 3, 8)  # (L, B, E)
    with torch.no_grad():
        output = attn(x, x, x)
    values = keep(output, hints(attn), None, "all")
    assert values.layout == "token-image (batch axis 1)" and torch.equal(values.maps[0], output[0][:, 0])
    weights = keep(output, hints(attn), "1", "all")  # (B, L, S): batch item 0, one map of L x S
    assert weights.layout == "token-image" and torch.equal(weights.maps[0], output[1][0])


@pytest.mark.parametrize("batch_first", [False, True])
def test_rnn_output_and_hidden_states_keep_batch_item_zero(batch_first: bool) -> None:
    torch.manual_seed(0)
    lstm = nn.LSTM(3, 4, num_layers=2, batch_first=batch_first).eval()
    steps = torch.randn(5, 2, 3)  # (T, B, F)
    x = steps.transpose(0, 1).contiguous() if batch_first else steps
    with torch.no_grad():
        output = lstm(x)
        sequence, (h_n, _) = output
    kept = keep(output, lstm, None, 16)
    expected = sequence[0] if batch_first else sequence[:, 0]
    assert kept.maps.shape == (1, 5, 4) and torch.equal(kept.maps[0], expected)
    assert kept.layout == ("token-image" if batch_first else "token-image (batch axis 1)")
    hidden = keep(output, lstm, "1+0", 16)  # h_n is (layers, B, H) whatever batch_first says
    assert hidden.layout == "token-image (batch axis 1)"
    assert hidden.maps.shape == (1, 2, 4) and torch.equal(hidden.maps[0], h_n[:, 0])


def test_tokens_are_a_picture_grid_only_beside_an_image_the_grid_divides() -> None:
    output = ramp(1, 128, 8)  # 128 = 7 + 11 x 11
    assert keep(output, TOKENS, None, "all").layout == "tokens:7+11x11"  # nothing known of the input
    assert keep(output, TOKENS, None, "all", facts=InputFacts((33, 66), 1)).layout == "tokens:7+11x11"
    for facts in (InputFacts(None), InputFacts((224, 224), 1)):  # a text model; a text tower beside a 224 px picture
        text = keep(output, TOKENS, None, "all", facts=facts)
        assert text.layout == "token-image"
        assert torch.equal(text.maps[0], output[0])  # every token kept, the first ones included
    vit = ramp(1, 197, 8)  # ViT-B/16 at 224 px: 1 + 14 x 14
    assert keep(vit, TOKENS, None, 2, facts=InputFacts((224, 224), 1)).layout == "tokens:1+14x14"


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        (torch.zeros(2, 3, 8, 12), InputFacts((8, 12), 2)),
        (torch.zeros(1, 3, 2, 8, 8), InputFacts((8, 8), 1)),
        ((torch.zeros(1, 5, dtype=torch.long), torch.zeros(4, 3, 8, 8, dtype=torch.uint8)), InputFacts((8, 8), 4)),
        (torch.zeros(1, 128, dtype=torch.long), InputFacts(None)),  # token ids
        ({"input_ids": torch.zeros(1, 9, dtype=torch.long), "mask": torch.ones(1, 9)}, InputFacts(None)),
        (torch.zeros(1, 128, 8), InputFacts(None)),  # an embedded sequence
        ("a photo of a cat", InputFacts()),  # nothing tells: any grid may be one
    ],
)
def test_input_facts_tell_pictures_from_sequences(inputs: object, expected: InputFacts) -> None:
    assert input_facts(inputs) == expected


def test_input_facts_read_arrays_and_pictures_by_their_array_interface() -> None:
    import numpy as np
    from PIL import Image

    assert input_facts(Image.new("RGB", (6, 4))) == InputFacts((4, 6))
    assert input_facts(np.zeros((4, 5, 3), np.uint8)) == InputFacts((4, 5))
    assert input_facts(np.zeros((2, 3, 4, 5), np.float32)) == InputFacts((4, 5), 2)


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors is in prototype stage")
def test_a_nested_tensor_is_read_padded() -> None:
    nested = torch.nested.nested_tensor([torch.ones(3, 8), torch.ones(2, 8)])
    (leaf,) = [tensor for _, tensor in tensor_leaves(nested)]
    assert leaf.shape == (2, 3, 8) and leaf[1, 2].abs().sum() == 0
    assert keep(nested, TOKENS, None, "all", facts=InputFacts(None)).maps.shape == (1, 3, 8)


def test_an_empty_batch_is_a_clear_error() -> None:
    with pytest.raises(LayoutError, match=r"the output's batch is empty \(shape \(0, 4, 2, 2\)\)"):
        keep(torch.zeros(0, 4, 2, 2), nn.Conv2d(4, 4, 1), None, 2)


@pytest.mark.parametrize("shape", [(1, 0, 4), (1, 0, 2, 2), (1, 4, 0, 0), (1, 4, 3, 0)])
def test_an_output_with_no_values_is_a_clear_error(shape: tuple[int, ...]) -> None:
    """A detection head that found no box, a map cropped to nothing: an IndexError or a numpy reduction error."""
    with pytest.raises(LayoutError, match="the output holds no values: batch item 0 has nothing to picture"):
        keep(torch.zeros(shape), nn.Identity(), None, 2)


def test_an_unbatched_sequence_of_torchs_sequence_modules_is_kept_whole() -> None:
    torch.manual_seed(0)
    lstm = nn.LSTM(6, 12).eval()
    layer = nn.TransformerEncoderLayer(12, 2, 24, batch_first=True).eval()
    steps = torch.randn(10, 6)  # one sequence, no batch: torch takes it
    with torch.no_grad():
        output = lstm(steps)
        encoded = layer(output[0])
    kept = keep(output, lstm, None, 16)
    assert kept.layout == "token-image (unbatched)" and torch.equal(kept.maps[0], output[0])  # every step
    assert keep(output, lstm, "1+0", 16).layout == "token-image (unbatched)"  # h_n: (layers, H)
    inside = keep(encoded, hints(layer.norm2, [layer]), None, 16)
    assert inside.layout == "token-image (unbatched)" and inside.maps.shape == (1, 10, 12)
    assert keep(torch.zeros(1, 12), nn.Linear(6, 12), None, 16).layout == "features"  # (B, F) elsewhere


def test_the_per_head_weights_of_an_unbatched_attention_are_every_head() -> None:
    # (heads, L, S) read as a batch of heads kept head 0 alone: a change to the other heads passed
    torch.manual_seed(0)
    attention = nn.MultiheadAttention(16, 4).eval()
    with torch.no_grad():
        unbatched = attention(*[torch.randn(10, 16)] * 3, need_weights=True, average_attn_weights=False)
        batched = attention(*[torch.randn(10, 2, 16)] * 3, need_weights=True, average_attn_weights=False)
    kept = keep(unbatched, attention, "1", "all")
    assert kept.layout == "nchw (unbatched)" and kept.channels == (0, 1, 2, 3)
    assert torch.equal(kept.maps, unbatched[1])
    assert keep(batched, attention, "1", "all").layout == "nchw"  # (B, heads, L, S): batch item 0, every head
    averaged = attention(*[torch.randn(10, 16)] * 3, need_weights=True)
    assert keep(averaged, attention, "1", 16).layout == "token-image (unbatched)"  # (L, S)


@pytest.mark.parametrize("batch_first", [False, True])
def test_the_averaged_weights_of_a_batched_attention_are_one_map_of_every_query(batch_first: bool) -> None:
    # (B, L, S) was read as L channels of strips: 16 of 20 queries kept, the others never compared
    torch.manual_seed(0)
    attention = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
    sequence = torch.randn(3, 20, 16) if batch_first else torch.randn(20, 3, 16)
    with torch.no_grad():
        output = attention(*[sequence] * 3, need_weights=True)
    kept = keep(output, attention, "1", 16)
    assert kept.layout == "token-image" and kept.channels == (0,)
    assert torch.equal(kept.maps[0], output[1][0])  # batch item 0's 20 x 20, whatever batch_first says


def test_a_packed_rnn_output_is_read_padded_batch_first() -> None:
    from torch.nn.utils.rnn import pack_padded_sequence

    torch.manual_seed(0)
    for batch_first in (False, True):
        lstm = nn.LSTM(4, 8, batch_first=batch_first).eval()
        padded = torch.randn(3, 12, 4)  # (B, T, F)
        packed = pack_padded_sequence(padded, [12, 9, 5], batch_first=True)
        with torch.no_grad():
            output = lstm(packed)
        kept = keep(output, lstm, None, 16)
        assert kept.layout == "token-image" and kept.maps.shape == (1, 12, 8)  # every step of item 0, not row 0


@pytest.mark.parametrize(
    ("label", "axis"),
    [("nchw", 0), ("tokens:1+14x14", 0), ("token-image (batch axis 1)", 1), ("token-image (unbatched)", UNBATCHED)],
)
def test_the_batch_axis_is_read_back_from_a_stored_label(label: str, axis: int) -> None:
    assert Layout.batch_axis_of(label) == axis


def test_a_dynamically_quantized_linear_tells_its_size_as_a_linear_does() -> None:
    """``quantize_dynamic`` swaps each ``nn.Linear`` for a class that is no ``nn.Linear``: its (B, T, F) output was
    read as ``ncl``, 16 of its T token rows compared, and a change in other tokens went unseen."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's notice that quantization moves to torchao
        model = torch.ao.quantization.quantize_dynamic(
            nn.Sequential(nn.Linear(32, 48), nn.ReLU(), nn.Linear(48, 40)), {nn.Linear}, dtype=torch.qint8
        )
    assert plan((1, 10, 40), hints(model[2]), facts=TEXT).kind == "token-image"
    # tied: ten tokens of width 10 from a Linear are still tokens by features, as they are from nn.Linear
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tied = torch.ao.quantization.quantize_dynamic(nn.Sequential(nn.Linear(4, 10)), {nn.Linear})
    assert plan((1, 10, 10), hints(tied[0]), facts=TEXT).kind == "token-image"
    assert plan((1, 10, 10), hints(nn.Linear(4, 10)), facts=TEXT).kind == "token-image"
    # an activation between them reads as it does between plain Linears
    plain = nn.Sequential(nn.Linear(32, 48), nn.ReLU(), nn.Linear(48, 40))
    assert plan((1, 10, 48), hints(model[1], [model]), facts=TEXT) == plan(
        (1, 10, 48), hints(plain[1], [plain]), facts=TEXT
    )


def test_a_quantized_convolution_is_channels_first_as_a_convolution_is() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        conv = torch.ao.nn.quantized.Conv2d(3, 6, 1)
    # inside a block with a LayerNorm of width 8, a (1, 6, 6, 8) map of the convolution is still NCHW
    assert plan((1, 6, 6, 8), hints(conv, [nn.Sequential(conv, nn.LayerNorm(8))])).kind == "nchw"
