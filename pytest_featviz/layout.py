"""Output layouts: how a layer's output becomes channel maps ``(channels, height, width)`` (torch).

Only batch item 0 and the selected channels are copied, at hook time, to float32 on the CPU. The rules:

* ``(B, C, H, W)``: C maps of H x W.
* ``(B, C, L)``: C maps of 1 x L.
* ``(B, F)``: one map of 1 x F (channel selection does not apply).
* ``(B, C, T, H, W)``: C maps of H x (T * W), the T frames side by side.
* Tuple, list or dict outputs: the first tensor leaf.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Union

import torch

ChannelSpec = Union[int, Sequence[int], Literal["all"]]  # noqa: UP007 (a runtime alias on 3.10)


class LayoutError(ValueError):
    """An output that cannot be rendered as channel maps."""


def first_tensor(output: Any) -> torch.Tensor | None:
    """The first tensor leaf of a module output (tensor, tuple, list, dict, namedtuple), or ``None``."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        for item in output:
            found = first_tensor(item)
            if found is not None:
                return found
    return None


def channel_count(shape: Sequence[int]) -> int:
    """How many channels an output of ``shape`` has under the rules above."""
    if len(shape) == 2:
        return 1
    if len(shape) in (3, 4, 5):
        return int(shape[1])
    raise LayoutError(
        f"an output of shape {tuple(shape)} cannot be rendered as feature maps;"
        " expected (B, F), (B, C, L), (B, C, H, W) or (B, C, T, H, W)"
    )


def select_channels(spec: ChannelSpec, count: int) -> tuple[int, ...]:
    """Resolve a channel spec (first N, a list of indices, or ``"all"``) against ``count`` channels."""
    if isinstance(spec, str):
        if spec != "all":
            raise ValueError(f"channels must be an int, a list of indices or 'all'; got {spec!r}")
        return tuple(range(count))
    if isinstance(spec, bool):
        raise ValueError(f"channels must be an int, a list of indices or 'all'; got {spec!r}")
    if isinstance(spec, int):
        if spec < 1:
            raise ValueError(f"channels must be at least 1; got {spec}")
        return tuple(range(min(spec, count)))
    indices = tuple(int(i) for i in spec)
    if not indices:
        raise ValueError("channels is an empty list: select at least one channel")
    bad = [i for i in indices if not 0 <= i < count]
    if bad:
        raise ValueError(f"channel indices {bad} are out of range for a layer with {count} channels")
    if len(set(indices)) != len(indices):
        raise ValueError(f"channel indices repeat: {list(indices)}")
    return indices


def keep_maps(output: torch.Tensor, channels: tuple[int, ...]) -> torch.Tensor:
    """Copy batch item 0 and ``channels`` of ``output`` to a new float32 CPU tensor of shape (k, H, W)."""
    item = output.detach()[0]
    if output.dim() == 2:
        return item.reshape(1, 1, -1).to(device="cpu", dtype=torch.float32, copy=True)
    contiguous = channels == tuple(range(channels[0], channels[0] + len(channels)))
    if contiguous:
        kept = item[channels[0] : channels[0] + len(channels)]
    else:
        kept = item.index_select(0, torch.tensor(channels, device=item.device))
    if output.dim() == 3:
        kept = kept.unsqueeze(1)
    elif output.dim() == 5:
        count, frames, height, width = kept.shape
        kept = kept.permute(0, 2, 1, 3).reshape(count, height, frames * width)
    return kept.to(device="cpu", dtype=torch.float32, copy=True)
