"""sidepass: a forward pass beside the snapshot's own (the default choice's, the noise floor's, calibration's) leaves
the model's plain attributes, the random number generators and an input given in a dataclass as the snapshot's
own pass finds them."""

from __future__ import annotations

import dataclasses
import random
from collections import OrderedDict, deque
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from pytest_featviz.sidepass import unobserved
from unit import snapshotter


def _signal() -> torch.Tensor:
    return torch.randn(1, 4, 64, generator=torch.Generator().manual_seed(1))


class _Streaming(nn.Module):
    """Keeps its position in a stream in a plain attribute: each pass sees the next stretch of positions."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(4, 8, 3, padding=1)
        self.c2 = nn.Conv1d(8, 8, 3, stride=2, padding=1)
        self.pos = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.arange(self.pos, self.pos + x.shape[-1], dtype=x.dtype)
        self.pos += x.shape[-1]
        return self.c2(self.c1(x) + torch.sin(t / 10.0))


def test_a_golden_of_the_default_choice_is_made_from_the_model_s_first_pass(tmp_path: Path) -> None:
    """The default choice's shape-only pass moved ``pos`` on, so the golden was made from the second stretch and a
    check of the unchanged model, whose first pass saw the first, failed on every channel as "a code change"."""
    torch.manual_seed(0)
    model = _Streaming().eval()
    snapshotter(tmp_path, update=True)(model, _signal())
    assert model.pos == 64  # one pass: the snapshot's own
    torch.manual_seed(0)
    assert snapshotter(tmp_path)(_Streaming().eval(), _signal()).outcome == "matched"


class _Stateful(nn.Module):
    """Every kind of plain attribute a forward pass may change."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.cache: list[torch.Tensor] = []
        self.seen: dict[str, int] = {}
        self.tags: set[str] = set()
        self.total = torch.zeros(4)  # a tensor, not a buffer
        self.generator = torch.Generator().manual_seed(3)
        self.mode = "first"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.cache.append(x)
        self.seen[f"call{len(self.seen)}"] = 1
        self.tags.add(f"tag{len(self.tags)}")
        self.total += 1  # in place
        self.mode = "later"
        self.warmed = True  # added by the pass
        self.training = not self.training
        noise = torch.rand(1, 4, 1, 1, generator=self.generator)
        return torch.relu(self.conv(x) + noise + self.total.view(1, 4, 1, 1))


def test_plain_attributes_rebound_grown_written_or_added_are_put_back() -> None:
    model = _Stateful().eval()
    cache, seen, tags, total, generator = model.cache, model.seen, model.tags, model.total, model.generator
    state = generator.get_state()
    with unobserved(model, torch.rand(1, 3, 8, 8)) as copied:
        model(copied)
    assert (model.cache, model.seen, model.tags, model.mode) == ([], {}, set(), "first")
    assert model.cache is cache and model.seen is seen and model.tags is tags  # in place: other holders see it too
    assert model.total is total and model.total.tolist() == [0.0] * 4
    assert model.generator is generator and torch.equal(generator.get_state(), state)
    assert not hasattr(model, "warmed") and not model.training


def test_the_random_number_generators_of_python_numpy_and_torch_are_forked() -> None:
    model, x = nn.Sequential(nn.Conv2d(3, 4, 3)), torch.ones(1, 3, 8, 8)
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    expected = (random.random(), np.random.rand(), torch.rand(()).item())
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    with unobserved(model, x):
        random.random(), np.random.rand(), torch.rand(())
    assert (random.random(), np.random.rand(), torch.rand(()).item()) == expected


@dataclasses.dataclass(frozen=True)
class _Batch:
    image: torch.Tensor
    label: int = 0


class _Preprocessing(nn.Module):
    """Scales a dataclass batch's image in place, as a forward pass that preprocesses its input may."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)

    def forward(self, batch: _Batch) -> torch.Tensor:
        return self.c2(torch.relu(self.c1(batch.image.div_(255.0).sub_(0.5))))


def _image() -> torch.Tensor:
    return torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 255


def test_an_input_in_a_dataclass_is_copied_for_the_default_choice_pass(tmp_path: Path) -> None:
    """The pass wrote the user's image in place, so the golden was taken of it preprocessed twice."""
    torch.manual_seed(0)
    batch = _Batch(_image())
    snapshotter(tmp_path, update=True)(_Preprocessing().eval(), batch)
    assert torch.allclose(batch.image, _image() / 255.0 - 0.5)  # once: by the snapshot's own pass
    torch.manual_seed(0)
    assert snapshotter(tmp_path)(_Preprocessing().eval(), _Batch(_image())).outcome == "matched"


def test_the_noise_floor_s_extra_pass_leaves_the_model_as_a_check_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The noise floor runs only where a layer is not clean (another machine than the golden's): the model was then
    one pass further on after the call than where it is clean, and the test's next snapshot differed by machine."""
    from pytest_featviz import calibrate

    torch.manual_seed(0)
    model = _Streaming().eval()
    snapshotter(tmp_path, update=True)(model, _signal(), layers=["c2"])
    runs: list[int] = []
    emulation = calibrate.tf32_emulation

    def counted() -> object:
        runs.append(model.pos)
        return emulation()

    monkeypatch.setattr(calibrate, "tf32_emulation", counted)
    model.pos = 0
    with torch.no_grad():
        model.c1.weight.mul_(1.02)  # a change small enough to score outside the clean band, not to fail
    snapshotter(tmp_path)(model, _signal(), layers=["c2"])
    assert runs == [64]  # the noise floor ran, after the check's pass
    assert model.pos == 64  # and left no trace


@dataclasses.dataclass
class _Node:
    """A tree node whose child links back to it: an input that holds itself."""

    x: torch.Tensor
    parent: _Node | None = None
    children: list[_Node] = dataclasses.field(default_factory=list)


class _TreeNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, root: _Node) -> torch.Tensor:
        return self.conv(root.x + root.children[0].x)


@pytest.mark.parametrize("layers", [None, ["conv"]])
def test_an_input_that_holds_itself_is_snapshotted(tmp_path: Path, layers: list[str] | None) -> None:
    """A tree with parent links recursed without end (RecursionError) in the copy, the tensor walk and the
    fingerprint."""

    def tree() -> _Node:
        root = _Node(torch.ones(1, 3, 8, 8))
        root.children.append(_Node(torch.full((1, 3, 8, 8), 0.5), parent=root))
        return root

    torch.manual_seed(0)
    snapshotter(tmp_path, update=True)(_TreeNet().eval(), tree(), layers=layers)
    torch.manual_seed(0)
    assert snapshotter(tmp_path)(_TreeNet().eval(), tree(), layers=layers).outcome == "matched"


@dataclasses.dataclass
class _Output(dict):  # type: ignore[type-arg]
    """Shaped like a Hugging Face ModelOutput: a dataclass whose fields are also its items."""

    hidden: torch.Tensor

    def __post_init__(self) -> None:
        self["hidden"] = self.hidden


class _Doubling(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.act = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, enc: _Output) -> torch.Tensor:
        return self.act(enc["hidden"].mul_(2))


def test_an_input_that_is_a_mapping_and_a_dataclass_is_copied_as_a_mapping(tmp_path: Path) -> None:
    """Copied as a dataclass, its items still held the test's tensors, which the default choice's pass wrote."""
    torch.manual_seed(0)
    given = _Output(torch.ones(1, 3, 8, 8))
    snapshotter(tmp_path, update=True)(_Doubling().eval(), {"enc": given})
    assert given["hidden"].max().item() == 2.0  # doubled once: by the snapshot's own pass
    torch.manual_seed(0)
    again = snapshotter(tmp_path)(_Doubling().eval(), {"enc": _Output(torch.ones(1, 3, 8, 8))})
    assert again.outcome == "matched"


class _Instrumented(nn.Module):
    """Registers a hook on its first pass, guarded by a flag kept outside the module."""

    done: set[int] = set()

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if id(self) not in self.done:
            self.done.add(id(self))
            self.conv.register_forward_hook(lambda module, args, output: output * 2)
        return self.conv(x)


def test_hooks_the_pass_registers_stay_and_torch_s_own_state_is_not_touched() -> None:
    model = _Instrumented()
    with unobserved(model, torch.ones(1, 3, 8, 8)) as copied:
        model(copied)
    assert len(model.conv._forward_hooks) == 1  # its guard says it is done: without the hook it never would be


def test_generators_deques_and_unset_dataclass_fields_are_put_back() -> None:
    class Noisy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.python = random.Random(1)
            self.numpy = np.random.default_rng(1)
            self.legacy = np.random.RandomState(1)
            self.history: deque[int] = deque(maxlen=4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.history.append(1)
            return x + self.python.random() + self.numpy.random() + self.legacy.rand()

    model = Noisy()
    before = (model.python.random(), model.numpy.random(), model.legacy.rand())
    model = Noisy()
    with unobserved(model, torch.zeros(1)) as copied:
        model(copied)
    assert (model.python.random(), model.numpy.random(), model.legacy.rand()) == before
    assert not model.history

    @dataclasses.dataclass
    class Later:
        image: torch.Tensor
        cached: torch.Tensor = dataclasses.field(init=False)  # never set

    given = Later(torch.ones(2))
    with unobserved(model, given) as copied:
        copied.image.mul_(3)
    assert given.image.tolist() == [1.0, 1.0] and not hasattr(copied, "cached")


@pytest.mark.filterwarnings("ignore:The PyTorch API of:UserWarning")  # masked and nested tensors: prototypes
def test_large_expanded_and_subclassed_tensor_attributes_are_kept_in_place_without_a_copy() -> None:
    """Each was copied on every extra pass (an expanded 4096 x 4096 view took 455 MiB; a masked tensor's comparison
    raised, and a nested one came back as a copy)."""
    from torch.masked import masked_tensor

    class Holding(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bias = torch.zeros(1, 1, 1, 1).expand(1, 4, 4096, 4096)
            self.table = torch.zeros(5 * 2**20)  # 20 MiB
            self.valid = masked_tensor(torch.ones(4), torch.tensor([True, False, True, True]))
            self.ragged = torch.nested.nested_tensor([torch.ones(2), torch.ones(3)])
            self.small = torch.zeros(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.small += 1
            return x

    model = Holding()
    held = dict(vars(model))
    with unobserved(model, torch.zeros(1)) as copied:
        model(copied)
    assert all(getattr(model, name) is held[name] for name in ("bias", "table", "valid", "ragged", "small"))
    assert model.small.tolist() == [0.0] * 4


def test_a_pass_that_registers_hooks_keeps_its_flags_so_they_are_registered_once() -> None:
    """The flag on the module was put back and its hook was not: the next pass registered the hook a second time."""

    class Flagged(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.hooked = False
            self.calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if not self.hooked:
                self.conv.register_forward_hook(lambda module, args, output: output + 1.0)
                self.hooked = True
            self.calls += 1
            return self.conv(x)

    model = Flagged()
    with unobserved(model, torch.ones(1, 3, 8, 8)) as copied:
        model(copied)
    model(torch.ones(1, 3, 8, 8))
    assert len(model.conv._forward_hooks) == 1 and model.hooked
    assert model.calls == 2  # an instrumenting pass keeps what it did to the attributes, as before


class _Output2(OrderedDict):  # type: ignore[type-arg]
    """An OrderedDict whose items read as attributes, as a Hugging Face ModelOutput's and BatchEncoding's do."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class _Listed(list):  # type: ignore[type-arg]
    pass


def test_a_copied_input_keeps_its_mapping_and_list_classes() -> None:
    """Copied to a plain dict, a head reading ``out.hidden`` failed in the noise floor's and calibration's runs."""
    given = (_Output2(hidden=torch.ones(2)), _Listed([torch.zeros(1)]))
    with unobserved(nn.Identity(), given) as copied:
        out, listed = copied
        assert type(out) is _Output2 and type(listed) is _Listed
        out.hidden.mul_(3)
        listed[0].add_(1)
    assert given[0].hidden.tolist() == [1.0, 1.0] and given[1][0].item() == 0.0


def test_a_tensor_attribute_pointed_at_a_buffer_is_put_back_without_writing_the_buffer() -> None:
    class Caching(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("positions", torch.arange(10))
            self.cached = torch.zeros(1)
            self.table: dict[str, int] = _Uncopyable(a=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.cached = self.positions  # another dtype and size: the buffer must not be written
            self.table["b"] = 2
            return x

    model = Caching()
    cached = model.cached
    with unobserved(model, torch.zeros(1)) as copied:
        model(copied)
    assert model.positions.tolist() == list(range(10))
    assert model.cached is cached and model.cached.dtype == torch.float32
    assert dict(model.table) == {"a": 1}


class _Uncopyable(dict):  # type: ignore[type-arg]
    def __reduce_ex__(self, protocol: object) -> Any:
        raise TypeError("no copy")


class _Batch2(MutableMapping):  # type: ignore[type-arg]
    """A mapping class of its own that keeps its items in an attribute: a shallow copy would share them."""

    def __init__(self, **items: Any) -> None:
        self._items = dict(items)

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._items[key] = value

    def __delitem__(self, key: str) -> None:
        del self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


def test_a_mapping_of_another_class_is_copied_to_a_dict_of_its_own() -> None:
    given = _Batch2(image=torch.ones(2))
    with unobserved(nn.Identity(), (given,)) as (copied,):
        copied["image"] = copied["image"] * 2
        copied["preprocessed"] = True
    assert list(given) == ["image"] and given["image"].tolist() == [1.0, 1.0]
