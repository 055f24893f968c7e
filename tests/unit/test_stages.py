"""stages: the default choice's shape-only forward pass leaves the input, the random numbers, the buffers and the
submodules as a check finds them; a stage's block is chosen, not the dropout after it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedParameter

from pytest_featviz.records import FeatvizError
from pytest_featviz.sidepass import _model_kept
from pytest_featviz.stages import default_selection
from unit import snapshotter


def _x() -> torch.Tensor:
    return torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))


# --- the default choice's extra forward pass changes nothing ------------------------------------------------------


class InPlace(nn.Module):
    """Normalizes its input in place and adds noise: every forward pass sees what the previous one left."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.body = nn.Sequential(nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.sub_(0.5).mul_(2.0)
        return self.body(self.stem(x) + 0.5 * torch.randn(1, 4, 8, 8))


def test_the_default_choice_pass_leaves_input_and_random_numbers_as_a_check_finds_them(tmp_path: Path) -> None:
    def run(update: bool) -> str:
        torch.manual_seed(0)
        model = InPlace()
        return snapshotter(tmp_path, update=update)(model, _x()).outcome

    assert run(update=True) == "created"  # with the default choice's shape-only pass first
    assert run(update=False) == "matched"  # without it


class _Counting(nn.Module):
    """Counts its calls in a buffer, in place and by reassignment, and adds the count: a stateful forward."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.register_buffer("calls", torch.zeros(()))
        self.register_buffer("total", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.total = self.total + 1  # a new tensor in the buffer's place
        return torch.relu(self.conv(x) + self.calls + self.total)


def test_the_default_choice_pass_leaves_the_model_s_buffers_as_they_were(tmp_path: Path) -> None:
    """The golden of a model with state was taken from its second pass (the shape-only pass ran first), and the model
    was left a pass ahead: the next check failed on every channel. Buffers are restored after that pass."""
    torch.manual_seed(0)
    model = nn.Sequential(_Counting(), nn.Conv2d(4, 4, 3, padding=1))
    snapshotter(tmp_path, update=True)(model, _x())
    assert model[0].calls.item() == 1 and model[0].total.item() == 1  # the snapshot's own pass only
    torch.manual_seed(0)
    fresh = nn.Sequential(_Counting(), nn.Conv2d(4, 4, 3, padding=1))
    assert snapshotter(tmp_path)(fresh, _x()).outcome == "matched"


def test_the_default_choice_pass_takes_lazy_modules_and_models_made_under_inference_mode(tmp_path: Path) -> None:
    """Restoring buffers failed on a lazy module's uninitialized buffer ("Attempted to use an uninitialized
    parameter") and on buffers made under inference_mode ("Inplace update to inference tensor outside
    InferenceMode")."""
    torch.manual_seed(0)
    lazy = nn.Sequential(nn.Conv2d(3, 4, 3), nn.LazyBatchNorm2d(), nn.LazyConv2d(4, 3)).eval()
    with torch.inference_mode():
        made_there = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3)).eval()
    for position, model in enumerate((lazy, made_there)):
        root = tmp_path / str(position)
        assert snapshotter(root, update=True)(model, _x()).outcome == "created"
        assert snapshotter(root)(model, _x()).outcome == "matched"


class _LazyShifted(LazyModuleMixin, nn.Module):
    """A custom lazy module whose initialization registers a buffer, a non-persistent buffer and a child beside its
    weight, as torch's own lazy modules register running statistics."""

    def __init__(self) -> None:
        super().__init__()
        self.weight: nn.Parameter = UninitializedParameter()

    def initialize_parameters(self, x: torch.Tensor) -> None:
        if self.has_uninitialized_params():
            with torch.no_grad():
                self.weight.materialize((x.shape[1],))
                self.weight.fill_(2.0)
            self.register_buffer("shift", torch.full((x.shape[1],), 0.5))
            self.register_buffer("scratch", torch.zeros(1), persistent=False)
            self.post = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(x * self.weight[None, :, None, None] - self.shift[None, :, None, None])


def test_what_a_lazy_module_registers_as_it_initializes_outlives_the_default_choice_pass(tmp_path: Path) -> None:
    """The pass that chooses the layers put every module's buffers and children back as they were, so the buffer
    and child a custom ``initialize_parameters`` registered were gone, and the snapshot's own pass (the module no
    longer lazy) raised AttributeError."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), _LazyShifted(), nn.Conv2d(4, 4, 3)).eval()
    assert snapshotter(tmp_path, update=True)(model, _x()).outcome == "created"
    lazy = model[1]
    assert isinstance(lazy.post, nn.ReLU) and lazy.shift.tolist() == [0.5] * 4
    assert "shift" in lazy.state_dict() and "scratch" not in lazy.state_dict()
    assert snapshotter(tmp_path)(model, _x()).outcome == "matched"


class _Caching(nn.Module):
    """A forward that fills a None buffer, adds one, deletes one, resizes one and counts in one, beside a buffer it
    never touches that cannot be written (an expanded view)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.register_buffer("cache", None)
        self.register_buffer("gone", torch.ones(2))
        self.register_buffer("view", torch.ones(1).expand(4))
        self.register_buffer("grown", torch.zeros(1))
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cache is None:
            self.cache = torch.zeros(())
        self.cache += 1
        if "gone" in self._buffers:
            del self._buffers["gone"]
        self.register_buffer("added", torch.ones(1))
        self.grown.resize_(3)
        self.calls += 1
        return torch.relu(self.conv(x) + self.cache)


def test_the_default_choice_pass_puts_back_none_added_deleted_and_resized_buffers(tmp_path: Path) -> None:
    """A buffer registered as None and filled in forward (a cache) stayed filled, so the golden came from the second
    pass and the next check drifted; a view that cannot be written, or a buffer resized in place, made the restore
    fail."""
    torch.manual_seed(0)
    model = nn.Sequential(_Caching(), nn.Conv2d(4, 4, 3, padding=1))
    snapshotter(tmp_path, update=True)(model, _x())
    buffers = {name: None if b is None else b.tolist() for name, b in model[0]._buffers.items()}
    assert len(buffers.pop("grown")) == 3  # resized by the snapshot's own pass only (its new values are undefined)
    assert buffers == {"cache": 1.0, "view": [1.0] * 4, "calls": 1.0, "added": [1.0]}
    torch.manual_seed(0)
    assert snapshotter(tmp_path)(nn.Sequential(_Caching(), nn.Conv2d(4, 4, 3, padding=1)), _x()).outcome == "matched"


class _Growing(nn.Module):
    """Creates a submodule with a counting buffer on its first call, and shares one buffer with a sibling."""

    def __init__(self, shared: torch.Tensor) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.register_buffer("shared", shared)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not hasattr(self, "holder"):
            self.holder = nn.Module()
            self.holder.register_buffer("count", torch.zeros(()))
        self.holder.count += 1
        self.shared.resize_(3)
        return torch.relu(self.conv(x) + self.holder.count)


def test_the_default_choice_pass_drops_added_submodules_and_keeps_shared_buffers_shared(tmp_path: Path) -> None:
    shared = torch.zeros(1)
    torch.manual_seed(0)
    model = nn.Sequential(_Growing(shared), nn.Conv2d(4, 4, 3, padding=1))
    model.register_buffer("same", shared)
    snapshotter(tmp_path, update=True)(model, _x())
    assert model[0].holder.count.item() == 1  # made again by the snapshot's own pass, not kept from the first
    assert model[0].shared is model.same is shared  # restored in place, not replaced by a copy
    torch.manual_seed(0)
    fresh = nn.Sequential(_Growing(torch.zeros(1)), nn.Conv2d(4, 4, 3, padding=1))
    assert snapshotter(tmp_path)(fresh, _x()).outcome == "matched"


class _Quietly(nn.Module):
    """Writes its buffers where no version counter sees it (``.data``, numpy), through a view, and swaps, adds and
    deletes submodules and a non-persistent buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.act, self.extra = nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Identity()
        self.register_buffer("ema", torch.zeros(4))
        self.register_buffer("base", torch.zeros(1))
        self.register_buffer("wide", self.base.expand(4))
        self.register_buffer("scratch", torch.zeros(1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.ema.data.add_(1.0)
        self.base.numpy()[0] += 1.0
        self.act = nn.Tanh()
        if hasattr(self, "extra"):
            del self.extra
        del self._buffers["scratch"]
        return self.act(self.conv(x) + self.ema.view(1, 4, 1, 1) + self.wide.view(1, 4, 1, 1))


def test_the_default_choice_pass_undoes_writes_no_version_counter_sees_and_module_swaps() -> None:
    model = _Quietly()
    keys = set(model.state_dict())
    with _model_kept(model):
        model(_x())
    assert model.ema.tolist() == [0.0] * 4 and model.base.item() == 0.0
    assert model.wide.data_ptr() == model.base.data_ptr()  # still a view of base, not a copy
    assert isinstance(model.act, nn.ReLU) and isinstance(model.extra, nn.Identity)
    assert "scratch" in model._buffers and set(model.state_dict()) == keys  # non-persistent again


def test_the_default_choice_of_a_meta_model_and_of_one_that_casts_itself() -> None:
    with torch.device("meta"):
        meta = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    assert default_selection(meta.eval(), torch.empty(1, 3, 8, 8, device="meta")) == ["2"]

    class Follows(nn.Module):  # casts itself to its input's dtype in forward
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.to(x.dtype)
            return self.body(x)

    follows = Follows().eval()
    default_selection(follows, _x().double())
    assert {t.dtype for t in [*follows.parameters(), *follows.buffers()] if t.is_floating_point()} == {torch.float64}


class _StagesWithDropout(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.block1 = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        self.pool = nn.MaxPool2d(2)
        self.block2 = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU())
        self.drop = nn.Dropout2d(0.1)
        self.pool2 = nn.MaxPool2d(2)
        self.block3 = nn.Conv2d(8, 8, 3, padding=1)
        self.tail = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.block2(self.pool(self.block1(self.stem(x)))))
        return self.tail(self.block3(self.pool2(x)))


def test_the_default_choice_takes_a_stage_s_block_not_the_dropout_after_it() -> None:
    # In eval the dropout returns block2's output: choosing it named the same tensor twice (with block2) under a
    # name that disappears with the dropout; an Identity at the end is passed over the same way.
    torch.manual_seed(0)
    chosen = default_selection(_StagesWithDropout().eval(), torch.rand(1, 3, 16, 16))
    assert chosen == ["block1", "block2", "block3"]


class _Critic(nn.Module):
    """An SN-GAN critic: spectral-normed convolutions as the model's own attributes."""

    def __init__(self) -> None:
        super().__init__()
        spectral_norm = nn.utils.parametrizations.spectral_norm
        self.c1 = spectral_norm(nn.Conv2d(3, 8, 3, padding=1))
        self.c2 = spectral_norm(nn.Conv2d(8, 8, 4, stride=2, padding=1))
        self.c3 = spectral_norm(nn.Conv2d(8, 8, 4, stride=2, padding=1))
        self.act = nn.LeakyReLU(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c3(self.act(self.c2(self.act(self.c1(x)))))


def test_the_default_choice_takes_no_parametrization_s_weight_for_a_stage() -> None:
    """A parametrization's modules run when their weight is read and return it: ``c1.parametrizations.weight`` (an
    8 x 3 x 3 x 3 kernel) was read as a 3 x 3 map and chosen as a stage, then named where drift "starts" and among
    the layers with changed weights. The choice is the one the same model makes without its parametrizations."""
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    critic = _Critic().eval()
    assert default_selection(critic, image) == ["c1", "c2", "act@1", "c3"]
    for parametrize in (
        nn.utils.parametrizations.weight_norm,
        nn.utils.parametrizations.spectral_norm,
        nn.utils.parametrizations.orthogonal,
    ):
        torch.manual_seed(0)
        plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
        expected = default_selection(plain, image)
        plain[2] = parametrize(plain[2])
        assert default_selection(plain, image) == expected


def test_a_parametrized_layer_alone_is_a_model_without_submodules() -> None:
    """Its only child is its parametrizations: the default choice said "layers is an empty list", though the test
    passed layers=None; it says what a plain Conv2d gets, how to wrap it."""
    conv = nn.utils.parametrizations.weight_norm(nn.Conv2d(3, 4, 3))
    with pytest.raises(FeatvizError, match=r"^Conv2d has no submodules.*nn\.Sequential\(model\)"):
        default_selection(conv, torch.rand(1, 3, 8, 8))
