"""layers: exact names, globs, module classes, call indices, unknown names, layers that never run; several
snapshots in one test."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from pytest_featviz.layers import resolve_layers
from pytest_featviz.records import FeatvizError
from unit import snapshotter


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.layer1 = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        self.unused = nn.Conv2d(4, 4, 1)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.stem(x)))
        return self.head(x.mean(dim=(2, 3)))


def _net() -> Net:
    torch.manual_seed(0)
    return Net()


def _x() -> torch.Tensor:
    return torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def _names(spec: object) -> list[str]:
    return [target.name for target in resolve_layers(_net(), spec)]  # type: ignore[arg-type]


def test_exact_dotted_names() -> None:
    assert _names(["layer1.0", "stem"]) == ["layer1.0", "stem"]
    assert _names("layer2") == ["layer2"]


def test_glob_patterns() -> None:
    assert _names("layer*.0") == ["layer1.0", "layer2.0"]
    assert _names(["layer?", "stem"]) == ["layer1", "layer2", "stem"]


def test_module_classes() -> None:
    assert _names(nn.Conv2d) == ["stem", "layer1.0", "layer2.0", "unused"]
    assert _names([nn.ReLU, "stem"]) == ["layer1.1", "layer2.1", "stem"]


def test_a_layer_selected_twice_is_captured_once() -> None:
    assert _names(["stem", "ste*", nn.Conv2d]) == ["stem", "layer1.0", "layer2.0", "unused"]


def test_unknown_name_lists_the_closest_names() -> None:
    with pytest.raises(FeatvizError, match=r"unknown layer 'layer1.O' in Net; closest names: ") as caught:
        _names("layer1.O")
    closest = str(caught.value).split("closest names: ")[1]
    assert "'layer1.0'" in closest and "'layer1.1'" in closest and "'head'" not in closest
    with pytest.raises(FeatvizError, match=r"layer pattern 'layr\*' matches no layer; closest names: .*'layer1'"):
        _names("layr*")
    with pytest.raises(FeatvizError, match="no layer of type BatchNorm2d in Net"):
        _names(nn.BatchNorm2d)
    with pytest.raises(FeatvizError, match="layers is an empty list"):
        _names([])


def test_unknown_name_through_the_fixture_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(FeatvizError, match="closest names: 'stem'"):
        snapshotter(tmp_path, update=True)(_net(), _x(), layers=["stme"])
    assert not any(tmp_path.iterdir())


def test_a_selected_layer_that_never_runs_fails(tmp_path: Path) -> None:
    with pytest.raises(FeatvizError, match=r"selected layer\(s\) 'unused' never ran in the forward pass of Net"):
        snapshotter(tmp_path, update=True)(_net(), _x(), layers=["stem", "unused"])
    assert not any(tmp_path.iterdir())
    # a glob that also matches a silent layer fails the same way: never a silent pass
    with pytest.raises(FeatvizError, match="'unused' never ran"):
        snapshotter(tmp_path, update=True)(_net(), _x(), layers=nn.Conv2d)


def test_layers_are_reported_in_forward_order(tmp_path: Path) -> None:
    result = snapshotter(tmp_path, update=True)(_net(), _x(), layers=["layer2.0", "stem", "layer1.0"])
    assert [layer.name for layer in result.layers] == ["stem", "layer1.0", "layer2.0"]


def test_default_choice_is_deterministic_and_recorded(tmp_path: Path) -> None:
    first = snapshotter(tmp_path, update=True)(_net(), _x())
    assert first.layers, "the default choice took no layer"
    again = snapshotter(tmp_path)(_net(), _x())
    assert [layer.name for layer in again.layers] == [layer.name for layer in first.layers]
    assert again.outcome == "matched"


# --- several snapshots in one test ----------------------------------------------------------------------------------


def test_several_snapshots_get_automatic_names_and_explicit_ones(tmp_path: Path) -> None:
    snap = snapshotter(tmp_path, update=True)
    names = [snap(_net(), _x(), layers="stem").name, snap(_net(), _x(), layers="layer1").name]
    names.append(snap(_net(), _x(), layers="layer2", name="late").name)
    names.append(snap(_net(), _x(), layers="layer2").name)
    assert names == ["0", "1", "late", "2"]
    test_dir = tmp_path / "tests" / "test_model" / "test_features"
    assert sorted(p.name for p in test_dir.iterdir()) == ["0", "1", "2", "late"]


def test_an_explicit_name_like_an_automatic_one_is_not_reused(tmp_path: Path) -> None:
    snap = snapshotter(tmp_path, update=True)
    assert snap(_net(), _x(), layers="stem", name="0").name == "0"
    assert snap(_net(), _x(), layers="stem").name == "1"


def test_the_same_explicit_name_twice_is_a_clear_error(tmp_path: Path) -> None:
    snap = snapshotter(tmp_path, update=True)
    snap(_net(), _x(), layers="stem", name="stem")
    with pytest.raises(FeatvizError, match=r"snapshot name 'stem' is used twice in tests/test_model.py::test_features"):
        snap(_net(), _x(), layers="layer1", name="stem")
    with pytest.raises(FeatvizError, match="name must be a non-empty string"):
        snap(_net(), _x(), layers="layer1", name="")


def test_snapshots_of_one_test_are_checked_separately(tmp_path: Path) -> None:
    snap = snapshotter(tmp_path, update=True)
    snap(_net(), _x(), layers="stem")
    snap(_net(), 2 * _x(), layers="stem")
    check = snapshotter(tmp_path)
    assert check(_net(), _x(), layers="stem").outcome == "matched"
    assert check(_net(), 2 * _x(), layers="stem").outcome == "matched"


def test_model_must_be_a_module(tmp_path: Path) -> None:
    with pytest.raises(FeatvizError, match="needs a torch.nn.Module as model; got function"):
        snapshotter(tmp_path)(lambda x: x, _x())  # type: ignore[arg-type]


# --- aliases, module objects, models without submodules, odd selections ---------------------------------------------


class Aliased(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1))
        self.decoder = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1))
        self.refine = self.decoder  # the same module, registered under a second name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.refine(self.encoder(x))


def test_a_name_through_an_alias_selects_the_module() -> None:
    model = Aliased()
    (target,) = resolve_layers(model, ["refine.0"])
    assert target.name == "refine.0" and target.module is model.decoder[0]
    with pytest.raises(FeatvizError, match=r"unknown layer 'refine.O'.*closest names: .*'refine.0'"):
        resolve_layers(model, ["refine.O"])


def test_a_module_object_selects_it_by_name(tmp_path: Path) -> None:
    model = _net()
    assert [t.name for t in resolve_layers(model, [model.layer1, "stem"])] == ["layer1", "stem"]
    assert [t.name for t in resolve_layers(model, model.layer2[0])] == ["layer2.0"]
    with pytest.raises(FeatvizError, match="layers holds a Conv2d that is not a submodule of it"):
        resolve_layers(model, [nn.Conv2d(1, 1, 1)])
    with pytest.raises(FeatvizError, match="layers holds the model itself"):
        resolve_layers(model, [model])
    result = snapshotter(tmp_path, update=True)(model, _x(), layers=[model.layer1])
    assert [layer.name for layer in result.layers] == ["layer1"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (3, "layers must be None .* or a list of them; got int 3"),
        ({"stem": 1}, "got dict"),
        ([3], "layers must hold names, glob patterns, module classes or modules; got int 3"),
    ],
)
def test_a_selection_of_the_wrong_type_is_a_clear_error(spec: object, message: str) -> None:
    with pytest.raises(FeatvizError, match=message):
        _names(spec)


def test_a_module_object_in_the_error_is_shown_in_one_short_line() -> None:
    with pytest.raises(FeatvizError) as caught:
        _names([nn.Sequential(*[nn.Conv2d(1, 1, 1) for _ in range(50)])])
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 200


def test_a_model_without_submodules_says_how_to_snapshot_its_output(tmp_path: Path) -> None:
    conv = nn.Conv2d(3, 4, 3)
    for layers in (None, ["weight"]):
        with pytest.raises(
            FeatvizError, match=r"Conv2d has no submodules: .*wrap it: feature_snapshot\(nn.Sequential\(model\), x\)"
        ):
            snapshotter(tmp_path, update=True)(conv, _x(), layers=layers)
    result = snapshotter(tmp_path, update=True)(nn.Sequential(conv), _x())
    assert [layer.name for layer in result.layers] == ["0"]


def test_a_call_index_that_never_ran_lists_the_calls_that_did(tmp_path: Path) -> None:
    class Thrice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.block(self.block(self.block(x)))

    calls = r"'block' ran 3 time\(s\): 'block', 'block@1', 'block@2'"
    with pytest.raises(FeatvizError, match=rf"'block@5' never ran .*; {calls}"):
        snapshotter(tmp_path, update=True)(Thrice(), _x(), layers=["block@5"])


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
    from pytest_featviz.layers import _buffers_kept

    model = _Quietly()
    keys = set(model.state_dict())
    with _buffers_kept(model):
        model(_x())
    assert model.ema.tolist() == [0.0] * 4 and model.base.item() == 0.0
    assert model.wide.data_ptr() == model.base.data_ptr()  # still a view of base, not a copy
    assert isinstance(model.act, nn.ReLU) and isinstance(model.extra, nn.Identity)
    assert "scratch" in model._buffers and set(model.state_dict()) == keys  # non-persistent again


def test_the_default_choice_of_a_meta_model_and_of_one_that_casts_itself() -> None:
    from pytest_featviz.layers import default_selection

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
    from pytest_featviz.layers import default_selection

    torch.manual_seed(0)
    chosen = default_selection(_StagesWithDropout().eval(), torch.rand(1, 3, 16, 16))
    assert chosen == ["block1", "block2", "block3"]
