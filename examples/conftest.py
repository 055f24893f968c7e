"""Shared set-up of the example suites: seeded torchvision models and scikit-image photos.

Nothing is downloaded: the models use random weights drawn after ``torch.manual_seed`` (``weights=None``), and the
photos ship with scikit-image. Preprocessing follows the usual ImageNet recipe (resize, scale to [0, 1], normalize
by the ImageNet mean and std). Set ``FEATVIZ_DEMO_BREAK=1`` to skip the normalization step: that is the kind of
silent preprocessing bug these snapshots are there to catch, and ``make demo`` uses it to show a drift.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PHOTOS = ("astronaut", "coffee", "chelsea")
BREAK_VARIABLE = "FEATVIZ_DEMO_BREAK"


def preprocessing_broken() -> bool:
    """Whether the demo's deliberate bug is switched on (``FEATVIZ_DEMO_BREAK=1``)."""
    return os.environ.get(BREAK_VARIABLE, "") not in ("", "0")


def load_photo(name: str, size: int = 224) -> torch.Tensor:
    """A scikit-image photo as a model input of shape (1, 3, size, size).

    Resized (with antialiasing) so that the shorter side is ``size``, center-cropped, scaled to [0, 1] and
    normalized by the ImageNet mean and std, unless ``FEATVIZ_DEMO_BREAK`` is set.
    """
    import skimage.data
    import torch.nn.functional as functional

    pixels = getattr(skimage.data, name)()  # (H, W, 3) uint8
    image = torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0).float() / 255.0
    height, width = image.shape[-2:]
    scale = size / min(height, width)
    resized = (max(size, round(height * scale)), max(size, round(width * scale)))
    image = functional.interpolate(image, size=resized, mode="bilinear", antialias=True, align_corners=False)
    top, left = (resized[0] - size) // 2, (resized[1] - size) // 2
    image = image[:, :, top : top + size, left : left + size]
    if not preprocessing_broken():
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        image = (image - mean) / std
    return image.contiguous()


def seeded(build: Callable[[], nn.Module], seed: int = 0) -> nn.Module:
    """``build()`` with its random initialization fixed by ``seed``, in eval mode."""
    torch.manual_seed(seed)
    return build().eval()


@pytest.fixture(scope="session")
def seed() -> Callable[..., nn.Module]:
    """``seed(build, seed=0)``: a model built with a fixed random initialization, in eval mode."""
    return seeded


@pytest.fixture(scope="session")
def photo() -> Callable[..., torch.Tensor]:
    """``photo(name, size=224)``: a preprocessed scikit-image photo (see :func:`load_photo`)."""
    return load_photo
