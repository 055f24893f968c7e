"""layers: exact names, globs, module classes, call indices, unknown names, layers that never run; several
snapshots in one test."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
import torch
from torch import nn

from pytest_featviz.layers import module_index, resolve_layers, under_another_parent
from pytest_featviz.records import FeatureDriftError, FeatvizError
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


def test_a_call_index_before_a_leaf_selector_says_it_goes_last() -> None:
    """``block@1+logits`` read as a module called ``block@1``, and the closest names (``block``, ``block.conv``) hid
    the fix: the call index goes last."""
    last = "a call index goes last, after the leaf selector"
    with pytest.raises(FeatvizError, match=rf"^unknown layer 'layer1@1\+0' in Net; {last}: 'layer1\+0@1'$"):
        _names("layer1@1+0")
    with pytest.raises(FeatvizError, match=rf"; {last}: 'module.layer1.0\+out\+1@2'$"):
        _names("module.layer1.0@2+out+1")  # a wrapper prefix and a nested leaf are kept as written
    with pytest.raises(FeatvizError, match=rf"^layer pattern 'layer\?@1\+0' matches no layer; {last}: 'layer\?\+0@1'"):
        _names("layer?@1+0")
    assert _names("layer1+0@1") == ["layer1+0"]
    with pytest.raises(FeatvizError, match=r"unknown layer 'layr1@1\+0' in Net; closest names: .*'layer1'") as caught:
        _names("layr1@1+0")  # no module of that name either way: the closest names, as for any unknown name
    assert last not in str(caught.value)


def test_the_name_inside_a_compiled_submodule_is_the_closest_one() -> None:
    # layer2 = torch.compile(layer2): 'layer2.0.conv1' is 'layer2._orig_mod.0.conv1' now, and the closest names
    # offered were the other stages' blocks
    import torchvision

    model = torchvision.models.resnet18()
    model.layer2 = torch.compile(model.layer2)  # type: ignore[assignment]
    with pytest.raises(FeatvizError, match=r"closest names: 'layer2._orig_mod.0.conv1', "):
        resolve_layers(model, ["layer2.0.conv1"])


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


class CallsForward(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3)
        self.b = nn.Conv2d(4, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b.forward(self.a(x))  # skips Module.__call__, and with it the hooks


def test_a_layer_called_through_its_forward_method_fails_saying_so(tmp_path: Path) -> None:
    with pytest.raises(FeatvizError, match=r"'b' never ran in the forward pass of CallsForward") as caught:
        snapshotter(tmp_path, update=True)(CallsForward(), _x(), layers=["a", "b"], channels=2)
    assert str(caught.value).endswith(
        "; a module called as module.forward(x) instead of module(x) runs without hooks and reads as never run:"
        " call it as module(x)"
    )
    assert not any(tmp_path.iterdir())
    # a call index that never ran, of a module that did run: its calls are listed, and nothing of .forward
    with pytest.raises(FeatvizError, match=r"'a@1' never ran .*; 'a' ran 1 time\(s\): 'a'$"):
        snapshotter(tmp_path, update=True)(CallsForward(), _x(), layers=["a@1"], channels=2)


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
    # the other way round the user wrote the name once: the message says which call took it
    with pytest.raises(FeatvizError) as raised:
        snap(_net(), _x(), layers="stem", name="1")
    assert str(raised.value) == (
        "snapshot name '1' is taken in tests/test_model.py::test_features by a feature_snapshot call without name="
        " (those are named 0, 1, ... in the order they run); give this call another name="
    )
    assert "_next_name" not in [entry.name for entry in raised.traceback]  # the message says it all


def test_the_same_explicit_name_twice_is_a_clear_error(tmp_path: Path) -> None:
    snap = snapshotter(tmp_path, update=True)
    snap(_net(), _x(), layers="stem", name="stem")
    with pytest.raises(FeatvizError, match=r"snapshot name 'stem' is used twice in tests/test_model.py::test_features"):
        snap(_net(), _x(), layers="layer1", name="stem")
    with pytest.raises(FeatvizError, match="name must be a non-empty string"):
        snap(_net(), _x(), layers="layer1", name="")


def test_two_names_with_one_golden_folder_are_a_clear_error(tmp_path: Path) -> None:
    """``name="x/y"`` is kept in the folder ``x_y-bd3c9047d6``, which is also the folder of that literal name: the
    two snapshots shared one golden, rewritten by every ``--featviz-update`` and drifting on every check."""
    from pytest_featviz.goldenpath import sanitize_name

    snap = snapshotter(tmp_path, update=True)
    folder = sanitize_name("x/y")
    assert folder == "x_y-bd3c9047d6"
    snap(_net(), _x(), layers="stem", name="x/y")
    with pytest.raises(FeatvizError) as raised:
        snap(_net(), _x(), layers="layer1", name=folder)
    assert str(raised.value) == (
        f"snapshot name '{folder}' in tests/test_model.py::test_features has the golden folder of the snapshot named"
        f" 'x/y' ({folder}); give this call another name="
    )
    test_dir = next(tmp_path.rglob("test_features"))
    assert [p.name for p in test_dir.iterdir()] == [folder]
    assert snap(_net(), _x(), layers="stem", name="x_y").name == "x_y"  # a name of its own folder is fine
    # the same name in its two Unicode forms: one folder (golden paths read the composed form), and two names that
    # look alike in the message, which says how they differ
    snap(_net(), _x(), layers="stem", name="caf\u00e9")
    with pytest.raises(FeatvizError, match="the two differ only in Unicode form, which golden paths read as one name"):
        snap(_net(), _x(), layers="stem", name=unicodedata.normalize("NFD", "caf\u00e9"))


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
    with pytest.raises(FeatvizError, match="layers holds a Conv2d that is not a submodule of the model"):
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


class OddNames(nn.Module):
    """Modules whose own names hold the characters of patterns, call indices and leaf selectors."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.parts = nn.ModuleDict(
            {
                "x": nn.Conv2d(3, 4, 1),
                "[x]": nn.Conv2d(4, 6, 1),
                "*": nn.Conv2d(6, 6, 1),
                "down[1]": nn.Conv2d(6, 6, 1),
                "down@2": nn.Conv2d(6, 6, 1),
                "block": nn.Conv2d(6, 6, 1),
                "block@1": nn.Conv2d(6, 5, 1),
            }
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in ("x", "[x]", "*", "down[1]", "down@2", "block", "block"):
            x = self.parts[name](x)
        return self.parts["block@1"](x)


@pytest.mark.parametrize("name", ["[x]", "*", "down[1]", "down@2", "block@1"])
def test_a_module_s_own_name_is_never_read_as_a_pattern_or_call_index(name: str) -> None:
    """A module object, its name, and a golden's record of it select that module, not what the name would match
    as a pattern (``[x]`` matched ``x``, ``*`` every layer) or as a call index (``block@1``, ``block``'s second
    call); ``down[1]`` and ``down@2`` were unknown layers whose closest name was themselves."""
    model = OddNames()
    module = model.parts[name]
    for spec in ([module], [f"parts.{name}"]):
        (target,) = resolve_layers(model, spec)
        assert (target.name, target.module, target.call) == (f"parts.{name}", module, None)


def test_patterns_and_call_indices_still_work_beside_odd_names(tmp_path: Path) -> None:
    model = OddNames()
    assert [t.name for t in resolve_layers(model, "parts.d*")] == ["parts.down[1]", "parts.down@2"]
    (second,) = resolve_layers(model, "parts.block@2")  # no module of that name: block's second call
    assert (second.name, second.module, second.call) == ("parts.block", model.parts["block"], 2)
    inputs = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    result = snapshotter(tmp_path, update=True)(model, inputs, layers=[model.parts["[x]"]])
    assert [(layer.name, layer.shape[1]) for layer in result.layers] == [("parts.[x]", 6)]
    again = snapshotter(tmp_path)(model, inputs, layers=None)  # the golden's record, re-resolved
    assert [layer.name for layer in again.layers] == ["parts.[x]"]


def test_a_layer_name_with_a_lone_surrogate_is_refused_only_when_selected(tmp_path: Path) -> None:
    """Such a name (``os.fsdecode`` of bytes that are not UTF-8) cannot be written to a sidecar or a report."""
    model = nn.Sequential(nn.ModuleDict({"photo_\udce9": nn.Conv2d(3, 4, 1), "plain": nn.Conv2d(3, 4, 1)}))
    assert [t.name for t in resolve_layers(model, "0.plain")] == ["0.plain"]
    with pytest.raises(FeatvizError, match=r"layer name '0.photo_\\udce9' holds a lone surrogate \(\\udce9\)"):
        resolve_layers(model, "0.*")


class CalledTwice(nn.Module):
    """``act`` runs twice; a module of its own is named ``act@1``, the name of act's second call."""

    def __init__(self, odd: bool) -> None:
        super().__init__()
        self.act = nn.ReLU()
        self.conv = nn.Conv2d(3, 3, 1)
        if odd:
            self.add_module("act@1", nn.Conv2d(3, 3, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv(self.act(x)))
        odd = getattr(self, "act@1", None)
        return odd(x) if odd is not None else x


def test_a_call_named_like_another_module_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    """The golden held two layers 'act@1' (the call and the module), which every later check refused as malformed,
    and --featviz-update re-created as damaged on every run."""
    torch.manual_seed(0)
    model, inputs = CalledTwice(odd=True), torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    for layers in (["act", "act@1"], ["act"]):
        with pytest.raises(FeatvizError) as caught:
            snapshotter(tmp_path, update=True)(model, inputs, layers=layers)
        assert str(caught.value) == (
            "layer 'act' ran 2 times, and its call 2 would be stored as 'act@1', the name of another module of"
            " CalledTwice: a golden cannot tell them apart. Rename that module (a name ending in '@' and a number"
            " reads as a call index), or select one call of 'act' ('act@0' is its first)"
        )
    assert not any(tmp_path.rglob("*.json"))
    result = snapshotter(tmp_path, update=True)(model, inputs, layers=["act@0", "act@1"])  # the way out it names
    assert [layer.name for layer in result.layers] == ["act", "act@1"]
    assert snapshotter(tmp_path)(model, inputs, layers=None).outcome == "matched"


def test_a_golden_of_one_call_is_checked_on_that_call_alone(tmp_path: Path) -> None:
    """A golden made with layers=["act@0"] records 'act'; read back (layers=None), that name selected every call,
    and the check failed on 'act@1: selected now but not in the golden'."""
    torch.manual_seed(0)
    model, inputs = CalledTwice(odd=False), torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    made = snapshotter(tmp_path, update=True)(model, inputs, layers=["act@0"])
    assert [layer.name for layer in made.layers] == ["act"]
    again = snapshotter(tmp_path)(model, inputs, layers=None)
    assert again.outcome == "matched" and [layer.name for layer in again.layers] == ["act"]
    every = snapshotter(tmp_path / "every", update=True)(model, inputs, layers=["act"])  # every call, read back
    assert [layer.name for layer in every.layers] == ["act", "act@1"]
    assert [layer.name for layer in snapshotter(tmp_path / "every")(model, inputs, layers=None).layers] == [
        "act",
        "act@1",
    ]


class Repeated(nn.Module):
    """``shared`` runs ``times`` times, each time on a flipped input."""

    def __init__(self, times: int) -> None:
        super().__init__()
        self.times = times
        self.shared = nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.times):
            x = self.shared(x.flip(-1))
        return x


@pytest.mark.parametrize(
    ("times", "line"),
    [
        (3, "  shared@2: selected now but not in the golden: 'shared' ran 3 time(s), the golden holds 2 of its calls"),
        (1, "  shared@1: in the golden but not captured now: 'shared' ran 1 time(s), the golden holds 2 of its calls"),
    ],
)
def test_a_module_that_runs_another_number_of_times_says_so(tmp_path: Path, times: int, line: str) -> None:
    """The message blamed the test's layers=, channels= or an option for what the model's forward pass changed."""
    torch.manual_seed(0)
    model, inputs = Repeated(2), torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    snapshotter(tmp_path, update=True)(model, inputs, layers=["shared"])
    model.times = times
    with pytest.raises(FeatureDriftError) as caught:
        snapshotter(tmp_path)(model, inputs, layers=["shared"])
    lines = str(caught.value).splitlines()
    assert line in lines
    assert any(text.endswith("or runs a module another number of times)") for text in lines)


def test_a_layout_that_changed_with_its_shape_unchanged_is_not_called_moved_activations(tmp_path: Path) -> None:
    """A golden made by a version that read an output another way: the message said the activations moved, "a code or
    dependency change", though nothing was compared and nothing moved."""
    torch.manual_seed(0)
    model, inputs = (
        nn.Sequential(nn.Conv2d(3, 4, 1)),
        torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(1)),
    )
    snapshotter(tmp_path, update=True)(model, inputs, layers=["0"])
    (sidecar,) = tmp_path.rglob("snapshot.json")
    sidecar.write_text(sidecar.read_text().replace('"layout": "nchw"', '"layout": "nhwc"'))
    with pytest.raises(FeatureDriftError) as caught:
        snapshotter(tmp_path)(model, inputs, layers=["0"])
    lines = str(caught.value).splitlines()
    assert "  0: layout changed from nhwc to nchw" in lines
    assert (
        "the drifted layers were not compared picture by picture: their layout changed while their output shapes did"
        " not, so their modules' types changed, or this version of pytest-featviz reads such an output another way"
        " (see its changelog); if the model did not change, re-make the golden with --featviz-update"
    ) in lines
    assert not any("activations moved" in line for line in lines)


def test_a_gone_layer_is_looked_for_under_another_parent() -> None:
    """A golden's layer the model lost is named where the same name sits under another parent (a model wrapped
    in nn.Sequential, a block moved into a stage), with its call index and leaf selector."""
    inner = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU())
    wrapped = module_index(nn.Sequential(inner, nn.Sequential(nn.Identity(), nn.Identity())))
    assert under_another_parent(wrapped, "1") == ["0.1", "1.1"]
    assert under_another_parent(wrapped, "0@2") == ["0.0@2", "1.0@2"]
    assert under_another_parent(wrapped, "1+out") == ["0.1+out", "1.1+out"]
    assert under_another_parent(wrapped, "head") == []
