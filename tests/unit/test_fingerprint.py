"""fingerprint: the input's and the weights' fingerprints a golden records (every change and permutation shows, the
same integers on every path, the same for a float64 copy and a channels-last layout)."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from pytest_featviz.fingerprint import UNKNOWN_INPUT, WEIGHT_SCHEME, ParameterFingerprints, input_fingerprint


def _net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 3, 1))


def _print(model: nn.Module, scheme: int = WEIGHT_SCHEME) -> str:
    return ParameterFingerprints(model, scheme).of(model)


def test_same_weights_in_another_object_give_the_same_fingerprint() -> None:
    assert _print(_net()) == _print(copy.deepcopy(_net())) == _print(_net())
    assert _print(_net()) != _print(_net(seed=1))


def _changed(edit: Callable[[nn.Sequential], None]) -> bool:
    model = _net()
    before = _print(model)
    with torch.no_grad():
        edit(model)
    return _print(model) != before


def _next_float(model: nn.Sequential) -> None:
    weight = model[0].weight
    weight[1, 0, 2, 2] = torch.nextafter(weight[1, 0, 2, 2], torch.tensor(1.0))


def _swap_output_channels(model: nn.Sequential) -> None:
    weight = model[0].weight
    weight[[0, 1]] = weight[[1, 0]].clone()


def _swap_within_a_row(model: nn.Sequential) -> None:
    weight = model[3].weight  # (3, 4, 1, 1): row 0 holds 4 weights
    weight[0, [0, 1]] = weight[0, [1, 0]].clone()


def _running_mean(model: nn.Sequential) -> None:
    model[1].running_mean[2] += 0.5


@pytest.mark.parametrize(
    "edit", [_next_float, _swap_output_channels, _swap_within_a_row, _running_mean], ids=lambda f: f.__name__
)
def test_a_small_change_of_any_weight_or_buffer_changes_the_model_fingerprint(
    edit: Callable[[nn.Sequential], None],
) -> None:
    assert _changed(edit)


def _values(model: nn.Module) -> str:
    return ParameterFingerprints(model).values_of(model)


class _Renamed(nn.Module):
    """``_net``'s modules under other attribute names."""

    def __init__(self, inner: nn.Sequential) -> None:
        super().__init__()
        self.conv, self.norm, self.act, self.head = inner


def test_the_values_fingerprint_ignores_names_and_nothing_else() -> None:
    """Wrapped or renamed, a model keeps its values fingerprint (its model fingerprint, which hashes names, does
    not); a change of any value, or two tensors of the same shape swapped between modules, changes it."""
    same = [nn.DataParallel(_net()), nn.Sequential(_net()), _Renamed(_net())]
    assert {_values(model) for model in same} == {_values(_net())}
    assert len({_print(model) for model in [_net(), *same]}) == 4
    for edit in (_next_float, _running_mean):
        model = _net()
        with torch.no_grad():
            edit(model)
        assert _values(model) != _values(_net())
    torch.manual_seed(0)
    twins = nn.Sequential(nn.Conv2d(2, 2, 1), nn.Conv2d(2, 2, 1))
    swapped = copy.deepcopy(twins)
    with torch.no_grad():
        swapped[0].weight.copy_(twins[1].weight)
        swapped[1].weight.copy_(twins[0].weight)
    assert _values(swapped) != _values(twins)


def test_layer_fingerprints_change_only_for_the_layer_whose_weights_changed() -> None:
    model = _net()
    layers = {"0": model[0], "3": model[3]}
    before = ParameterFingerprints(model).layers(layers)
    with torch.no_grad():
        model[3].bias[0] += 1.0
    after = ParameterFingerprints(model).layers(layers)
    assert before["0"] == after["0"] and before["3"] != after["3"]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.bool])
def test_fingerprints_read_every_dtype(dtype: torch.dtype) -> None:
    holder = nn.Module()
    holder.register_buffer("values", (torch.arange(7) % 2).to(dtype))
    holder.register_buffer("empty", torch.zeros(0, dtype=dtype))
    first = _print(holder)
    holder.values[3] = holder.values[2]  # 1 -> 0
    assert _print(holder) != first


@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int8, torch.bool]
)
@pytest.mark.parametrize("shape", [(7,), (5, 3), (4, 3, 2, 2), (0, 3)])
def test_the_numpy_path_of_cpu_tensors_gives_the_torch_path_s_integers(
    dtype: torch.dtype, shape: tuple[int, ...]
) -> None:
    # CPU goldens and GPU checks must agree on fingerprints: CPU tensors go through numpy, others through torch.
    from pytest_featviz.fingerprint import _cpu_sums, _tensor_sums

    values = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 1e4
    tensor = values.to(dtype) if dtype != torch.bool else values > 0
    assert _cpu_sums([tensor]) == [_tensor_sums(tensor).tolist()]
    big = torch.full((3, 70000), 2.0**30).view(torch.int32).view(torch.float32)  # int32 sums that wrap
    assert _cpu_sums([big]) == [_tensor_sums(big).tolist()]


def test_cpu_tensors_reduced_together_give_each_tensor_s_own_integers() -> None:
    # The small one-row tensors of a CPU model (biases, norms, scalars) are reduced in one batch; each must still get
    # the integers the per-tensor torch path gives it, wrap-arounds included, whatever sits around it in the batch.
    from pytest_featviz.fingerprint import _cpu_sums, _tensor_sums

    generator = torch.Generator().manual_seed(0)
    wraps = (torch.arange(9, dtype=torch.int32) + 3 * 2**29).view(torch.float32)  # words whose int32 sum wraps
    tensors = [
        torch.randn(5, generator=generator),
        torch.tensor(2.5),
        wraps,
        torch.zeros(0),
        torch.randn(4, 3, generator=generator),  # several rows: reduced on its own
        torch.randn(6, generator=generator).double(),  # two words per element
        torch.arange(3, dtype=torch.int8),  # narrow words: reduced on its own
        torch.tensor(7, dtype=torch.int64),
        torch.randn(2, 70000, generator=generator),  # large: torch passes
        wraps.flip(0),  # the same words permuted: only the position-weighted sum tells them apart
    ]
    expected = [_tensor_sums(tensor).tolist() for tensor in tensors]
    assert _cpu_sums(tensors) == expected
    assert expected[2][:2] == expected[-1][:2] and expected[2][2] != expected[-1][2]


@pytest.mark.parametrize("change", ["x2", "x0.5", "x4", "x1/8", "negated"])
@pytest.mark.parametrize("layer", ["Conv2d(512, 512, 3)", "Linear(1024, 1024)", "Linear(768, 768)"])
def test_scaling_by_a_power_of_two_or_a_sign_flip_changes_the_fingerprint(layer: str, change: str) -> None:
    """Found by QA: either adds the same number to every int32 word of the tensor (k * 2**23, 2**31), which cancels
    in wrapping sums over rows and columns of such lengths; scheme 1 called the weights unchanged, and a drift
    message blamed a code change for a folded-in attention scale applied twice."""
    torch.manual_seed(0)
    module = eval(f"nn.{layer}")  # noqa: S307  (a literal of this test)
    before = {scheme: _print(module, scheme) for scheme in (1, 2)}
    with torch.no_grad():
        module.weight.copy_(-module.weight if change == "negated" else module.weight * eval(change[1:]))  # noqa: S307
    after = {scheme: _print(module, scheme) for scheme in (1, 2)}
    assert after[2] != before[2]
    # what scheme 1 missed: every one where rows and columns are multiples of 512 words; of 768, those of 2**2 and -1
    assert (after[1] == before[1]) == (layer != "Linear(768, 768)" or change in ("x4", "negated"))


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.linspace(1.0, 0.0, 1000)[::50][:1],  # one step of a strided schedule: stride 50, size 1
        lambda: torch.arange(5)[None].T,  # (5, 1) with strides (1, 5): 8-byte words viewed as int32
        lambda: torch.arange(10)[::5][:1],
        lambda: torch.randn(3, 1, dtype=torch.cfloat, generator=torch.Generator().manual_seed(0)).conj(),
    ],
    ids=["float-step", "long-column", "long-step", "lazy-conjugate"],
)
def test_a_tensor_torch_calls_contiguous_with_an_odd_last_stride_is_fingerprinted(make: Any) -> None:
    """Found by QA: creating a golden raised "self.stride(-1) must be 1 to view Float as Byte" for a diffusion
    model's one timestep sliced from a schedule, and "view Long as Int" for a transposed id buffer: torch calls
    such tensors contiguous, so .contiguous() left them as they were."""
    from pytest_featviz.fingerprint import _cpu_sums, _tensor_sums

    odd = make()
    assert odd.is_conj() or (odd.is_contiguous() and odd.stride(-1) != 1)
    fresh = odd.resolve_conj().clone(memory_format=torch.contiguous_format)
    assert input_fingerprint((torch.ones(1), odd)) == input_fingerprint((torch.ones(1), fresh))
    holder, twin = nn.Module(), nn.Module()
    holder.register_buffer("odd", odd)
    twin.register_buffer("odd", fresh)
    assert _print(holder) == _print(twin)
    assert _cpu_sums([odd]) == [_tensor_sums(odd).tolist()] == [_tensor_sums(fresh).tolist()]


def test_fingerprints_are_the_same_for_contiguous_and_channels_last_weights() -> None:
    model = _net()
    assert _print(model) == _print(copy.deepcopy(model).to(memory_format=torch.channels_last))


def test_input_fingerprint_hashes_values_shapes_and_structure() -> None:
    torch.manual_seed(0)
    x = torch.rand(1, 2, 5, 5)
    assert input_fingerprint(x) == input_fingerprint(x.clone()) == input_fingerprint(x.permute(0, 1, 3, 2).mT)
    changed = x.clone()
    changed[0, 1, 4, 4] += 1e-6
    assert input_fingerprint(changed) != input_fingerprint(x)
    assert input_fingerprint(x.double()) == input_fingerprint(x)  # float64 is read rounded to float32
    assert input_fingerprint(x.half()) != input_fingerprint(x)
    assert input_fingerprint(x.reshape(1, 2, 25)) != input_fingerprint(x)
    assert input_fingerprint({"a": x, "b": 2}) != input_fingerprint({"a": x, "b": 3})
    assert input_fingerprint((x, x)) != input_fingerprint([x, x])


def test_input_fingerprint_hashes_the_values_of_arrays_and_images() -> None:
    from PIL import Image

    photo = np.zeros((64, 64, 3), dtype=np.uint8)
    retouched = photo.copy()
    retouched[32, 32, 1] = 7  # in the middle, which numpy's repr of a large array leaves out
    assert input_fingerprint(photo) != input_fingerprint(retouched)
    assert input_fingerprint(photo) == input_fingerprint(np.asfortranarray(photo))  # the values, not the layout
    assert input_fingerprint(photo) != input_fingerprint(photo.astype(np.int16))
    assert input_fingerprint(photo) != input_fingerprint(photo.reshape(64, 192))
    # A PIL image's repr names its address, so the same picture used to fingerprint differently on every run.
    assert input_fingerprint(Image.fromarray(photo)) == input_fingerprint(Image.fromarray(photo.copy()))
    assert input_fingerprint(Image.fromarray(photo)) != input_fingerprint(Image.fromarray(retouched))
    assert input_fingerprint(Image.fromarray(photo)) != input_fingerprint(photo)  # an image is not its array
    objects = np.array([1, "a", None], dtype=object)
    assert input_fingerprint(objects) == input_fingerprint(objects.copy())

    class Broken:  # claims the array interface and fails on it: told by its repr, no error
        @property
        def __array_interface__(self) -> dict[str, object]:
            raise TypeError("not an array after all")

        def __repr__(self) -> str:
            return "Broken()"

    assert input_fingerprint(Broken()) == input_fingerprint(Broken()) != UNKNOWN_INPUT
    assert input_fingerprint("look at 0xdead") != UNKNOWN_INPUT  # an address only counts at the end of a repr


def test_an_input_part_known_only_by_its_address_makes_the_fingerprint_unknown() -> None:
    class Config:  # the default repr: <...Config object at 0x7f...>
        pass

    assert input_fingerprint(Config()) == UNKNOWN_INPUT
    assert input_fingerprint({"image": torch.zeros(2), "config": Config()}) == UNKNOWN_INPUT
    assert input_fingerprint({"image": torch.zeros(2), "scale": 0.5}) != UNKNOWN_INPUT


@dataclasses.dataclass
class _Batch:
    image: torch.Tensor
    name: str = "batch"


class _Graph:
    """Described by a repr that shows what a tensor holds only in part, as PyTorch Geometric's ``Data`` does."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __repr__(self) -> str:
        return f"_Graph(x={self.x!r})"


def test_a_dataclass_input_is_fingerprinted_by_its_fields_values() -> None:
    """Its repr leaves the middle of a large tensor out: an edit there read as "the input is unchanged"."""
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    edited = image.clone()
    edited[..., 20:40, 20:40] = 1.0 - edited[..., 20:40, 20:40]
    assert repr(_Batch(image)) == repr(_Batch(edited))
    assert input_fingerprint(_Batch(image)) == input_fingerprint(_Batch(image.clone())) != UNKNOWN_INPUT
    assert input_fingerprint(_Batch(image)) != input_fingerprint(_Batch(edited))
    assert input_fingerprint(_Batch(image)) != input_fingerprint(_Batch(image, name="other"))


def test_an_input_part_whose_repr_leaves_values_out_makes_the_fingerprint_unknown() -> None:
    assert input_fingerprint(_Graph(torch.zeros(2, 3))) != UNKNOWN_INPUT  # a small tensor's repr shows it all
    assert input_fingerprint(_Graph(torch.zeros(100, 100))) == UNKNOWN_INPUT
    # an ellipsis in text is no left-out value
    texts = ("a photo of a cat...", SimpleNamespace(text="wait..."), Path("/data/.../x.png"), {"dog..."}, ["a, ..., b"])
    for text in texts:
        assert input_fingerprint(text) == input_fingerprint(copy.deepcopy(text)) != UNKNOWN_INPUT


def test_an_input_that_holds_itself_is_fingerprinted() -> None:
    root = _Batch(torch.ones(2))
    tree = {"root": root, "nodes": [root]}
    tree["nodes"].append(tree)  # type: ignore[attr-defined]
    assert input_fingerprint(tree) != UNKNOWN_INPUT
    tree["root"].image[0] = 2.0  # type: ignore[attr-defined]
    assert input_fingerprint(tree) != input_fingerprint({"root": _Batch(torch.ones(2)), "nodes": []})


def test_a_quantized_model_s_packed_weights_are_fingerprinted() -> None:
    """Dynamically quantized linears keep their weights packed, neither parameters nor buffers: every fingerprint
    was the empty one, and a drift message called new weights "a code or dependency change"."""
    import warnings

    def quantized(scale: float) -> nn.Module:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
        with torch.no_grad():
            model[0].weight.mul_(scale)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notice that eager quantization moves to torchao
            return torch.ao.quantization.quantize_dynamic(model, {nn.Linear})

    before, after, again = quantized(1.0), quantized(1.3), quantized(1.0)
    prints = [ParameterFingerprints(m).layers({"0": m[0], "2": m[2]}) for m in (before, after, again)]
    assert prints[0]["0"] != prints[1]["0"] and prints[0]["2"] == prints[1]["2"]
    assert prints[0] == prints[2]
    assert ParameterFingerprints(nn.Sequential()).of(nn.Sequential()) != prints[0]["0"]


def test_sparse_nested_and_quantized_inputs_are_fingerprinted_by_their_values() -> None:
    """A sparse input (a graph's adjacency) crashed the golden write with torch's "unsupported memory format option
    Contiguous"; sparse tensors are read as indices and values (never made dense), in any sparse layout."""
    import warnings

    eye = torch.eye(4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # beta / prototype / deprecation notices of these tensor kinds
        coo, csr = input_fingerprint((eye.to_sparse(),)), input_fingerprint((eye.to_sparse_csr(),))
        nested = [torch.nested.nested_tensor([torch.ones(2), torch.ones(k)]) for k in (3, 4)]
        quantized = [torch.quantize_per_tensor(torch.full((3,), v), 0.1, 0, torch.quint8) for v in (1.0, 2.0)]
    assert coo == csr != input_fingerprint(((2 * eye).to_sparse(),))
    assert coo != input_fingerprint((eye,))
    assert input_fingerprint(nested[0]) != input_fingerprint(nested[1])
    assert input_fingerprint(quantized[0]) != input_fingerprint(quantized[1]) != UNKNOWN_INPUT


def _fill(model: nn.Module) -> nn.Module:
    """Every parameter and buffer set to exact values made of integers alone (no random generator, no libm), so
    the pinned fingerprints below depend on nothing but the fingerprint code."""
    with torch.no_grad():
        for offset, tensor in enumerate([*model.parameters(), *model.buffers()]):
            steps = torch.arange(tensor.numel(), dtype=torch.int64) * 7919 + offset * 104729
            values = (steps % 255 - 127).reshape(tensor.shape)
            if tensor.dtype == torch.bool:
                tensor.copy_(values % 3 == 0)
            elif tensor.dtype.is_floating_point:
                tensor.copy_(values.to(torch.float64) / 64)  # 8 significant bits at most: exact in every float type
            else:
                tensor.copy_(values)
    return model


def _pinned_net() -> nn.Module:
    """Convolutions with norms (running stats, batch counts), a nested block, and a linear large enough for the
    torch sums (at least 2**16 words)."""
    block = nn.Sequential(nn.Conv2d(8, 8, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
    return _fill(
        nn.Sequential(
            nn.Conv2d(3, 8, 3),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            block,
            nn.Flatten(),
            nn.Linear(300, 256),
            nn.Linear(256, 4),
        )
    )


def _pinned_shared() -> nn.Module:
    """Tied and shared weights, a module under two names, ``None`` parameters and buffers, a transposed
    (non-contiguous) parameter, and buffers of many dtypes, empty ones and scalars included."""
    model = nn.Module()
    model.embed = nn.Embedding(50, 16)
    model.head = nn.Linear(16, 50, bias=False)
    model.shared = nn.Linear(16, 16)
    model.blocks = nn.Sequential(model.shared, nn.LayerNorm(16), model.shared)
    model.norm = nn.BatchNorm1d(16, affine=False)
    model.plain = nn.Linear(5, 3)
    model.plain.register_parameter("bias", None)
    model.plain.register_buffer("missing", None)
    holder = nn.Module()
    for dtype in (torch.float16, torch.bfloat16, torch.float64, torch.int8, torch.int32, torch.int64, torch.bool):
        name = str(dtype).removeprefix("torch.")
        holder.register_buffer(f"{name}_matrix", torch.zeros(4, 6, dtype=dtype))
        holder.register_buffer(f"{name}_vector", torch.zeros(9, dtype=dtype))
        holder.register_buffer(f"{name}_scalar", torch.zeros((), dtype=dtype))
        holder.register_buffer(f"{name}_empty", torch.zeros(0, 3, dtype=dtype))
    model.holder = holder
    _fill(model)
    model.head.weight = model.embed.weight  # tied after filling: the one tensor, under its first name
    model.transposed = nn.Parameter(model.plain.weight.detach().clone().t())  # (5, 3) view of a (3, 5) tensor
    model.holder.register_buffer("alias", model.norm.running_mean)  # a buffer under a second name
    return model


_EMPTY = "4f53cda18c2baa0c"  # the fingerprint of a module without parameters or buffers (either scheme)
_PINNED_1 = {  # scheme 1: the goldens written before scheme 2 record these
    "net": (
        _pinned_net,
        {
            "": "dc367ecbfb3e2a36",
            "0": "5466a51e212dd1ed",
            "1": "809d9a23c316bfcc",
            "2": _EMPTY,
            "3": "54b8c418c28d4ab8",
            "3.0": "025e8d72fe3105cd",
            "3.1": "2285680263db4b19",
            "3.2": _EMPTY,
            "4": _EMPTY,
            "5": "38c935e63b627157",
            "6": "2203ffa414582516",
        },
    ),
    "shared": (
        _pinned_shared,
        {
            "": "a33967ca8c1b1746",
            "embed": "01fe0eda949ee262",
            "head": "01fe0eda949ee262",
            "shared": "5a1e705915d82ed0",
            "blocks": "14c2b4dd01346865",
            "blocks.1": "1000cd43c5cc4624",
            "norm": "4a009560f6f01a42",
            "plain": "862e06348c3afdbe",
            "holder": "22bf58d3234f475c",
        },
    ),
}


_PINNED_2 = {
    "net": {
        "": "5110970a334bde9e",
        "0": "8f515e4c022e9daf",
        "1": "2f7b5a0c8f1d8fab",
        "2": _EMPTY,
        "3": "129d1dc8b422a665",
        "3.0": "5ecb7328829819f5",
        "3.1": "e27ecc7393f981f6",
        "3.2": _EMPTY,
        "4": _EMPTY,
        "5": "9af1d8d222d48913",
        "6": "fb66ebff9dfc9d8e",
    },
    "shared": {
        "": "b2d01f2cdfcae22f",
        "embed": "7698f0b9349712ce",
        "head": "7698f0b9349712ce",
        "shared": "c4092c6d18a5acd2",
        "blocks": "784ec4fc0645c72e",
        "blocks.1": "cbc9b63d13bee08f",
        "norm": "781b588f27683960",
        "plain": "d4b1a42f1a48ef66",
        "holder": "c2d6dc4458c9504e",
    },
}


def test_fingerprints_by_another_scheme_reuse_the_reduction(monkeypatch: pytest.MonkeyPatch) -> None:
    """A drift against a scheme-1 golden needs scheme 1's fingerprints for its message and scheme 2's for its current
    render: the tensors are reduced once for both."""
    from pytest_featviz import fingerprint

    model = _net()
    newest = ParameterFingerprints(model)
    layers = {"0": model[0], "3": model[3]}
    expected = (newest.of(model), newest.values_of(model), newest.layers(layers))
    alone = ParameterFingerprints(model, 1)
    expected_1 = (alone.of(model), alone.values_of(model), alone.layers(layers))
    monkeypatch.setattr(fingerprint, "_cpu_sums", lambda tensors: pytest.fail("reduced again"))
    older = newest.by_scheme(1)
    assert (older.of(model), older.values_of(model), older.layers(layers)) == expected_1 != expected
    assert (newest.of(model), newest.values_of(model), newest.layers(layers)) == expected


@pytest.mark.parametrize("scheme", [1, 2])
@pytest.mark.parametrize("case", sorted(_PINNED_1))
def test_fingerprints_keep_the_values_goldens_recorded(case: str, scheme: int) -> None:
    """Committed goldens record these strings: a faster fingerprint that changed one would call every golden's
    weights changed. The values were made by the fingerprint code of each scheme as it stood when it was pinned;
    scheme 1's are still made, to explain a drift against a golden written before scheme 2."""
    build, expected = _PINNED_1[case][0], _PINNED_1[case][1] if scheme == 1 else _PINNED_2[case]
    model = build()
    prints = ParameterFingerprints(model, scheme)  # as provenance calls it: the model, then its selected layers
    assert prints.of(model) == expected[""]
    assert prints.layers(dict(model.named_modules())) == expected
    assert {name: _print(module, scheme) for name, module in model.named_modules()} == expected  # each on its own


def _reference_print(module: nn.Module) -> str:
    """The fingerprint as first written: torch's own walks, each tensor's sums on the torch path, json.dumps."""
    from pytest_featviz.fingerprint import _digest, _dtype_label, _tensor_sums

    entries = [*module.named_parameters(), *module.named_buffers()]
    return _digest(
        [[name, f"{tuple(t.shape)}{_dtype_label(t.dtype)}", _tensor_sums(t).tolist()] for name, t in entries]
    )


class _OwnWalk(nn.Module):
    """A module that walks its parameters its own way: it is asked, never walked around."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = nn.Linear(2, 2), nn.Linear(2, 3)

    def named_parameters(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, nn.Parameter]]:
        yield from reversed(list(super().named_parameters(prefix, recurse, remove_duplicate)))


def _walk_cases() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    shared = nn.Linear(3, 3)
    inner = nn.Sequential(nn.Sequential(shared), nn.BatchNorm1d(3))
    reached_twice = nn.Sequential(nn.Sequential(shared, inner), inner, shared)  # first met deep, then higher up
    cycle_top = nn.Sequential(nn.Linear(2, 2))
    cycle = nn.Sequential(cycle_top, nn.Linear(2, 2))
    cycle_top.add_module("back", cycle)
    odd_names = nn.Sequential(nn.Linear(2, 2))
    odd_names.add_module('q"uote', nn.Linear(2, 2))
    odd_names.add_module("ünï\\cödé", nn.BatchNorm1d(2))
    odd_names._modules[""] = nn.Sequential(nn.Linear(2, 3))  # no dot after an empty name: only a direct edit makes one
    odd_names._modules[""]._modules[""] = nn.BatchNorm1d(3)
    patched = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2)))
    patched[1].named_modules = lambda memo=None, prefix="", remove_duplicate=True: iter([(prefix, patched[1])])  # type: ignore[method-assign]
    return {
        "net": _pinned_net(),
        "shared": _pinned_shared(),
        "reached twice": reached_twice,
        "cycle": cycle,
        "odd names": odd_names,
        "own walk": nn.Sequential(_OwnWalk(), nn.Linear(3, 3)),
        "patched instance": patched,
    }


@pytest.mark.parametrize("case", sorted(_walk_cases()))
def test_every_module_s_fingerprint_is_that_of_its_own_named_parameters_and_buffers(case: str) -> None:
    """The model is walked once and each selected module's entries taken from that walk where nothing is shared; a
    module's names, their order and which of its shared tensors it keeps must stay those of its own walk, at every
    depth and under every name a module has."""
    model = _walk_cases()[case]
    prints = ParameterFingerprints(model)
    assert prints.of(model) == _reference_print(model)
    # a module reached by two paths: under each name (a cycle's paths never end: each module once there)
    modules = dict(model.named_modules(remove_duplicate=case == "cycle"))
    assert prints.layers(modules) == {name: _reference_print(module) for name, module in modules.items()}
    for module in modules.values():
        own = [*module.named_parameters(), *module.named_buffers()]
        entries = prints._entries(module)
        assert [name for name, _ in entries] == [name for name, _ in own]
        assert all(ours is theirs for (_, ours), (_, theirs) in zip(entries, own, strict=True))


def test_cpu_tensors_read_without_word_rows_give_the_torch_path_s_integers() -> None:
    # Small contiguous float32, int32 and int64 tensors are read as numpy views, and their vectors and scalars joined
    # per dtype (torch.cat / torch.stack) before one batched reduction: the same bits, so the same integers.
    from pytest_featviz.fingerprint import _cpu_sums, _tensor_sums

    generator = torch.Generator().manual_seed(0)
    payloads = torch.tensor([0x7F800001, 0x7FC12345, 0x7FBFFFFF, 1, -0x7F800001, -1, 0], dtype=torch.int32)
    tensors = [
        torch.randn(5, generator=generator),
        torch.tensor(2.5),
        payloads.view(torch.float32),  # signalling and quiet NaNs with payloads, a denormal
        payloads.view(torch.float32)[3].clone(),
        torch.randn(1, 6, generator=generator),  # one row, two dimensions
        torch.randn(3, 4, generator=generator),  # several rows: reduced on its own
        torch.tensor(7, dtype=torch.int64),
        torch.tensor(-(2**63), dtype=torch.int64),
        torch.tensor([2**63 - 1, -1, 2**32, 0], dtype=torch.int64),
        torch.randint(-(2**62), 2**62, (3, 5), generator=generator),
        payloads.clone(),
        torch.tensor(-(2**31), dtype=torch.int32),
        torch.zeros(0),
        torch.zeros(0, 3, dtype=torch.int64),
        torch.randn(32768, generator=generator).view(torch.int32).add(2**30).view(torch.float32),  # wrapping sums
        torch.arange(32767, dtype=torch.int64),  # just under 2**16 words
        torch.arange(32768, dtype=torch.int64),  # 2**16 words: the torch sums
        torch.randn(6, generator=generator)[::2],  # not contiguous: through _word_rows
        nn.Parameter(torch.randn(4, generator=generator)),  # requires grad
    ]
    assert _cpu_sums(tensors) == [_tensor_sums(tensor).tolist() for tensor in tensors]
