"""environment: the determinism context (each flag set and restored), fingerprints, environment and provenance
sentences, and the sidecar fields they travel in."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pytest_featviz import golden
from pytest_featviz.environment import (
    UNKNOWN_INPUT,
    DeterminismFlags,
    Environment,
    ParameterFingerprints,
    Provenance,
    current_environment,
    deterministic_mode,
    device_type,
    environment_sentence,
    input_fingerprint,
    provenance,
    provenance_sentences,
)


@pytest.fixture(autouse=True)
def restore_flags() -> Iterator[None]:
    """Whatever a test does to the global flags, the next test starts from the same ones."""
    saved = DeterminismFlags.read()
    yield
    saved.restore()


def _matmul_tf32() -> None:
    torch.backends.cuda.matmul.allow_tf32 = True


def _matmul_medium() -> None:
    torch.set_float32_matmul_precision("medium")


def _cudnn_tf32() -> None:
    torch.backends.cudnn.allow_tf32 = True


def _cudnn_benchmark() -> None:
    torch.backends.cudnn.benchmark = True


def _cudnn_not_deterministic() -> None:
    torch.backends.cudnn.deterministic = False


def _deterministic_strict() -> None:
    torch.use_deterministic_algorithms(True, warn_only=False)


def _deterministic_off() -> None:
    torch.use_deterministic_algorithms(False)


FLAGS: dict[str, tuple[Callable[[], None], Callable[[], object], object, object]] = {
    # name: (set a starting state, read the flag, value inside the context, value after it)
    "matmul TF32": (_matmul_tf32, lambda: torch.backends.cuda.matmul.allow_tf32, False, True),
    "matmul precision": (_matmul_medium, torch.get_float32_matmul_precision, "highest", "medium"),
    "cuDNN TF32": (_cudnn_tf32, lambda: torch.backends.cudnn.allow_tf32, False, True),
    "cudnn.benchmark": (_cudnn_benchmark, lambda: torch.backends.cudnn.benchmark, False, True),
    "cudnn.deterministic": (_cudnn_not_deterministic, lambda: torch.backends.cudnn.deterministic, True, False),
    "deterministic algorithms": (_deterministic_off, torch.are_deterministic_algorithms_enabled, True, False),
    "deterministic warn_only": (
        _deterministic_strict,
        torch.is_deterministic_algorithms_warn_only_enabled,
        True,
        False,
    ),
}


@pytest.mark.parametrize("flag", list(FLAGS))
def test_each_flag_is_set_inside_and_restored_after(flag: str) -> None:
    arrange, read, inside, after = FLAGS[flag]
    arrange()
    assert read() == after
    with deterministic_mode(True):
        assert read() == inside
    assert read() == after


@pytest.mark.parametrize("flag", list(FLAGS))
def test_each_flag_is_restored_when_the_block_raises(flag: str) -> None:
    arrange, read, inside, after = FLAGS[flag]
    arrange()
    with pytest.raises(RuntimeError, match="forward failed"), deterministic_mode(True):
        assert read() == inside
        raise RuntimeError("forward failed")
    assert read() == after


@pytest.mark.parametrize("flag", list(FLAGS))
def test_disabled_touches_no_flag(flag: str) -> None:
    arrange, read, _, after = FLAGS[flag]
    arrange()
    with deterministic_mode(False):
        assert read() == after
    assert read() == after


@pytest.mark.parametrize("arrange", [_matmul_tf32, _matmul_medium, _cudnn_tf32, _deterministic_strict, lambda: None])
def test_every_flag_reads_the_same_after_the_context(arrange: Callable[[], None]) -> None:
    arrange()
    before = DeterminismFlags.read()
    with deterministic_mode(True):
        assert DeterminismFlags.read() != before
    assert DeterminismFlags.read() == before


@pytest.mark.parametrize("flag", ["matmul TF32", "matmul precision", "cuDNN TF32"])
def test_full_precision_turns_tf32_off_and_restores_it(flag: str) -> None:
    from pytest_featviz.environment import full_precision

    arrange, read, inside, after = FLAGS[flag]
    arrange()
    benchmark = torch.backends.cudnn.benchmark
    with pytest.raises(RuntimeError, match="forward failed"), full_precision():
        assert read() == inside
        assert not torch.are_deterministic_algorithms_enabled()  # only precision, unlike deterministic_mode
        raise RuntimeError("forward failed")
    assert read() == after and torch.backends.cudnn.benchmark == benchmark


def test_reduced_precision_is_tf32_matmuls_anywhere_or_cudnn_tf32_on_cuda() -> None:
    from pytest_featviz.environment import reduced_precision

    model = nn.Linear(2, 2)
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = True  # PyTorch's default; on a CPU model it changes nothing
    assert not reduced_precision(model, torch.ones(1, 2))
    torch.set_float32_matmul_precision("high")
    assert reduced_precision(model, torch.ones(1, 2))


def test_new_fp32_precision_switches_are_restored() -> None:
    conv = torch.backends.cudnn.conv
    if not hasattr(conv, "fp32_precision"):
        pytest.skip("this torch has no fine-grained fp32_precision switches")
    torch.backends.cudnn.allow_tf32 = True
    assert conv.fp32_precision == "tf32"
    with deterministic_mode(True):
        assert torch.backends.cudnn.allow_tf32 is False  # consistent: torch refuses to read a legacy/new mix
    assert conv.fp32_precision == "tf32" and torch.backends.cudnn.allow_tf32 is True


def test_a_model_run_inside_sees_the_deterministic_flags() -> None:
    seen: list[tuple[bool, bool, str]] = []

    class Spy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(
                (
                    torch.are_deterministic_algorithms_enabled(),
                    torch.backends.cudnn.benchmark,
                    torch.get_float32_matmul_precision(),
                )
            )
            return x

    torch.backends.cudnn.benchmark = True
    with deterministic_mode(True):
        Spy()(torch.zeros(1))
    Spy()(torch.zeros(1))
    assert seen == [(True, False, "highest"), (False, True, "highest")]


def test_warn_only_makes_an_op_without_deterministic_implementation_warn_not_raise() -> None:
    if not torch.cuda.is_available():
        pytest.skip("every CPU op used here has a deterministic implementation; needs CUDA")
    with deterministic_mode(True), warnings.catch_warnings(record=True) as caught:  # pragma: no cover - GPU only
        warnings.simplefilter("always")
        torch.zeros(10, device="cuda").index_add_(0, torch.tensor([0, 0], device="cuda"), torch.ones(2, device="cuda"))
    assert any("deterministic" in str(w.message) for w in caught)  # pragma: no cover


# -- fingerprints -------------------------------------------------------------------------------------------------


def _net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 3, 1))


def _print(model: nn.Module) -> str:
    return ParameterFingerprints(model).of(model)


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
    from pytest_featviz.environment import _cpu_sums, _tensor_sums

    values = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 1e4
    tensor = values.to(dtype) if dtype != torch.bool else values > 0
    assert _cpu_sums([tensor]) == [_tensor_sums(tensor).tolist()]
    big = torch.full((3, 70000), 2.0**30).view(torch.int32).view(torch.float32)  # int32 sums that wrap
    assert _cpu_sums([big]) == [_tensor_sums(big).tolist()]


def test_cpu_tensors_reduced_together_give_each_tensor_s_own_integers() -> None:
    # The small one-row tensors of a CPU model (biases, norms, scalars) are reduced in one batch; each must still get
    # the integers the per-tensor torch path gives it, wrap-arounds included, whatever sits around it in the batch.
    from pytest_featviz.environment import _cpu_sums, _tensor_sums

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


# -- the environment ----------------------------------------------------------------------------------------------


def test_device_type_reads_the_model_then_the_input() -> None:
    assert device_type(_net(), torch.zeros(1)) == "cpu"
    assert device_type(nn.ReLU(), torch.zeros(1, device="meta")) == "meta"
    assert device_type(nn.ReLU(), "no tensor") == "cpu"


def test_current_environment_records_torch_device_dtype_and_flags() -> None:
    environment = current_environment(_net().double(), torch.zeros(1))
    assert environment.torch == torch.__version__.split("+")[0]
    assert (environment.device, environment.dtype, environment.deterministic) == ("cpu", "float64", False)
    with deterministic_mode(True):
        inside = current_environment(_net(), torch.zeros(1))
    assert (inside.matmul_tf32, inside.cudnn_tf32, inside.deterministic) == (False, False, True)


CPU = Environment("2.14.1", "cpu", "float32", False, True, False)
CUDA = Environment("2.14.1", "cuda", "float32", False, True, False)


def test_environment_sentence_says_where_the_golden_was_made_and_where_it_runs() -> None:
    assert environment_sentence(CPU, CUDA) == (
        "environment differs from the golden's: golden made on cpu with torch 2.14.1;"
        " running on cuda with torch 2.14.1, TF32 on"
    )
    assert environment_sentence(CPU, CPU) is None
    newer = Environment("2.15.0", "cpu", "float32", True, True, False)  # TF32 flags do nothing on a CPU
    assert environment_sentence(CPU, newer) == (
        "environment differs from the golden's: golden made on cpu with torch 2.14.1; running on cpu with torch 2.15.0"
    )
    strict = Environment("2.14.1", "cuda", "float32", False, False, True)
    assert environment_sentence(CUDA, strict) == (
        "environment differs from the golden's: golden made on cuda with torch 2.14.1, TF32 on;"
        " running on cuda with torch 2.14.1, deterministic algorithms"
    )


def _provenance(env: Environment = CPU, input: str = "i1", model: str = "m1", **layers: str) -> Provenance:
    return Provenance(env, input, model, layers or {"0": "a", "2": "b"})


def test_sentence_when_only_activations_moved_points_at_code_or_dependencies() -> None:
    (line,) = provenance_sentences(_provenance(), _provenance())
    assert line.startswith("the input and the model's weights and buffers are unchanged since the golden was made")
    assert "code or dependency change" in line


def test_sentences_when_the_input_changed_rather_than_the_model() -> None:
    (line,) = provenance_sentences(_provenance(), _provenance(input="i2"))
    assert line.startswith("the input changed since the golden was made (input fingerprint i1 -> i2)")
    assert "rather than the model" in line


def test_sentences_when_the_weights_changed_name_the_layers() -> None:
    (line,) = provenance_sentences(_provenance(), _provenance(model="m2", **{"0": "a", "2": "c"}))
    assert "the model's weights or buffers changed since the golden was made (model fingerprint m1 -> m2)" in line
    assert line.endswith("selected layer(s) with changed weights: '2'")
    (upstream,) = provenance_sentences(_provenance(), _provenance(model="m2"))
    assert upstream.endswith(
        "the selected layers' own weights are unchanged, so the change is in other layers or buffers"
    )


def test_sentences_combine_environment_input_and_weights() -> None:
    lines = provenance_sentences(_provenance(), _provenance(env=CUDA, input="i2", model="m2"))
    assert [line.split(" ")[0:2] for line in lines] == [
        ["environment", "differs"],
        ["the", "input"],
        ["the", "model's"],
    ]
    (environment, code) = provenance_sentences(_provenance(), _provenance(env=CUDA))
    assert code.endswith("a code or dependency change (or the environment change above)")


def test_an_unknown_input_is_never_called_changed_or_unchanged() -> None:
    for then, now in (("i1", UNKNOWN_INPUT), (UNKNOWN_INPUT, UNKNOWN_INPUT), (UNKNOWN_INPUT, "i1")):
        (line,) = provenance_sentences(_provenance(input=then), _provenance(input=now))
        assert line.startswith("the model's weights and buffers are unchanged since the golden was made; whether the")
        assert "input changed is not known" in line and "repr names a memory address" in line
        (weights,) = provenance_sentences(_provenance(input=then), _provenance(input=now, model="m2"))
        assert weights.startswith("the model's weights or buffers changed since the golden was made")


def test_a_golden_without_provenance_says_so() -> None:
    (line,) = provenance_sentences(None, _provenance())
    assert "records no provenance" in line and "--featviz-update" in line


# -- the sidecar ----------------------------------------------------------------------------------------------------


def _golden(provenance_fields: dict[str, object] | None) -> golden.SnapshotGolden:
    layer = golden.LayerGolden("0", "0.png", (1, 1, 2, 2), (2, 2), (0,), ((0.0, 1.0),), ((0.5, 0.1, 0.0, 1.0),), "x")
    return golden.SnapshotGolden("minmax", 8, (layer,), provenance=provenance_fields)  # type: ignore[arg-type]


def test_provenance_round_trips_through_the_sidecar(tmp_path: Path) -> None:
    model = _net()
    made = provenance(model, torch.zeros(1, 2, 4, 4), {"0": model[0]})
    (tmp_path / golden.SIDECAR).write_text(golden.sidecar_text(_golden(made.to_sidecar())), encoding="utf-8")
    stored = golden.read_sidecar(tmp_path)
    assert stored is not None and Provenance.from_sidecar(stored.provenance) == made
    text = (tmp_path / golden.SIDECAR).read_text(encoding="utf-8")
    assert '"environment": {"torch": ' in text and '"fingerprints": {"input": ' in text


def test_an_old_sidecar_without_provenance_still_loads(tmp_path: Path) -> None:
    (tmp_path / golden.SIDECAR).write_text(golden.sidecar_text(_golden(None)), encoding="utf-8")
    assert "environment" not in (tmp_path / golden.SIDECAR).read_text(encoding="utf-8")
    stored = golden.read_sidecar(tmp_path)
    assert stored is not None and stored.provenance is None and Provenance.from_sidecar(stored.provenance) is None


def test_a_garbled_provenance_is_ignored_not_fatal() -> None:
    assert Provenance.from_sidecar({"environment": {"torch": "2"}, "fingerprints": {}}) is None


def test_keyed_directories_sit_beside_the_shared_one_and_map_back() -> None:
    shared = Path("golden/test_m/test_a/0")
    assert golden.keyed_dir(shared, "cuda") == Path("golden/test_m/test_a/0@cuda")
    assert golden.keyed_dir(shared, "../x") == Path(f"golden/test_m/test_a/0@{golden.sanitize_name('../x')}")
    assert golden.shared_dir(Path("golden/test_m/test_a/0@cuda")) == shared
    assert golden.shared_dir(shared) == shared
    assert golden.shared_dir(Path("g/t/block@1")) == Path("g/t/block@1")  # not a device key


def test_a_model_and_input_converted_to_float64_keep_their_fingerprints() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    x = torch.rand(1, 3, 8, 8)
    layers = {"0": model[0]}
    single = provenance(model, x, layers)
    double = provenance(model.double(), x.double(), layers)
    assert (double.model, double.layers, double.input) == (single.model, single.layers, single.input)
    assert double.environment.dtype == "float64"  # the environment sentence still tells the conversion
    with torch.no_grad():
        model[0].weight[0, 0, 0, 0] += 1e-3  # a real change in float64 still shows
    assert provenance(model, x.double(), layers).model != single.model
