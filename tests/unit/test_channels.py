"""Channels: N spread over the output, indices, all, top:N by energy, stored channels; batch item 0 and the kept
channels copied as float32 CPU maps; outputs a hook cannot keep."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pytest_featviz.channels import StoredChannels, choose_channels, keep, select_channels
from pytest_featviz.layout import LayoutError, hints, plan

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


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_half_and_double_activations_become_float32_maps(dtype: torch.dtype) -> None:
    output = (torch.randn(1, 4, 6, 6) * 3).to(dtype)
    kept = keep(output, None, None, "all")
    assert kept.maps.dtype == torch.float32
    assert torch.equal(kept.maps, output[0].float())


def test_top_channels_are_those_of_highest_energy_in_index_order() -> None:
    output = torch.zeros(1, 6, 4, 4)
    for channel, scale in [(1, 5.0), (4, -9.0), (5, 2.0), (2, 0.5)]:
        output[0, channel] = scale
    output[1:] = 100  # other batch items do not count
    layout = plan(output.shape)
    assert choose_channels("top:3", output, layout) == (1, 4, 5)
    assert choose_channels("top:99", output, layout) == tuple(range(6))


def test_top_channels_rank_values_whose_square_overflows_float32() -> None:
    output = torch.ones(1, 4, 2, 2) * torch.tensor([1e19, 2e19, 3e19, 4e19]).view(1, 4, 1, 1)
    assert choose_channels("top:3", output, plan(output.shape)) == (1, 2, 3)  # not 0, 1, 2: all tied at inf


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


@pytest.mark.parametrize(
    ("count", "channels", "kept"),
    [(64, 16, tuple(range(0, 64, 4))), (10, 4, (0, 2, 5, 7)), (6, 6, tuple(range(6))), (3, 16, (0, 1, 2))],
)
def test_a_count_spreads_its_channels_over_the_output(count: int, channels: int, kept: tuple[int, ...]) -> None:
    # the first N of an output that concatenates its input and its own work (DenseNet) are the input's alone
    assert select_channels(channels, count) == kept
    assert choose_channels(f"top:{channels}", torch.zeros(1, count, 2, 2), plan((1, count, 2, 2))) == tuple(
        range(min(channels, count))
    )


def test_stored_channels_of_a_count_are_reused_while_they_are_as_many_as_it_selects() -> None:
    layout = plan((1, 32, 2, 2))
    output = torch.zeros(1, 32, 2, 2)
    first = tuple(range(16))  # a golden made when a count meant the first N keeps its channels
    assert choose_channels(StoredChannels(first, 16), output, layout) == first
    assert choose_channels(StoredChannels(first, 8), output, layout) == tuple(range(0, 32, 4))  # the count changed
    assert choose_channels(StoredChannels((0, 1), "top:3"), output, layout) == (0, 1, 2)
    assert choose_channels(StoredChannels(first, 64), output, layout) == tuple(range(32))


@pytest.mark.parametrize("spec", ["top:0", "top:x", "some"])
def test_bad_channel_specs_say_what_is_accepted(spec: str) -> None:
    with pytest.raises(ValueError, match="top:N"):
        choose_channels(spec, torch.zeros(1, 4, 2, 2), plan((1, 4, 2, 2)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_gpu_output_gives_cpu_maps_of_the_kept_channels_only() -> None:
    output = torch.randn(2, 64, 32, 32, device="cuda", dtype=torch.bfloat16)
    kept = keep(output, nn.Conv2d(1, 64, 1).cuda(), None, [3, 9])
    assert kept.maps.device.type == "cpu" and kept.maps.dtype == torch.float32
    assert torch.equal(kept.maps, output[0, [3, 9]].float().cpu())


@pytest.mark.parametrize("spec", [[10, 20], "top:3", 5, "all"])
def test_channel_selection_does_not_apply_to_one_picture_layouts(spec: object) -> None:
    features = keep(ramp(1, 64), nn.Linear(8, 64), None, spec)  # type: ignore[arg-type]
    assert features.layout == "features" and features.channels == (0,)
    assert features.maps.shape == (1, 1, 64)


def test_a_complex_output_is_a_clear_error() -> None:
    with pytest.raises(LayoutError, match=r"the output is complex \(torch.complex64\); feature maps are real"):
        keep(torch.zeros(1, 2, 4, 4, dtype=torch.complex64), nn.Conv2d(2, 2, 1), None, 2)
