"""environment: the determinism context (each flag set and restored), the environment record, provenance
sentences, and the sidecar fields they travel in."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from pytest_featviz import golden
from pytest_featviz.environment import (
    DeterminismFlags,
    Environment,
    Provenance,
    current_environment,
    deterministic_mode,
    device_type,
    environment_sentence,
    layers_with_new_weights,
    provenance,
    provenance_sentences,
)
from pytest_featviz.fingerprint import UNKNOWN_INPUT


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


def _net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 3, 1))


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


def test_autocast_is_recorded_for_the_snapshot_s_device_and_said_in_the_sentence() -> None:
    # bf16 autocast moves deep and recurrent layers like a change; the message said "the environment is the same"
    plain = current_environment(_net(), torch.zeros(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = current_environment(_net(), torch.zeros(1))
    assert (plain.autocast, mixed.autocast) == ("", "bfloat16")
    assert "autocast" not in plain.to_dict() and Environment.from_dict(mixed.to_dict()) == mixed
    assert environment_sentence(plain, mixed) == (
        f"environment differs from the golden's: golden made on cpu with torch {plain.torch};"
        f" running on cpu with torch {plain.torch}, autocast bfloat16"
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast on another device type than the snapshot's
        assert current_environment(nn.ReLU(), torch.zeros(1, device="meta")).autocast == ""


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
    return Provenance(env, input, model, layers or {"0": "a", "2": "b"}, scheme=2)


def test_weights_called_unchanged_by_scheme_1_fingerprints_say_what_those_miss() -> None:
    """Found by QA: a golden written before scheme 2 still called a doubled or negated tensor unchanged and blamed a
    code change; the message says so where it calls weights unchanged, and only there."""
    old = dataclasses.replace(_provenance(), scheme=1)
    blind = "they miss a weight tensor scaled by a power of two or negated as a whole"
    code = provenance_sentences(old, dataclasses.replace(_provenance(), scheme=1))
    assert len(code) == 2 and "code or dependency change" in code[0] and blind in code[1]
    other = provenance_sentences(old, dataclasses.replace(_provenance(model="m2"), scheme=1))  # other layers
    assert "selected layers' own weights are unchanged" in other[0] and blind in other[1]
    named = provenance_sentences(old, dataclasses.replace(_provenance(model="m2", **{"0": "x", "2": "b"}), scheme=1))
    assert len(named) == 1 and "with changed weights: '0'" in named[0]  # no claim of unchanged weights
    assert not any(blind in line for line in provenance_sentences(_provenance(), _provenance()))  # scheme 2
    settings_only = provenance_sentences(old, dataclasses.replace(_provenance(), scheme=1), compared=False)
    assert settings_only == []  # nothing said of the weights, nothing to qualify


def test_sentence_when_only_activations_moved_points_at_code_or_dependencies() -> None:
    (line,) = provenance_sentences(_provenance(), _provenance())
    assert line.startswith("the input and the model's weights and buffers are unchanged since the golden was made")
    assert "code or dependency change" in line


def test_sentences_when_the_input_changed_rather_than_the_model() -> None:
    """The weights' sentence is there too: without it, "unchanged" read as "not checked"."""
    line, weights = provenance_sentences(_provenance(), _provenance(input="i2"))
    assert line.startswith("the input changed since the golden was made (input fingerprint i1 -> i2)")
    assert "rather than the model" in line
    # a resize under another thread count moves the input's last bits: the sentence says it may be that
    assert "float preprocessing rounds otherwise here" in line and "another thread count" in line
    assert weights == "the model's weights and buffers are unchanged since the golden was made"
    changed = provenance_sentences(_provenance(), _provenance(input="i2", model="m2", **{"0": "c", "2": "b"}))
    assert [line.split(" (")[0] for line in changed] == [
        "the input changed since the golden was made",
        "the model's weights or buffers changed since the golden was made",
    ]


def test_a_changed_model_fingerprint_under_another_half_precision_dtype_says_a_conversion_changes_it() -> None:
    """A float32 golden checked with the model in bfloat16 named the weights of every layer as changed, as if edited.
    The input's sentence says nothing of it: the dtype recorded is the model's, and a model that casts its input
    itself gets the same input as before (a changed input fingerprint is then a real change)."""
    bfloat16 = Environment("2.14.1", "cpu", "bfloat16", False, True, False)
    converted = provenance_sentences(_provenance(), _provenance(env=bfloat16, input="i2", model="m2"))
    assert [line.split(" ")[0:2] for line in converted] == [
        ["environment", "differs"],
        ["the", "input"],
        ["the", "model's"],
    ]
    assert converted[2].endswith(
        "; the dtype changed too (float32 -> bfloat16), and converting a tensor to another dtype rounds its values,"
        " which alone changes its fingerprint"
    )
    assert "dtype" not in converted[1]
    float64 = Environment("2.14.1", "cpu", "float64", False, True, False)  # fingerprinted as float32: no such note
    assert not any("dtype changed" in line for line in provenance_sentences(_provenance(), _provenance(float64, "i2")))


def test_layers_with_changed_weights_are_named_in_forward_order() -> None:
    """Selected as ``layers=["2", "0"]``: the message named them '2', '0' under "drift starts at layer '0'"."""
    golden = _provenance(**{"2": "a", "0": "b"})
    (line,) = provenance_sentences(golden, _provenance(model="m2", **{"2": "c", "0": "d"}), order=["0", "2@1"])
    assert line.endswith("selected layer(s) with changed weights: '0', '2'")


def test_outputs_of_one_module_with_changed_weights_are_named_under_it() -> None:
    """Only ``heads["box"]`` of a module ``m`` with a tuple output changed: the message named every output of ``m`` as
    a layer with changed weights, as if each had its own."""
    leaves = ("m+0", "m+1+box", "m+1+aux+0")
    golden = _provenance(**dict.fromkeys(leaves, "a"), conv="c")
    (line,) = provenance_sentences(golden, _provenance(model="m2", **dict.fromkeys(leaves, "b"), conv="c"))
    assert line.endswith(
        "selected layer(s) with changed weights: 'm' (weights are per module: its outputs 'm+0', 'm+1+box',"
        " 'm+1+aux+0')"
    )


def test_sentences_when_the_weights_changed_name_the_layers() -> None:
    (line,) = provenance_sentences(_provenance(), _provenance(model="m2", **{"0": "a", "2": "c"}))
    assert "the model's weights or buffers changed since the golden was made (model fingerprint m1 -> m2)" in line
    assert line.endswith("selected layer(s) with changed weights: '2'")
    (upstream,) = provenance_sentences(_provenance(), _provenance(model="m2"))
    assert upstream.endswith(
        "the selected layers' own weights are unchanged, so the change is in other layers or buffers"
    )


def test_the_same_values_under_other_names_are_not_called_changed_weights() -> None:
    """A model renamed or wrapped (its parameters' names changed, their values not) read as changed weights; a
    golden written before values were recorded still says so, as it cannot tell."""
    golden = replace(_provenance(), values="v1")
    renamed, code = provenance_sentences(golden, replace(_provenance(model="m2"), values="v1"))
    assert renamed == (
        "the model's weights and buffers hold the values they held when the golden was made, under other names"
        " (model fingerprint m1 -> m2): a module was renamed, moved or wrapped"
    )
    assert code.endswith("yet activations moved: a code or dependency change (the environment is the same too)")
    (alone,) = provenance_sentences(golden, replace(_provenance(model="m2"), values="v1"), compared=False)
    assert alone == renamed
    for then, now in (("v1", "v2"), ("", "v1")):
        (line,) = provenance_sentences(replace(golden, values=then), replace(_provenance(model="m2"), values=now))
        assert line.startswith("the model's weights or buffers changed since the golden was made")


def test_a_layer_name_that_selects_another_module_now_is_said_and_nothing_concluded() -> None:
    """``nn.Sequential(model)`` of an ``nn.Sequential``: layer '0' named the first conv, now the whole inner model.
    The message blamed a code change for pictures compared with another module's."""
    golden = replace(_provenance(), values="v1")
    (line,) = provenance_sentences(golden, replace(_provenance(model="m2", **{"0": "inner", "2": "b"}), values="v1"))
    assert line.endswith(
        "a module was renamed, moved or wrapped; layer name(s) '0' now select modules with other weights than the"
        " golden's layers of those names, so the golden's pictures of them show other modules"
    )


def test_a_changed_layer_is_not_named_as_such_when_the_model_s_names_moved() -> None:
    """A weight changed inside ``nn.Sequential(model)`` of an ``nn.Sequential``: layer '0' (the whole inner model
    now) was named as the layer with changed weights, whichever of its convs changed."""
    golden, now = _provenance(), _provenance(model="m2", **{"0": "inner", "2": "b"})
    (line,) = provenance_sentences(golden, now, names_moved=True)
    assert line.endswith(
        "selected layer(s) whose weights differ from those of the golden's layer of that name: '0', though the model"
        " lost layers the golden holds, so a name may select another module now (a wrapper or a rename) and which"
        " layers' weights changed is not known"
    )
    (plain,) = provenance_sentences(golden, now)
    assert plain.endswith("selected layer(s) with changed weights: '0'")


@pytest.mark.parametrize(
    ("layers", "end"),
    [
        ({"0.0": "a2", "0.2": "b"}, "no selected layer is in the golden under its name, so which layers' weights"),
        ({"0": "a", "4": "c"}, "the selected layers the golden also holds have their own weights unchanged (the"),
    ],
    ids=["renamed", "one-added"],
)
def test_layers_not_in_the_golden_are_not_called_unchanged(layers: dict[str, str], end: str) -> None:
    """A weight changed under a wrapper or a rename: none of the selected layers is in the golden under its name,
    and the message said the selected layers' own weights were unchanged."""
    (line,) = provenance_sentences(_provenance(), _provenance(model="m2", **layers))
    assert line.startswith("the model's weights or buffers changed since the golden was made (model fingerprint")
    assert end in line and "own weights are unchanged, so" not in line


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


def test_the_layers_with_new_weights_are_those_the_fingerprints_can_tell() -> None:
    golden = _provenance()
    assert layers_with_new_weights(golden, _provenance(model="m2", **{"0": "x", "2": "b"})) == {"0"}
    assert layers_with_new_weights(None, _provenance()) == set()  # a golden without provenance
    older = dataclasses.replace(golden, scheme=1)  # other schemes' fingerprints differ whatever the weights
    assert layers_with_new_weights(older, _provenance(model="m2", **{"0": "x", "2": "b"})) == set()
    # the golden's values under other names (a module renamed or wrapped): a name may select another module now
    renamed = dataclasses.replace(_provenance(model="m2", **{"0": "x", "2": "b"}), values="v")
    assert layers_with_new_weights(dataclasses.replace(golden, values="v"), renamed) == set()
