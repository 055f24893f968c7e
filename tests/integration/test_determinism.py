"""Determinism and provenance through real pytest runs: ``deterministic=True`` from call, marker and ini; the
provenance a golden records; the environment / input / weights sentences of a drift message; environment-keyed
goldens with their fallback, their update rule and stale-golden pruning (device detection is faked: no GPU here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# Kept in sys.modules: in-process pytester runs drop the modules they import, and torch cannot be imported twice.
import torch
import torch._dynamo  # noqa: F401  (torch.manual_seed imports it lazily; a second import in one process fails)
from PIL import Image, PngImagePlugin  # noqa: F401

import pytest_featviz.snapshot  # noqa: F401
from pytest_featviz import environment, fingerprint

MODELS = """
import os

import torch
from torch import nn

FLAGS = []


class Spy(nn.Module):
    '''Records the global flags seen during the forward pass.'''

    def forward(self, x):
        FLAGS.append((torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark))
        if os.environ.get("FEATVIZ_TEST_RAISE"):
            raise RuntimeError("forward failed")
        return x


def make_model():
    torch.manual_seed(int(os.environ.get("FEATVIZ_TEST_WEIGHTS", "0")))
    activation = nn.GELU() if os.environ.get("FEATVIZ_TEST_CODE") else nn.ReLU()
    return nn.Sequential(Spy(), nn.Conv2d(2, 3, 3, padding=1), activation, nn.Conv2d(3, 3, 3, padding=1))


def make_input():
    torch.manual_seed(int(os.environ.get("FEATVIZ_TEST_INPUT", "1")))
    return torch.rand(1, 2, 12, 12)
"""

PLAIN = """
from featviz_models import make_input, make_model


def test_a(feature_snapshot):
    feature_snapshot(make_model(), make_input(), layers=["1", "3"])
"""

SIDECAR = Path("golden/test_subject/test_a/0/snapshot.json")
KEYED = Path("golden/test_subject/test_a/0@cuda")


@pytest.fixture
def subject(featviz_pytester: pytest.Pytester) -> pytest.Pytester:
    featviz_pytester.makepyfile(featviz_models=MODELS, test_subject=PLAIN)
    featviz_pytester.syspathinsert()
    return featviz_pytester


def _update(pytester: pytest.Pytester, *args: str) -> None:
    pytester.runpytest("--featviz-update", *args).assert_outcomes(passed=1)


def _message(pytester: pytest.Pytester, *args: str) -> str:
    result = pytester.runpytest(*args)
    result.assert_outcomes(failed=1)
    return result.stdout.str()


# -- deterministic=True ---------------------------------------------------------------------------------------------

FLAG_TESTS = """
import torch
from featviz_models import FLAGS, make_input, make_model


def test_flags(feature_snapshot):
    FLAGS.clear()
    torch.backends.cudnn.benchmark = True
    try:
        feature_snapshot(make_model(), make_input(), layers=["1"]{call})
        inside = list(FLAGS)
        assert inside and all(flags == ({on}, {benchmark}) for flags in inside), inside
        # restored afterwards
        assert torch.backends.cudnn.benchmark is True
        assert torch.are_deterministic_algorithms_enabled() is False
    finally:
        torch.backends.cudnn.benchmark = False
"""


@pytest.mark.parametrize(
    ("source", "ini", "call", "expected"),
    [
        ("default", "", "", (False, True)),
        ("call", "", ", deterministic=True", (True, False)),
        ("marker", "", "", (True, False)),
        ("ini", "featviz_deterministic = true\n", "", (True, False)),
        ("call beats ini", "featviz_deterministic = true\n", ", deterministic=False", (False, True)),
    ],
)
def test_deterministic_flags_hold_during_the_forward_pass_only(
    subject: pytest.Pytester, source: str, ini: str, call: str, expected: tuple[bool, bool]
) -> None:
    subject.makeini(f"[pytest]\naddopts = -p no:cacheprovider\n{ini}")
    test = FLAG_TESTS.format(call=call, on=expected[0], benchmark=expected[1])
    if source == "marker":
        test = test.replace("def test_flags", "@pytest.mark.featviz(deterministic=True)\ndef test_flags")
        test = "import pytest\n" + test
    subject.makepyfile(test_subject=test)
    subject.runpytest("--featviz-update").assert_outcomes(passed=1)
    subject.runpytest().assert_outcomes(passed=1)


def test_flags_are_restored_when_the_forward_pass_raises(subject: pytest.Pytester) -> None:
    subject.makepyfile(
        test_subject="""
import pytest
import torch
from featviz_models import make_input, make_model


def test_raises(feature_snapshot, monkeypatch):
    monkeypatch.setenv("FEATVIZ_TEST_RAISE", "1")
    with pytest.raises(RuntimeError, match="forward failed"):
        feature_snapshot(make_model(), make_input(), layers=["1"], deterministic=True)
    assert torch.are_deterministic_algorithms_enabled() is False
    assert torch.get_float32_matmul_precision() == "highest"
"""
    )
    subject.runpytest().assert_outcomes(passed=1)


def test_a_bad_deterministic_value_is_a_usage_error(subject: pytest.Pytester) -> None:
    subject.makeini("[pytest]\naddopts = -p no:cacheprovider\nfeatviz_deterministic = maybe\n")
    result = subject.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*tox.ini: featviz_deterministic must be true or false (or yes/no, on/off, 1/0); got 'maybe'*"]
    )


# -- provenance in the sidecar and the drift message ----------------------------------------------------------------


def test_the_sidecar_records_environment_and_fingerprints(subject: pytest.Pytester) -> None:
    _update(subject, "--featviz-deterministic")
    data = json.loads((subject.path / SIDECAR).read_text(encoding="utf-8"))
    assert data["environment"] == {
        "torch": torch.__version__.split("+")[0],
        "device": "cpu",
        "dtype": "float32",
        "matmul_tf32": False,
        "cudnn_tf32": False,
        "deterministic": True,
    }
    prints = data["fingerprints"]
    assert set(prints) == {"input", "model", "layers", "values", "scheme"} and set(prints["layers"]) == {"1", "3"}
    assert prints["scheme"] == fingerprint.WEIGHT_SCHEME == 2
    assert all(len(prints[key]) == fingerprint.FINGERPRINT_LENGTH for key in ("input", "model", "values"))


def test_a_code_change_is_named_as_such(subject: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    _update(subject)
    monkeypatch.setenv("FEATVIZ_TEST_CODE", "1")
    message = _message(subject)
    assert (
        "the input and the model's weights and buffers are unchanged since the golden was made, yet activations"
        " moved: a code or dependency change (the environment is the same too)"
    ) in message
    assert "input changed" not in message and "environment differs" not in message


def _recorded_by(pytester: pytest.Pytester, scheme: int) -> None:
    """Rewrites the golden's weight fingerprints as a version that makes them by ``scheme`` would have written them."""
    namespace: dict[str, object] = {}
    exec(MODELS, namespace)
    model = namespace["make_model"]()  # type: ignore[operator]
    made = environment.provenance(model, namespace["make_input"](), {"1": model[1], "3": model[3]}, scheme)  # type: ignore[operator]
    data = json.loads((pytester.path / SIDECAR).read_text(encoding="utf-8"))
    data["fingerprints"] = made.to_sidecar()["fingerprints"]
    (pytester.path / SIDECAR).write_text(json.dumps(data, indent=1), encoding="utf-8")


def test_a_golden_of_the_first_fingerprint_scheme_is_explained_by_it(
    subject: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Goldens written before scheme 2 record scheme 1's fingerprints: compared with scheme 2's, every drift of
    theirs would have called the weights changed."""
    _update(subject)
    _recorded_by(subject, 1)
    assert "scheme" not in json.loads((subject.path / SIDECAR).read_text(encoding="utf-8"))["fingerprints"]
    monkeypatch.setenv("FEATVIZ_TEST_CODE", "1")
    message = _message(subject)
    assert "the input and the model's weights and buffers are unchanged since the golden was made" in message
    assert environment.SCHEME_1_BLIND in message  # what that "unchanged" cannot see
    monkeypatch.setenv("FEATVIZ_TEST_WEIGHTS", "3")
    assert "the model's weights or buffers changed since the golden was made" in _message(subject)


def test_a_golden_of_a_newer_fingerprint_scheme_says_the_weights_are_not_compared(
    subject: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _update(subject)
    data = json.loads((subject.path / SIDECAR).read_text(encoding="utf-8"))
    data["fingerprints"]["scheme"] = 99
    (subject.path / SIDECAR).write_text(json.dumps(data, indent=1), encoding="utf-8")
    monkeypatch.setenv("FEATVIZ_TEST_CODE", "1")
    message = _message(subject)
    assert (
        "whether the model's weights changed is not known: the golden's weight fingerprints were made by a newer"
        " pytest-featviz (scheme 99; this one makes 1, 2): upgrade pytest-featviz to compare them"
    ) in message
    assert "unchanged" not in message and "weights or buffers changed" not in message


@pytest.mark.parametrize(
    "call",
    ['layers=["1"]', 'layers=["1", "3"], channels=2', 'layers=["1", "3"], normalize="sigmoid"'],
    ids=["layer-dropped", "channels", "normalize"],
)
def test_a_change_of_the_snapshot_settings_is_not_called_a_code_change(subject: pytest.Pytester, call: str) -> None:
    _update(subject)
    subject.makepyfile(test_subject=PLAIN.replace('layers=["1", "3"]', call))
    message = _message(subject)
    assert (
        "the drifted layers were not compared picture by picture: their selection, channels or normalization differ"
        " from the golden's (the test's layers=, channels= or normalize=, a marker or an option changed, the model no"
        " longer has a layer the golden holds, or runs a module another number of times)"
    ) in message
    assert "activations moved" not in message and "code or dependency" not in message


WRAPPED = """
import os

from torch import nn

from featviz_models import make_input, make_model


class Renamed(nn.Module):
    '''make_model's modules under other names: a refactor that renamed them.'''

    def __init__(self, inner):
        super().__init__()
        self.spy, self.first, self.act, self.second = inner

    def forward(self, x):
        return self.second(self.act(self.first(self.spy(x))))


def test_a(feature_snapshot):
    model, layers = make_model(), ["1", "3"]
    if os.environ.get("FEATVIZ_TEST_WRAP") == "dp":
        model = nn.DataParallel(model)
    elif os.environ.get("FEATVIZ_TEST_WRAP") == "rename":
        model, layers = Renamed(model), ["first", "second"]
    elif os.environ.get("FEATVIZ_TEST_WRAP") == "seq":  # layers=None: the golden's, which are gone
        model, layers = nn.Sequential(model), None
    feature_snapshot(model, make_input(), layers=layers)
"""


@pytest.mark.parametrize("wrap", ["dp", "rename", "seq"])
def test_weights_under_other_names_are_not_called_changed(
    subject: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, wrap: str
) -> None:
    """A model wrapped in DataParallel, or with its modules renamed, holds the same weights under other parameter
    names: the drift message of a code change under it said its weights or buffers changed."""
    subject.makepyfile(test_subject=WRAPPED)
    _update(subject)
    monkeypatch.setenv("FEATVIZ_TEST_WRAP", wrap)
    monkeypatch.setenv("FEATVIZ_TEST_CODE", "1")
    message = _message(subject)
    assert (
        "the model's weights and buffers hold the values they held when the golden was made, under other names"
        " (model fingerprint "
    ) in message
    assert "a module was renamed, moved or wrapped" in message
    assert "weights or buffers changed" not in message and "with changed weights" not in message
    if wrap == "dp":  # the same layer names: compared, and the drift is a code change
        assert "yet activations moved: a code or dependency change" in message
    else:  # the golden's layers are gone: nothing compared, nothing concluded about activations
        assert "the drifted layers were not compared picture by picture" in message
        assert "activations moved" not in message
    if wrap == "seq":  # where they are now
        assert (
            "  1: no longer in the model (the model has '0.1': the same name under another parent module)"
        ) in message
    monkeypatch.setenv("FEATVIZ_TEST_WEIGHTS", "5")  # new weights under the new names are changed weights
    message = _message(subject)
    assert "the model's weights or buffers changed since the golden was made (model fingerprint " in message
    assert "under other names" not in message
    if wrap != "dp":  # the golden's layer names select nothing, or other modules, now
        assert "which layers' weights changed is not known" in message and "with changed weights" not in message


GONE = """
import os

import torch
from torch import nn



class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        if os.environ.get("FEATVIZ_TEST_RENAME"):  # the refactor: a module without weights renamed
            self.activation = nn.ReLU()
        else:
            self.act = nn.ReLU()
        self.out = nn.Conv2d(8, 8, 3, stride=2, padding=1)

    def forward(self, x):
        act = self.activation if os.environ.get("FEATVIZ_TEST_RENAME") else self.act
        return self.out(act(self.conv(x)))


def test_a(feature_snapshot):
    feature_snapshot(Net(), torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)))
"""


def test_a_layer_gone_from_the_model_is_not_called_a_code_change(
    subject: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The golden's layer 'act' (an activation, without weights) is gone under a new name and the other layers
    match: the message said activations moved, a code change."""
    subject.makepyfile(test_subject=GONE)
    _update(subject)
    assert [layer["name"] for layer in json.loads((subject.path / SIDECAR).read_text())["layers"]] == [
        "conv",
        "act",
        "out",
    ]
    monkeypatch.setenv("FEATVIZ_TEST_RENAME", "1")
    message = _message(subject)
    assert "1 of 3 layer(s) drifted" in message and "act: no longer in the model" in message
    assert "the drifted layers were not compared picture by picture" in message
    assert "activations moved" not in message and "code or dependency" not in message


def test_an_input_change_is_named_rather_than_the_model(
    subject: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _update(subject)
    monkeypatch.setenv("FEATVIZ_TEST_INPUT", "7")
    message = _message(subject)
    assert "the input changed since the golden was made (input fingerprint " in message
    assert "rather than the model" in message
    assert "weights or buffers changed" not in message and "code or dependency" not in message


PHOTO = """
import os

import numpy as np
import torch
from PIL import Image
from torch import nn

from featviz_models import make_model


class FromPhoto(nn.Module):
    '''Preprocessing inside the model: a PIL image in, a (1, 2, H, W) tensor out.'''

    def forward(self, image):
        return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None, :2]


def test_photo(feature_snapshot):
    seed = int(os.environ.get("FEATVIZ_TEST_INPUT", "1"))
    pixels = np.random.default_rng(seed).integers(0, 256, (12, 12, 3), dtype=np.uint8)
    feature_snapshot(nn.Sequential(FromPhoto(), make_model()), Image.fromarray(pixels), layers=["1.1", "1.3"])
"""


def test_a_pil_image_input_is_told_apart_by_its_pixels(
    subject: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A PIL image's repr names its address: fingerprinted by repr, the same picture read as "the input changed"
    # in every drift message.
    subject.makepyfile(test_photo=PHOTO)
    _update(subject, "test_photo.py")
    monkeypatch.setenv("FEATVIZ_TEST_CODE", "1")
    message = _message(subject, "test_photo.py")
    assert "the input and the model's weights and buffers are unchanged since the golden was made" in message
    assert "input changed" not in message
    monkeypatch.delenv("FEATVIZ_TEST_CODE")
    monkeypatch.setenv("FEATVIZ_TEST_INPUT", "7")
    assert "the input changed since the golden was made (input fingerprint " in _message(subject, "test_photo.py")


def test_a_weight_change_names_the_layers(subject: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    _update(subject)
    monkeypatch.setenv("FEATVIZ_TEST_WEIGHTS", "5")
    message = _message(subject)
    assert "the model's weights or buffers changed since the golden was made (model fingerprint " in message
    assert "selected layer(s) with changed weights: '1', '3'" in message
    assert "input changed" not in message


def test_an_environment_change_is_named(subject: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patch:  # (never monkeypatch.undo(): pytester's chdir is on the same monkeypatch)
        patch.setattr(environment, "device_type", lambda model, inputs: "cuda")
        _update(subject)  # a golden "made on cuda" (cudnn allows TF32 by default)
    monkeypatch.setenv("FEATVIZ_TEST_CODE", "1")
    message = _message(subject)
    version = torch.__version__.split("+")[0]
    assert (
        f"environment differs from the golden's: golden made on cuda with torch {version}, TF32 on;"
        f" running on cpu with torch {version}"
    ) in message
    assert "a code or dependency change (or the environment change above)" in message


def test_a_golden_without_provenance_still_works_and_says_so(
    subject: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _update(subject)
    sidecar = subject.path / SIDECAR
    data = json.loads(sidecar.read_text(encoding="utf-8"))
    lines = [line for line in sidecar.read_text(encoding="utf-8").splitlines() if '"environment"' not in line]
    sidecar.write_text("\n".join(line for line in lines if '"fingerprints"' not in line) + "\n", encoding="utf-8")
    assert "environment" not in json.loads(sidecar.read_text(encoding="utf-8")) and "environment" in data
    subject.runpytest().assert_outcomes(passed=1)
    monkeypatch.setenv("FEATVIZ_TEST_CODE", "1")
    assert "the golden records no provenance" in _message(subject)


# -- environment-keyed goldens --------------------------------------------------------------------------------------


def _files(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def test_keyed_goldens_fall_back_to_the_shared_one_and_update_only_their_own(
    subject: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    subject.makeini("[pytest]\naddopts = -p no:cacheprovider\nfeatviz_golden_key = device\n")
    root = subject.path
    _update(subject)  # a missing golden creates the shared one
    assert (root / SIDECAR).is_file() and not (root / KEYED).exists()
    shared = _files(root / SIDECAR.parent)

    cuda = monkeypatch.context()
    patch = cuda.__enter__()
    patch.setattr(environment, "device_type", lambda model, inputs: "cuda")
    subject.runpytest().assert_outcomes(passed=1)  # no cuda golden yet: the shared one is used
    patch.setenv("FEATVIZ_TEST_CODE", "1")
    message = _message(subject)
    assert "this is the shared golden: there is no golden for cuda yet" in message
    assert "golden: golden/test_subject/test_a/0\n" in message.replace("\r", "")
    # the drift writes the cuda golden, the shared one is left alone: the summary says a golden was created (it said
    # "1 updated", and git shows a new directory to add)
    result = subject.runpytest("--featviz-update")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "1 snapshot(s) compared: 0 matched, 1 drifted (written as the device's own golden, the shared golden"
            " left as it was), 0 without a golden (created)",
            "goldens: 1 created, 0 updated, *",
            "1 device golden snapshot(s) written where the shared one drifted, which is left as it was (review their"
            " pictures before committing): golden/test_subject/test_a/0@cuda",
        ]
    )
    assert (root / KEYED / "snapshot.json").is_file()
    assert json.loads((root / KEYED / "snapshot.json").read_text(encoding="utf-8"))["environment"]["device"] == "cuda"
    assert _files(root / SIDECAR.parent) == shared
    subject.runpytest().assert_outcomes(passed=1)  # cuda now checks against its own golden
    keyed = _files(root / KEYED)
    _update(subject)
    assert _files(root / KEYED) == keyed  # a match writes nothing

    cuda.__exit__(None, None, None)  # back on the cpu: the shared golden, the old code
    subject.runpytest().assert_outcomes(passed=1)
    monkeypatch.setenv("FEATVIZ_TEST_CODE", "1")
    assert "this is the shared golden: there is no golden for cpu yet" in _message(subject)
    assert _files(root / SIDECAR.parent) == shared and _files(root / KEYED) == keyed


def test_keyed_goldens_are_off_by_default(subject: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    _update(subject)
    monkeypatch.setattr(environment, "device_type", lambda model, inputs: "cuda")
    monkeypatch.setenv("FEATVIZ_TEST_CODE", "1")
    _update(subject)
    assert not (subject.path / KEYED).exists()
    assert json.loads((subject.path / SIDECAR).read_text(encoding="utf-8"))["environment"]["device"] == "cuda"


def test_a_keyed_golden_is_neither_stale_nor_pruned_on_another_device(
    subject: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    subject.makeini("[pytest]\naddopts = -p no:cacheprovider\nfeatviz_golden_key = device\n")
    _update(subject)
    with monkeypatch.context() as patch:
        patch.setattr(environment, "device_type", lambda model, inputs: "cuda")
        patch.setenv("FEATVIZ_TEST_CODE", "1")
        _update(subject)
    result = subject.runpytest("--featviz-prune")  # on the cpu: only the shared golden is used
    result.assert_outcomes(passed=1)
    assert "stale golden snapshot" not in result.stdout.str()
    assert (subject.path / KEYED / "snapshot.json").is_file() and (subject.path / SIDECAR).is_file()
    subject.makepyfile(test_subject="def test_other():\n    pass\n")  # the snapshot's test is gone: both are stale
    result = subject.runpytest("--featviz-prune")
    result.stdout.fnmatch_lines(["*2 stale golden snapshot(s) deleted*"])
    assert not (subject.path / KEYED).exists() and not (subject.path / SIDECAR).exists()


TWO_SNAPSHOTS = """
from featviz_models import make_input, make_model


def test_a(feature_snapshot):
    feature_snapshot(make_model(), make_input(), layers=["1", "3"])
    feature_snapshot(make_model(), make_input(), layers=["1", "3"], name="second")
"""


def test_the_goldens_a_drift_left_unchecked_are_named_as_the_device_would_check_them(
    subject: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    subject.makeini("[pytest]\naddopts = -p no:cacheprovider\nfeatviz_golden_key = device\n")
    subject.makepyfile(test_subject=TWO_SNAPSHOTS)
    _update(subject)  # the shared goldens 0 and second
    line = "1 golden snapshot(s) of the failing tests were not checked: * again): golden/test_subject/test_a/{}"
    with monkeypatch.context() as patch:
        patch.setattr(environment, "device_type", lambda model, inputs: "cuda")
        patch.setenv("FEATVIZ_TEST_CODE", "1")
        _update(subject)  # cuda's own goldens 0@cuda and second@cuda
        patch.delenv("FEATVIZ_TEST_CODE")
        # on cuda the drift of 0@cuda stops the test before second@cuda, the golden it would check (it named the
        # shared one, which cuda does not use)
        subject.runpytest().stdout.fnmatch_lines([line.format("second@cuda")])
        # a damaged 0@cuda stops it there as well, and the list names the same golden
        sidecar = subject.path / "golden" / "test_subject" / "test_a" / "0@cuda" / "snapshot.json"
        sound = sidecar.read_bytes()
        sidecar.write_text("{")
        damaged = subject.runpytest()
        damaged.stdout.fnmatch_lines(
            ["  golden/test_subject/test_a/0@cuda: golden sidecar * is not valid JSON*", line.format("second@cuda")]
        )
        sidecar.write_bytes(sound)
    monkeypatch.setenv("FEATVIZ_TEST_CODE", "1")
    subject.runpytest().stdout.fnmatch_lines([line.format("second")])  # on the cpu: the shared one


NAMED_LIKE_A_DEVICE_GOLDEN = """
from featviz_models import make_input, make_model


def test_a(feature_snapshot):
    feature_snapshot(make_model(), make_input(), layers=["1"])
    feature_snapshot(make_model(), make_input(), layers=["3"], name=NAME)
"""


@pytest.mark.parametrize("name", ["0@cpu", "0@cuda", "0@CPU"])
def test_a_snapshot_named_like_a_device_golden_is_refused_when_goldens_are_keyed(
    subject: pytest.Pytester, name: str
) -> None:
    # name="0@cpu" is where the cpu's own golden of snapshot 0 lives: --featviz-update wrote the one over the other
    subject.makeini("[pytest]\naddopts = -p no:cacheprovider\nfeatviz_golden_key = device\n")
    subject.makepyfile(test_subject=NAMED_LIKE_A_DEVICE_GOLDEN.replace("NAME", repr(name)))
    result = subject.runpytest("--featviz-update")
    result.assert_outcomes(failed=1)
    key = name.partition("@")[2]  # in any case: 0@CPU is 0@cpu on macOS and Windows
    result.stdout.fnmatch_lines(
        [
            f"E   *FeatvizError: snapshot name '{name}' ends with @{key}: with featviz_golden_key = device that is"
            f" where the {key} golden of snapshot '0' lives (*{name}), and the two would overwrite each other's"
            " golden; give the call a name without it"
        ]
    )
    assert "pytest_featviz/" not in result.stdout.str()
    # refused on either device, so a test does not pass on one alone: only snapshot 0's shared golden was written
    assert sorted(p.name for p in (subject.path / "golden" / "test_subject" / "test_a").iterdir()) == ["0"]
    subject.makepyfile(test_subject=NAMED_LIKE_A_DEVICE_GOLDEN.replace("NAME", repr("0@fp16")))
    _update(subject)  # no device type: a snapshot of its own


def test_an_unknown_golden_key_is_a_usage_error(subject: pytest.Pytester) -> None:
    subject.makeini("[pytest]\naddopts = -p no:cacheprovider\nfeatviz_golden_key = hostname\n")
    result = subject.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*featviz_golden_key must be one of none, device; got 'hostname'*"])
