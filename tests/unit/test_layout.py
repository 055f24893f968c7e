"""Output layouts: what each output shape becomes as channel maps, leaf selectors, dtypes, and top:N channels."""

from __future__ import annotations

from collections import namedtuple

import pytest
import torch
from torch import nn

from pytest_featviz.layout import (
    Hints,
    LayoutError,
    StoredChannels,
    choose_channels,
    extract,
    hints,
    keep,
    pick,
    plan,
    tensor_leaves,
)

TOKENS = hints(nn.LayerNorm(8))  # a transformer block of width 8 tells: the last dimension is features


def ramp(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.arange(torch.Size(shape).numel(), dtype=torch.float64).reshape(shape).to(dtype)


def test_nchw_keeps_batch_item_zero_and_the_selected_channels() -> None:
    output = ramp(2, 4, 3, 5)
    kept = keep(output, nn.Conv2d(1, 4, 1), None, [1, 3])
    assert kept.layout == "nchw"
    assert kept.shape == (2, 4, 3, 5)
    assert kept.channels == (1, 3)
    assert kept.maps.dtype == torch.float32 and kept.maps.device.type == "cpu"
    assert torch.equal(kept.maps, output[0, [1, 3]])


def test_nhwc_output_of_a_layernorm_module_is_read_channels_last() -> None:
    output = ramp(1, 6, 6, 8)  # Swin-style (B, H, W, C)
    kept = keep(output, nn.LayerNorm(8), None, 3)
    assert kept.layout == "nhwc"
    assert kept.maps.shape == (3, 6, 6)
    assert torch.equal(kept.maps, output[0].permute(2, 0, 1)[:3])


def test_the_same_shape_from_a_convolution_stays_nchw() -> None:
    assert plan((1, 6, 6, 8), hints(nn.Conv2d(3, 6, 1))).kind == "nchw"
    assert plan((1, 6, 6, 8)).kind == "nchw"  # nothing known of the module: NCHW


def test_a_classifier_head_does_not_turn_a_cnn_map_into_nhwc() -> None:
    # A ReLU inside a CNN whose head has 8 outputs, on 8 x 8 maps: Linear alone tells nothing.
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 8))
    assert plan((1, 4, 8, 8), hints(net[1], [net])).kind == "nchw"


def test_an_activation_inside_a_transformer_block_takes_its_parents_hints() -> None:
    block = nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 32), nn.GELU(), nn.Linear(32, 8))
    assert plan((1, 4, 4, 32), hints(block[2], [block])).label == "nhwc"


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
    assert (sequence.layout, sequence.channels, tuple(sequence.maps.shape)) == ("ncl", (0, 1, 2, 3), (4, 1, 9))


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


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_half_and_double_activations_become_float32_maps(dtype: torch.dtype) -> None:
    output = (torch.randn(1, 4, 6, 6) * 3).to(dtype)
    kept = keep(output, None, None, "all")
    assert kept.maps.dtype == torch.float32
    assert torch.equal(kept.maps, output[0].float())


def test_leaves_of_nested_outputs_have_selectors_and_skip_non_tensors() -> None:
    pair = namedtuple("pair", ["logits", "hidden"])
    output = {"out": torch.zeros(1, 2), "aux": [None, "text", pair(torch.ones(1, 3), (torch.ones(1, 4), 5))]}
    selectors = [(s, tuple(t.shape)) for s, t in tensor_leaves(output)]
    assert selectors == [("out", (1, 2)), ("aux+2+logits", (1, 3)), ("aux+2+hidden+0", (1, 4))]
    assert pick(output, None).shape == (1, 2)  # no selector: the first tensor leaf
    assert pick(output, "aux+2+hidden+0").shape == (1, 4)


def test_an_unknown_leaf_lists_the_leaves_there_are() -> None:
    with pytest.raises(LayoutError, match=r"no leaf '\+aux'; its tensor leaves: '\+out', '\+0'"):
        pick({"out": torch.zeros(1), "0": torch.zeros(1)}, "aux")
    with pytest.raises(LayoutError, match="holds no tensor"):
        pick((None, 3), None)


def test_top_channels_are_those_of_highest_energy_in_index_order() -> None:
    output = torch.zeros(1, 6, 4, 4)
    for channel, scale in [(1, 5.0), (4, -9.0), (5, 2.0), (2, 0.5)]:
        output[0, channel] = scale
    output[1:] = 100  # other batch items do not count
    layout = plan(output.shape)
    assert choose_channels("top:3", output, layout) == (1, 4, 5)
    assert choose_channels("top:99", output, layout) == tuple(range(6))


def test_top_channels_of_tokens_rank_only_patch_tokens() -> None:
    output = torch.zeros(1, 5, 8)
    output[0, 0, 7] = 1000.0  # a huge class token in channel 7 must not win
    output[0, 1:, 2] = 1.0
    assert choose_channels("top:1", output, plan(output.shape, TOKENS)) == (2,)


def test_stored_channels_are_reused_while_they_fit_and_selected_anew_when_not() -> None:
    output = torch.zeros(1, 4, 2, 2)
    output[0, 3] = 1.0
    layout = plan(output.shape)
    assert choose_channels(StoredChannels((0, 2), "top:2"), output, layout) == (0, 2)
    assert choose_channels(StoredChannels((0, 7), "top:1"), output, layout) == (3,)


@pytest.mark.parametrize("spec", ["top:0", "top:x", "some"])
def test_bad_channel_specs_say_what_is_accepted(spec: str) -> None:
    with pytest.raises(ValueError, match="top:N"):
        choose_channels(spec, torch.zeros(1, 4, 2, 2), plan((1, 4, 2, 2)))


def test_the_layout_decision_is_a_function_of_shape_and_module_only() -> None:
    first = plan((1, 197, 8), hints(nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 8))))
    second = plan((1, 197, 8), Hints(feature_sizes=frozenset({8})))
    assert first == second and first.label == "tokens:1+14x14"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_gpu_output_gives_cpu_maps_of_the_kept_channels_only() -> None:
    output = torch.randn(2, 64, 32, 32, device="cuda", dtype=torch.bfloat16)
    kept = keep(output, nn.Conv2d(1, 64, 1).cuda(), None, [3, 9])
    assert kept.maps.device.type == "cpu" and kept.maps.dtype == torch.float32
    assert torch.equal(kept.maps, output[0, [3, 9]].float().cpu())


# -- sequence-first outputs, RNN hidden states, sequence models, nested tensors ------------------------------------


def test_sequence_first_transformer_output_keeps_item_zero_of_every_token() -> None:
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0)  # batch_first=False: (S, B, E)
    output = ramp(12, 2, 8)
    kept = keep(output, hints(layer.linear2, [layer]), None, "all")
    assert kept.layout == "token-image (batch axis 1)"
    assert kept.maps.shape == (1, 12, 8)
    assert torch.equal(kept.maps[0], output[:, 0])  # all 12 tokens of batch item 0, not token 0 of both items


def test_a_custom_block_around_sequence_first_attention_is_sequence_first() -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2)
            self.mlp = nn.Sequential(nn.Linear(8, 8), nn.GELU())

    block = Block()
    assert hints(block.mlp[1], [block.mlp, block]).sequence_first
    assert not hints(nn.MultiheadAttention(8, 2, batch_first=True)).sequence_first
    assert not hints(nn.Linear(8, 8)).sequence_first  # nothing tells: batch first, as before


def test_a_batch_of_one_on_dimension_zero_is_read_batch_first_inside_a_sequence_first_block() -> None:
    class Transposing(nn.Module):  # takes (B, N, E), transposes around its sequence-first attention
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2)
            self.mlp = nn.Sequential(nn.Linear(8, 8))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = x.transpose(0, 1)
            x = x + self.attn(y, y, y)[0].transpose(0, 1)
            return x + self.mlp(x)

    block = Transposing()
    found = hints(block.mlp[0], [block.mlp, block])
    assert found.sequence_first
    output = ramp(1, 6, 8)  # (B=1, N=6, E): batch first, though the block's attention is not
    kept = keep(output, found, None, "all", images=False)
    assert kept.layout == "token-image" and torch.equal(kept.maps[0], output[0])
    assert keep(ramp(6, 1, 8), found, None, "all").layout == "token-image (batch axis 1)"  # (S, B=1, E)


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


def test_tokens_of_a_model_without_an_image_input_are_no_picture_grid() -> None:
    output = ramp(1, 128, 8)  # 128 = 7 + 11 x 11: read as a grid only when the input is a picture
    assert keep(output, TOKENS, None, "all", images=True).layout == "tokens:7+11x11"
    text = keep(output, TOKENS, None, "all", images=False)
    assert text.layout == "token-image"
    assert torch.equal(text.maps[0], output[0])  # every token kept, the first ones included


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        (torch.zeros(1, 3, 8, 8), True),
        (torch.zeros(1, 3, 2, 8, 8), True),
        ((torch.zeros(1, 3, 8, 8, dtype=torch.uint8), torch.zeros(1, 5, dtype=torch.long)), True),
        (torch.zeros(1, 128, dtype=torch.long), False),  # token ids
        ({"input_ids": torch.zeros(1, 9, dtype=torch.long), "mask": torch.ones(1, 9)}, False),
        (torch.zeros(1, 128, 8), False),  # an embedded sequence
        ("a photo of a cat", True),  # nothing tells: as before
    ],
)
def test_image_input_tells_pictures_from_sequences(inputs: object, expected: bool) -> None:
    from pytest_featviz.layout import image_input

    assert image_input(inputs) is expected


def test_image_input_reads_arrays_and_pictures_by_their_array_interface() -> None:
    import numpy as np
    from PIL import Image

    from pytest_featviz.layout import image_input

    assert image_input(Image.new("RGB", (4, 4)))
    assert image_input(np.zeros((4, 4, 3), np.uint8))


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors is in prototype stage")
def test_a_nested_tensor_is_read_padded() -> None:
    nested = torch.nested.nested_tensor([torch.ones(3, 8), torch.ones(2, 8)])
    (leaf,) = [tensor for _, tensor in tensor_leaves(nested)]
    assert leaf.shape == (2, 3, 8) and leaf[1, 2].abs().sum() == 0
    assert keep(nested, TOKENS, None, "all", images=False).maps.shape == (1, 3, 8)


def test_an_empty_batch_is_a_clear_error() -> None:
    with pytest.raises(LayoutError, match=r"the output's batch is empty \(shape \(0, 4, 2, 2\)\)"):
        keep(torch.zeros(0, 4, 2, 2), nn.Conv2d(4, 4, 1), None, 2)


@pytest.mark.parametrize("spec", [[10, 20], "top:3", 5, "all"])
def test_channel_selection_does_not_apply_to_one_picture_layouts(spec: object) -> None:
    features = keep(ramp(1, 64), nn.Linear(8, 64), None, spec)  # type: ignore[arg-type]
    assert features.layout == "features" and features.channels == (0,)
    assert features.maps.shape == (1, 1, 64)


def test_a_complex_output_is_a_clear_error() -> None:
    with pytest.raises(LayoutError, match=r"the output is complex \(torch.complex64\); feature maps are real"):
        keep(torch.zeros(1, 2, 4, 4, dtype=torch.complex64), nn.Conv2d(2, 2, 1), None, 2)
