"""The ``featviz`` command: ``layers`` lists what the fixture accepts, ``show`` what a golden holds."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pytest_featviz.cli import COMMANDS, SIGPIPE_STATUS, main
from pytest_featviz.render import mosaic_size

FACTORIES = """
import pytest
import torch
from torch import nn


class Seg(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.step = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4, 2)
        self.unused = nn.ReLU()

    def forward(self, x):
        x = self.backbone(x)
        for _ in range(3):
            x = self.step(x)
        return {"out": x, "pooled": self.head(x.mean(dim=(2, 3)))}


class Pair(nn.Module):
    def __init__(self):
        super().__init__()
        self.mix = nn.Conv2d(6, 2, 1)

    def forward(self, a, b):
        return self.mix(torch.cat([a, b], dim=1))


def seg():
    return Seg()


def pair():
    return Pair()


def scripted():
    return torch.jit.script(nn.Sequential(nn.Conv2d(3, 3, 1)))


def not_a_model():
    return 42


def lone_conv():
    return nn.Conv2d(3, 4, 3)


def lone_weight_normed_conv():
    return nn.utils.parametrizations.weight_norm(nn.Conv2d(3, 4, 3))


def pair_inputs():
    return (torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4))


class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.lstm = nn.LSTM(8, 6, batch_first=True)

    def forward(self, ids):
        return self.lstm(self.embed(ids))[0]


def tagger():
    return Tagger()


def lazy_made_in_inference_mode():
    with torch.inference_mode():
        return nn.Sequential(nn.LazyConv2d(4, 3), nn.ReLU(), nn.LazyConv2d(4, 3))


@pytest.fixture
def fixture_model():
    return Seg()


def skipping():
    pytest.skip("needs a GPU")
"""


@pytest.fixture
def factories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "featviz_cli_models.py").write_text(textwrap.dedent(FACTORIES))
    (tmp_path / "featviz_cli_skipped.py").write_text(
        'import pytest\n\npytest.skip("needs a GPU", allow_module_level=True)\n\ndef model():\n    return None\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return "featviz_cli_models"


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], str]:
    out = io.StringIO()
    status = main(args, out)
    return status, out.getvalue().splitlines(), capsys.readouterr().err


def row(lines: list[str], name: str) -> list[str]:
    """The cells of the table row of ``name`` (the default mark is the first cell when present)."""
    found = [line.split() for line in lines if name in line.split()]
    assert found, f"no row for {name!r} in:\n" + "\n".join(lines)
    return found[0]


def test_layers_lists_type_shape_layout_calls_leaves_and_the_default(
    factories: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, lines, _ = run(["layers", f"{factories}:seg", "--input-shape", "1,3,16,16"], capsys)
    assert status == 0
    assert lines[0] == "Seg on input (1, 3, 16, 16): 3 of 4 modules ran"
    assert row(lines, "backbone") == ["*", "backbone", "Conv2d", "(1,", "4,", "8,", "8)", "nchw", "1"]
    assert row(lines, "step") == ["step", "Conv2d", "(1,", "4,", "8,", "8)", "nchw", "3"]
    assert row(lines, "step@2") == ["*", "step@2", "(1,", "4,", "8,", "8)", "nchw"]
    assert row(lines, "head") == ["head", "Linear", "(1,", "2)", "features", "1"]
    assert not any("unused" in line for line in lines)  # never ran
    assert lines[-2] == "default choice (layers=None), 2 layers: backbone, step@2"


def test_layers_shows_leaf_selectors_and_modules_that_never_ran_with_all(
    factories: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    wrapper = tmp_path / "featviz_cli_wrap.py"
    wrapper.write_text(
        "from torch import nn\nimport featviz_cli_models as m\n\n"
        "class Outer(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.seg = m.Seg()\n\n"
        "    def forward(self, x):\n        return self.seg(x)['out']\n"
    )
    status, lines, _ = run(["layers", "featviz_cli_wrap:Outer", "--input-shape", "1,3,16,16", "--all"], capsys)
    assert status == 0
    # each leaf with the layout a snapshot of it gets
    assert row(lines, "seg+out") == ["seg+out", "(leaf)", "(1,", "4,", "8,", "8)", "nchw"]
    assert row(lines, "seg+pooled") == ["seg+pooled", "(leaf)", "(1,", "2)", "features"]
    assert row(lines, "seg.unused") == ["seg.unused", "ReLU", "never", "ran", "0"]


def test_the_layout_of_a_leaf_is_the_one_its_snapshot_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A recurrent module's hidden state and an attention module's weights are read otherwise than their first leaf:
    the listing showed no layout for a leaf at all."""
    import torch
    from torch import nn

    from pytest_featviz.capture import capture
    from pytest_featviz.layers import resolve_layers

    (tmp_path / "featviz_cli_seq.py").write_text(
        "from torch import nn\n\n"
        "class Seq(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n"
        "        self.lstm = nn.LSTM(8, 6, batch_first=True)\n"
        "        self.attn = nn.MultiheadAttention(6, 2, batch_first=True)\n\n"
        "    def forward(self, x):\n        h = self.lstm(x)[0]\n        return self.attn(h, h, h)[0]\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        status, lines, _ = run(["layers", "featviz_cli_seq:Seq", "--input-shape", "1,10,8"], capsys)
        import featviz_cli_seq

        model: nn.Module = featviz_cli_seq.Seq().eval()
    finally:
        sys.path.remove(str(tmp_path))
    assert status == 0
    names = ["lstm+1+0", "attn+1"]
    kept = capture(model, torch.randn(1, 10, 8), resolve_layers(model, names), 4)
    for name, layer in zip(names, kept, strict=True):
        assert " ".join(row(lines, name)).endswith(layer.layout), (name, layer.layout)
        assert layer.layout


def test_layers_takes_several_inputs_or_an_input_function(factories: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, lines, _ = run(
        ["layers", f"{factories}:pair", "--input-shape", "1,3,4,4", "--input-shape", "1x3x4x4"], capsys
    )
    assert status == 0 and row(lines, "mix")[-3:] == ["4)", "nchw", "1"]
    status, lines, _ = run(["layers", f"{factories}:pair", "--inputs", f"{factories}:pair_inputs"], capsys)
    assert status == 0 and lines[0] == "Pair on input featviz_cli_models:pair_inputs(): 1 of 1 modules ran"


def test_layers_takes_token_ids_for_a_text_model(factories: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, lines, _ = run(["layers", f"{factories}:tagger", "--input-shape", "1,12:ids"], capsys)
    assert status == 0 and lines[0] == "Tagger on input (1, 12) token ids: 2 of 2 modules ran"
    assert row(lines, "lstm")[-3:] == ["6)", "token-image", "1"]


def test_layers_surveys_a_lazy_model_made_under_inference_mode(
    factories: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its lazy parameters are inference tensors, made in place on the first call: a survey that ran it under no_grad
    failed with "Inplace update to inference tensor outside InferenceMode" and blamed the input shape."""
    status, lines, _ = run(["layers", f"{factories}:lazy_made_in_inference_mode", "--input-shape", "1,3,8,8"], capsys)
    assert status == 0 and row(lines, "2")[-3:] == ["4)", "nchw", "1"]


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is (deprecated|not supported):FutureWarning")
@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["nowhere:seg"], 2, "featviz layers: error: cannot import 'nowhere'"),
        (["nowhere:seg"], 2, "install the project, e.g. pip install -e ., or set PYTHONPATH, e.g. PYTHONPATH=src"),
        (["{m}"], 2, "expected PACKAGE.MODULE:NAME, got 'featviz_cli_models'"),
        (["{m}:missing"], 2, "'featviz_cli_models' has no attribute 'missing'"),
        (["{m}:not_a_model"], 2, "returned a int, not a torch.nn.Module"),
        (["{m}:seg", "--input-shape", "1,3,x"], 2, "--input-shape must be comma-separated integers"),
        (["{m}:pair"], 2, "raised TypeError"),
        (["{m}:scripted"], 1, "TorchScript"),
        (["{m}:lone_conv"], 1, "Conv2d has no submodules"),
        (["{m}:lone_conv"], 1, "wrap it: feature_snapshot(nn.Sequential(model), x)"),
        (["{m}:lone_weight_normed_conv", "--all"], 1, "Conv2d has no submodules"),
        (["{m}:fixture_model"], 2, "featviz_cli_models:fixture_model is a pytest fixture, which only pytest can call"),
        (["{m}:skipping"], 2, "featviz_cli_models:skipping() raised Skipped: needs a GPU"),
        (["{m}:seg", "--inputs", "{m}:skipping"], 2, "featviz_cli_models:skipping() raised Skipped: needs a GPU"),
        (["{m}:tagger"], 2, "--input-shape, :ids for token ids, or --inputs"),
        (["{m}:tagger", "--input-shape", "1,16:ids:ids"], 2, "optionally ending in :ids; got '1,16:ids:ids'"),
        (["featviz_cli_skipped:model"], 2, "importing 'featviz_cli_skipped' raised Skipped: needs a GPU"),
    ],
)
def test_layers_errors_say_what_went_wrong(
    factories: str, capsys: pytest.CaptureFixture[str], args: list[str], status: int, message: str
) -> None:
    got, lines, err = run(["layers", *(a.format(m=factories) for a in args)], capsys)
    assert (got, lines) == (status, [])
    assert message in err


def test_show_prints_what_a_golden_holds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch
    from torch import nn

    from pytest_featviz.config import Settings
    from pytest_featviz.snapshot import TestIdentity, check_snapshot

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 36, 3))
    identity = TestIdentity("t.py::t", "t.py", "t", "pytest --featviz-update t.py::t")
    for name, layers, channels in (("first", ["1"], [0, 1, 2, 4]), ("second", ["1", "3"], "all")):
        settings = Settings(golden_dir=tmp_path, update=True).override({"channels": channels}, "test")
        check_snapshot(model, torch.randn(1, 3, 6, 6), layers, settings, tmp_path / name, identity, name)
    status, lines, _ = run(["show", str(tmp_path / "first")], capsys)
    assert status == 0
    assert lines[1].startswith("  normalize minmax, 8-bit, format ") and ", 1 layers, 2 files, " in lines[1]
    assert lines[1].endswith(f"; made on cpu with torch {torch.__version__.split('+')[0]}")
    header, relu = (line.split() for line in lines[2:4])
    assert header == ["layer", "shape", "layout", "tile", "channels", "mosaic", "bytes", "state"]
    size = (tmp_path / "first" / "1.png").stat().st_size
    assert relu[:9] == ["1", "(1,", "5,", "6,", "6)", "nchw", "6x6", "4:", "0-2,4"] and relu[10:] == [str(size), "ok"]
    assert run(["show", str(tmp_path / "first" / "snapshot.json")], capsys)[1] == lines  # the sidecar names it too
    status, lines, _ = run(["show", str(tmp_path)], capsys)
    # each snapshot named by its path from where the command runs, as the damage lines name files
    first, second = (tmp_path / "first").as_posix(), (tmp_path / "second").as_posix()
    assert status == 0 and lines[0] == first and second in lines and lines[-1].startswith("2 snapshots, ")
    head = next(line.split() for line in lines if line.split()[:1] == ["3"])
    assert head[:7] == ["3", "(1,", "3)", "features", "1x3", "1:", "0"]
    # the mosaic's size in the tile's order, height x width: a 1 x 3 strip gives a picture wider than high
    height, width = mosaic_size(1, (1, 3))
    assert width > height and head[7] == f"{height}x{width}"


def test_show_says_which_goldens_are_damaged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch
    from torch import nn

    from pytest_featviz.config import Settings
    from pytest_featviz.snapshot import TestIdentity, check_snapshot

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU())
    identity = TestIdentity("t.py::t", "t.py", "t", "pytest --featviz-update t.py::t")
    for name in ("a", "b", "c"):
        settings = Settings(golden_dir=tmp_path, update=True)
        check_snapshot(model, torch.randn(1, 3, 6, 6), ["0", "1"], settings, tmp_path / name, identity, name)
    (tmp_path / "a" / "1.png").write_bytes(b"<html>not a picture</html>")
    (tmp_path / "b" / "snapshot.json").write_text("{")
    (tmp_path / "lost").mkdir()  # pictures whose sidecar a merge lost
    (tmp_path / "lost" / "0.png").write_bytes((tmp_path / "c" / "0.png").read_bytes())
    status, lines, _ = run(["show", str(tmp_path)], capsys)
    assert status == 1
    relu = next(line.split() for line in lines if line.split()[:1] == ["1"])
    assert relu[-1] == "damaged"
    assert any(line.startswith("  1: golden picture ") and "is not a PNG" in line for line in lines)
    assert lines[lines.index((tmp_path / "b").as_posix()) + 1].startswith(
        "  damaged: golden sidecar "
    ) and "is not valid JSON" in "".join(lines)
    assert lines[lines.index((tmp_path / "lost").as_posix()) + 1].startswith(
        "  damaged: golden snapshot "
    ) and "but no sidecar" in "".join(lines)
    assert (tmp_path / "c").as_posix() in lines and lines[-1].endswith("; 3 damaged")


def test_show_refuses_a_directory_without_goldens(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, lines, err = run(["show", str(tmp_path)], capsys)
    assert (status, lines) == (2, [])
    assert "no snapshot.json under" in err


def test_every_command_is_registered_and_python_m_runs_it() -> None:
    assert set(COMMANDS) >= {"layers", "show"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest_featviz", "--help"], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0
    assert "layers" in done.stdout and "show" in done.stdout and done.stdout.startswith("usage: featviz")


def test_a_reader_that_goes_away_ends_the_command_quietly() -> None:
    """``featviz show golden | head``: the pipe closes under the command, which must stop without a traceback."""
    goldens = Path(__file__).resolve().parents[2] / "golden"  # the project's own, committed
    child = subprocess.Popen(
        [sys.executable, "-m", "pytest_featviz", "show", str(goldens)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None
    child.stdout.close()  # before the child writes: its first write meets a closed pipe
    _, errors = child.communicate(timeout=60)
    assert child.returncode == SIGPIPE_STATUS
    assert errors.decode() == ""  # no traceback, no "Exception ignored ... BrokenPipeError" at exit
