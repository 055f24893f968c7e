"""pytest wiring seen from the command line: options, precedence of settings, help, header, lazy start-up."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import unicodedata
from importlib import metadata

import pytest

import integration.lifecycle  # noqa: F401  (imports torch before any in-process run; see lifecycle.py)
from integration import needs_subtests
from pytest_featviz.config import DEFAULT_THRESHOLD

HEAVY = ("torch", "numpy", "skimage", "PIL")

# Each test asserts the threshold its snapshot was checked with; EXPECT_* come from the run's environment.
PRECEDENCE = """
import os

import pytest
import torch
from torch import nn


def snap(feature_snapshot, **kwargs):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    x = torch.randn(1, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    result = feature_snapshot(model, x, **kwargs)
    if result.outcome == "created":
        pytest.skip("golden created")
    assert result.outcome == "matched"
    return result


@pytest.mark.featviz(threshold=0.7)
def test_call_beats_marker(feature_snapshot):
    result = snap(feature_snapshot, threshold=0.8)
    assert result.layers[0].threshold == 0.8


@pytest.mark.featviz(threshold=0.7)
def test_marker_beats_cli(feature_snapshot):
    result = snap(feature_snapshot)
    assert result.layers[0].threshold == 0.7


def test_cli_ini_default(feature_snapshot):
    result = snap(feature_snapshot)
    assert result.layers[0].threshold == float(os.environ["EXPECT_THRESHOLD"])
"""


def test_threshold_precedence_call_marker_cli_ini_default(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    featviz_pytester.makepyfile(test_precedence=PRECEDENCE)
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(skipped=3)

    monkeypatch.setenv("EXPECT_THRESHOLD", repr(DEFAULT_THRESHOLD))
    featviz_pytester.runpytest("-k", "default").assert_outcomes(passed=1)  # default, nothing set
    # The marker (0.7) beats CLI (0.6); the call (0.8) beats the marker; CLI (0.6) beats ini (0.5).
    featviz_pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\nfeatviz_threshold = 0.5\n")
    monkeypatch.setenv("EXPECT_THRESHOLD", "0.5")
    featviz_pytester.runpytest().assert_outcomes(passed=3)  # ini beats the default
    monkeypatch.setenv("EXPECT_THRESHOLD", "0.6")
    result = featviz_pytester.runpytest("--featviz-threshold", "0.6")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        [
            "featviz: torch *, mode check, golden dir *, threshold 0.6, stat tolerance 0.03, rms tolerance 0.15,"
            " channels 16, normalize minmax, noise floor on"
        ]
    )
    # every setting the options give is in the header, as it is in force
    result = featviz_pytester.runpytest(
        "--co",
        "--featviz-channels=0,3",
        "--featviz-normalize=sigmoid",
        "--featviz-noise-floor=off",
        "--featviz-deterministic",
    )
    result.stdout.fnmatch_lines(["featviz: torch *, channels 0,3, normalize sigmoid, noise floor off, deterministic"])
    result = featviz_pytester.runpytest("--co", "--featviz-channels=[3]")  # one index, not a count of 3
    result.stdout.fnmatch_lines(["featviz: torch *, channels 3,, normalize minmax, *"])
    # A wrong expectation fails: the assertion inside the test is live.
    monkeypatch.setenv("EXPECT_THRESHOLD", "0.5")
    featviz_pytester.runpytest("--featviz-threshold", "0.6", "-k", "default").assert_outcomes(failed=1)


def test_a_stricter_call_threshold_turns_a_match_into_drift(featviz_pytester: pytest.Pytester) -> None:
    featviz_pytester.makepyfile(
        test_strict="""
        import os

        import torch
        from torch import nn

        def test_it(feature_snapshot):
            torch.manual_seed(0)
            model = nn.Sequential(nn.Conv2d(1, 2, 3))
            x = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
            if os.environ.get("NOISE"):
                x = x + 0.05 * torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(1))
            threshold = float(os.environ.get("T", "-1"))
            result = feature_snapshot(model, x, threshold=threshold, stat_tolerance=100, rms_tolerance=100)
            print("MIN_SSIM", result.layers[0].min_ssim)
        """
    )
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NOISE", "1")
        loose = featviz_pytester.runpytest("-s")
        loose.assert_outcomes(passed=1)
        min_ssim = float(re.search(r"MIN_SSIM (\S+)", loose.stdout.str()).group(1))  # type: ignore[union-attr]
        assert min_ssim < 1.0
        patch.setenv("T", repr(min(1.0, min_ssim + 0.01)))
        strict = featviz_pytester.runpytest()
        strict.assert_outcomes(failed=1)
        strict.stdout.fnmatch_lines(
            ["*FeatureDriftError: feature drift in snapshot '0'*", "*channels drifted: min SSIM * < *"]
        )


@pytest.mark.parametrize(
    ("where", "value"),
    [("cli", "1.5"), ("ini", "-2"), ("marker", "1.01"), ("call", "-1.5")],
)
def test_threshold_outside_ssim_range_is_rejected(featviz_pytester: pytest.Pytester, where: str, value: str) -> None:
    marker = f"@pytest.mark.featviz(threshold={value})" if where == "marker" else ""
    call = f", threshold={value}" if where == "call" else ""
    featviz_pytester.makepyfile(
        test_bad=f"""
        import pytest
        import torch
        from torch import nn

        {marker}
        def test_it(feature_snapshot):
            feature_snapshot(nn.Sequential(nn.Conv2d(1, 1, 1)), torch.ones(1, 1, 4, 4){call})
        """
    )
    args: list[str] = []
    if where == "cli":
        args = ["--featviz-threshold", value]
    if where == "ini":
        featviz_pytester.makeini(f"[pytest]\naddopts = -p no:cacheprovider\nfeatviz_threshold = {value}\n")
    result = featviz_pytester.runpytest(*args)
    text = result.stdout.str() + result.stderr.str()
    shown = repr(value) if where in ("cli", "ini") else value  # text from the command line, a number from code
    assert f"threshold is an SSIM score and must lie in [-1, 1]; got {shown}" in text
    if where in ("cli", "ini"):
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        assert ("--featviz-threshold" if where == "cli" else "tox.ini: featviz_threshold") in text
    else:
        result.assert_outcomes(**({"errors": 1} if where == "marker" else {"failed": 1}))
    assert not (featviz_pytester.path / "golden").exists()


def test_help_shows_every_option_in_one_featviz_group(featviz_pytester: pytest.Pytester) -> None:
    result = featviz_pytester.runpytest("--help")
    assert result.ret == 0
    lines = result.outlines
    start = lines.index("feature-map snapshots (pytest-featviz):")
    end = next(i for i in range(start + 1, len(lines)) if lines[i] and not lines[i].startswith(" "))
    inside = {m for line in lines[start:end] for m in re.findall(r"^  (--featviz-[a-z-]+)", line)}
    everywhere = {m for line in lines for m in re.findall(r"^  (--featviz-[a-z-]+)", line)}
    assert everywhere == inside
    core = {"--featviz-update", "--featviz-golden-dir", "--featviz-threshold", "--featviz-stat-tolerance"}
    core |= {"--featviz-rms-tolerance", "--featviz-channels", "--featviz-normalize"}
    assert core <= inside
    assert sum(line.strip().startswith("feature-map snapshots") for line in lines) == 1
    for key in ("featviz_golden_dir", "featviz_threshold", "featviz_channels", "featviz_normalize"):
        assert any(line.strip().startswith(f"{key} (string") for line in lines), key  # (string | float) on pytest 9.2


def test_disabled_with_p_no_featviz(featviz_pytester: pytest.Pytester) -> None:
    featviz_pytester.makepyfile(test_off="def test_it(feature_snapshot):\n    pass\n")
    assert featviz_pytester.runpytest().ret == 0  # the fixture exists while the plugin is on
    result = featviz_pytester.runpytest("-p", "no:featviz")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'feature_snapshot' not found*"])
    assert "featviz:" not in result.stdout.str()
    assert featviz_pytester.runpytest("-p", "no:featviz", "--featviz-update").ret == pytest.ExitCode.USAGE_ERROR


def test_report_header_shows_torch_version(featviz_pytester: pytest.Pytester) -> None:
    featviz_pytester.makepyfile(test_plain="def test_it():\n    pass\n")
    result = featviz_pytester.runpytest()
    version = metadata.version("torch")
    import torch

    assert torch.__version__.startswith(version)
    result.stdout.fnmatch_lines([f"featviz: torch {version}, mode check, golden dir *golden, threshold *"])


def test_report_header_survives_a_conftest_on_the_new_tf32_switches(featviz_pytester: pytest.Pytester) -> None:
    """torch >= 2.9 raises on reading a legacy allow_tf32 flag once the new fp32_precision switch says otherwise;
    the header read them, so a suite whose conftest used the new switch (as PyTorch now recommends) stopped with
    INTERNALERROR before its first test. A subprocess, so that the switch does not leak into this session."""
    import torch

    if not hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        pytest.skip("this torch has no fine-grained fp32_precision switches")
    featviz_pytester.makeconftest("import torch\ntorch.backends.cuda.matmul.fp32_precision = 'tf32'\n")
    featviz_pytester.makepyfile(test_plain="def test_it():\n    pass\n")
    result = featviz_pytester.runpytest_subprocess()
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(["featviz: *matmul TF32 True, cuDNN TF32 *, cudnn.benchmark *"])
    result.assert_outcomes(passed=1)


def test_report_header_says_which_flags_apply_to_cuda_runs_only_without_probing_cuda(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ "cuDNN TF32 True" on a CPU run read as a source of noise. Asking torch.cuda.is_available() would initialize
    CUDA in the pytest process, which breaks a test's fork-started workers that use it: the line says it instead."""
    import torch

    def probe() -> bool:
        raise AssertionError("the header must not initialize CUDA")

    monkeypatch.setattr(torch.cuda, "is_available", probe)
    featviz_pytester.makeconftest("import torch\n")
    featviz_pytester.makepyfile(test_plain="def test_it():\n    pass\n")
    result = featviz_pytester.runpytest()
    result.assert_outcomes(passed=1)
    line = "featviz: CUDA runs only: matmul TF32 *, cuDNN TF32 *, cudnn.benchmark *; deterministic algorithms *"
    result.stdout.fnmatch_lines([line + ", threads *"])


def _heavy_modules(output: str) -> list[str]:
    match = re.search(r"HEAVY=\[(.*?)\]", output)
    assert match is not None, output
    return [name.strip().strip("'") for name in match.group(1).split(",") if name.strip()]


def test_importing_the_plugin_imports_nothing_heavy() -> None:
    code = (
        "import sys, pytest_featviz, pytest_featviz.plugin;"
        f"print('HEAVY=' + repr(sorted(m for m in {HEAVY!r} if m in sys.modules)).replace(' ', ''))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert _heavy_modules(done.stdout) == []


@pytest.mark.parametrize("args", [("--collect-only",), ()], ids=["collect-only", "run"])
def test_a_suite_without_snapshots_imports_nothing_heavy(
    featviz_pytester: pytest.Pytester, args: tuple[str, ...]
) -> None:
    """Checked at unconfigure, after the plugin's session-end hooks (summary, report, stale goldens) have run."""
    featviz_pytester.makepyfile(test_plain="def test_it():\n    pass\n")
    featviz_pytester.makeconftest(
        f"""
        import sys

        def pytest_collection_finish(session):
            assert "featviz-session" in [name for name, _ in session.config.pluginmanager.list_name_plugin()]

        def pytest_unconfigure(config):
            heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)
            print("HEAVY=" + repr(heavy).replace(" ", ""))
            print("FEATVIZ=" + ",".join(sorted(m for m in sys.modules if m.startswith("pytest_featviz."))))
        """
    )
    result = featviz_pytester.runpytest_subprocess("-s", *args)
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    assert _heavy_modules(result.stdout.str()) == []
    # nor the records, with no snapshot taken; nor the report's modules, with no report to write; nor, where no
    # stale golden can be told, stale detection's: each took milliseconds of a run that uses none of them
    match = re.search(r"FEATVIZ=(\S*)", result.stdout.str())
    assert match is not None
    modules = {name.removeprefix("pytest_featviz.") for name in match.group(1).split(",")}
    assert "outcomes" in modules and not modules & {"records", "report", "outputs", "diffmosaic"}
    assert ("stale" in modules) == (args == ())


@pytest.mark.parametrize("layers", ['"conv"', "None"])  # the check's pass; the default choice's pass
def test_an_exception_in_forward_reaches_the_user_unchanged(featviz_pytester: pytest.Pytester, layers: str) -> None:
    featviz_pytester.makepyfile(
        test_boom="""
        import torch
        from torch import nn

        class Boom(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(1, 1, 1)

            def forward(self, x):
                self.conv(x)
                raise RuntimeError("forward exploded on purpose")

        def test_it(feature_snapshot):
            model = Boom().train()
            try:
                feature_snapshot(model, torch.ones(1, 1, 2, 2), layers=LAYERS)
            finally:
                assert model.training and not model.conv._forward_hooks
        """.replace("LAYERS", layers)
    )
    result = featviz_pytester.runpytest("--featviz-update")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["test_boom.py:*", "    def forward(self, x):", "E*RuntimeError: forward exploded on purpose"]
    )
    # the test's frame, then the model's: none of the plugin's between them
    assert "pytest_featviz/" not in result.stdout.str()
    assert not (featviz_pytester.path / "golden").exists()


def test_two_tests_whose_names_differ_only_in_unicode_form_do_not_share_a_golden(
    featviz_pytester: pytest.Pytester,
) -> None:
    """Golden paths read a name in its composed form (an NFD-named file finds its goldens), so two test files named
    alike but for the form of an accent would write one golden in turn, each failing against the other's."""
    for form, seed in (("NFC", 0), ("NFD", 1)):
        (featviz_pytester.path / unicodedata.normalize(form, "test_caf\u00e9.py")).write_text(
            SMALL.replace("manual_seed(0)", f"manual_seed({seed})"), encoding="utf-8"
        )
    result = featviz_pytester.runpytest("--featviz-create", "--import-mode=importlib")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "E   *FeatvizError: test_caf*.py::test_it has the golden folder of test_caf*.py::test_it"
            " (test_caf_-*/test_it): their names differ only in Unicode form*"
        ]
    )
    assert len(list((featviz_pytester.path / "golden").iterdir())) == 1


def test_a_bug_of_the_plugin_shows_its_frames_and_a_lazy_module_s_error_does_not(
    featviz_pytester: pytest.Pytester,
) -> None:
    """The frames through which the plugin runs the model are hidden from the model's and torch's errors only: a
    bug raised in the plugin's own code read as raised at the test's line, with nothing to report."""
    featviz_pytester.makepyfile(
        test_frames="""
        import torch
        from torch import nn
        import pytest_featviz.capture

        def test_plugin_bug(feature_snapshot, monkeypatch):
            monkeypatch.setattr(pytest_featviz.capture, "LazyModuleMixin", 5)  # isinstance() raises inside the plugin
            feature_snapshot(nn.Sequential(nn.Conv2d(3, 2, 1)), torch.ones(1, 3, 4, 4), layers=["0"])

        def test_lazy_module(feature_snapshot):
            feature_snapshot(nn.Sequential(nn.LazyConv2d(2, 1)), torch.ones(3, 4), layers=["0"])
        """
    )
    result = featviz_pytester.runpytest("--featviz-update", "--tb=short")
    result.assert_outcomes(failed=2)
    text = result.stdout.str()
    plugin_bug, lazy = text.split("_ test_lazy_module _")
    assert "pytest_featviz/capture.py" in plugin_bug and "TypeError: isinstance() arg 2" in plugin_bug
    assert "pytest_featviz/" not in lazy and "torch/nn/modules/" in lazy


SMALL = """
import torch
from torch import nn


def test_it(feature_snapshot):
    torch.manual_seed(0)
    feature_snapshot(nn.Sequential(nn.Conv2d(1, 2, 3)), torch.ones(1, 1, 8, 8), layers=["0"])
"""


def test_commands_in_messages_work_where_pytest_was_run(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pytest run from a subdirectory of the project: node ids stay relative to the rootdir, command lines are not
    featviz_pytester.mkpydir("tests")
    (featviz_pytester.path / "tests" / "test_small.py").write_text(SMALL)
    monkeypatch.chdir(featviz_pytester.path / "tests")
    missing = featviz_pytester.runpytest()
    missing.assert_outcomes(failed=1)
    missing.stdout.fnmatch_lines(["*create it with:  pytest --featviz-create test_small.py::test_it"])
    featviz_pytester.runpytest("--featviz-create", "test_small.py::test_it").assert_outcomes(passed=1)
    assert (featviz_pytester.path / "golden" / "tests" / "test_small" / "test_it" / "0" / "snapshot.json").is_file()
    featviz_pytester.runpytest().assert_outcomes(passed=1)
    monkeypatch.chdir(featviz_pytester.path)  # from the rootdir, the node id itself
    featviz_pytester.runpytest("--featviz-update", "tests/test_small.py::test_it").assert_outcomes(passed=1)


DOCTESTED = '''
def make():
    """
    >>> import torch
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> result = getfixture("feature_snapshot")(nn.Sequential(nn.Conv2d(1, 2, 3)), torch.ones(1, 1, 6, 6))
    """
'''


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["-p", "featviz"], {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}),  # the plugin loaded by hand
        (["--doctest-modules", "mymod.py"], {}),  # a doctest that takes a snapshot
        (["-o", "python_functions=check_*", "test_checks.py"], {}),  # a test named by the run's ini override
    ],
    ids=["autoload-off", "doctest", "python-functions"],
)
def test_a_printed_command_keeps_the_options_that_found_the_test(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str]
) -> None:
    """Without ``-p featviz`` the pasted command stopped at an unknown --featviz-create; without
    ``--doctest-modules`` or ``-o python_functions=...`` it found no test."""
    featviz_pytester.makepyfile(test_small=SMALL, mymod=DOCTESTED, test_checks=SMALL.replace("test_it", "check_it"))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    missing = featviz_pytester.runpytest(*args)
    missing.assert_outcomes(failed=1)
    line = next(ln for ln in missing.outlines if "create the missing goldens with:" in ln)
    command = shlex.split(line.partition(":  ")[2])
    options = [a for a in args if not a.endswith(".py")]  # the paths give way to the node ids
    assert command[:2] == ["pytest", "--featviz-create"] and all(a in command for a in options)
    featviz_pytester.runpytest(*command[1:]).assert_outcomes(passed=1)
    featviz_pytester.runpytest(*args).assert_outcomes(passed=1)


@pytest.mark.parametrize(
    "settings",
    [
        ["--featviz-normalize=sigmoid", "--featviz-threshold=0.99"],
        ["-o", "featviz_normalize=sigmoid", "--featviz-deterministic"],
        ["--featviz-channels", "1", "--featviz-preset", "strict", "--featviz-noise-floor=off"],
    ],
    ids=["options", "ini-override", "spaced"],
)
def test_a_printed_command_keeps_the_settings_the_run_was_given(
    featviz_pytester: pytest.Pytester, settings: list[str]
) -> None:
    """The "accept it with" command of a ``--featviz-normalize=sigmoid`` run compared with the default normalization,
    found the golden unchanged and rewrote nothing, so the run still failed; the "create it with" command of a
    ``--featviz-channels`` run wrote the default channels, which the same run then called drifted."""
    featviz_pytester.makepyfile(test_small=SMALL)
    missing = featviz_pytester.runpytest(*settings)
    missing.assert_outcomes(failed=1)
    create = shlex.split(next(ln for ln in missing.outlines if "create it with:" in ln).partition(":  ")[2])
    assert create[:2] == ["pytest", "--featviz-create"]
    featviz_pytester.runpytest(*create[1:]).assert_outcomes(passed=1)
    featviz_pytester.runpytest(*settings).assert_outcomes(passed=1)
    # a golden made with the defaults, checked with other settings: the accept command rewrites it
    shutil.rmtree(featviz_pytester.path / "golden")
    featviz_pytester.runpytest("--featviz-create").assert_outcomes(passed=1)
    drift = featviz_pytester.runpytest(*settings)
    drift.assert_outcomes(failed=1)
    accept = shlex.split(next(ln for ln in drift.outlines if "accept it with:" in ln).partition(":  ")[2])
    assert accept[:2] == ["pytest", "--featviz-update"]
    featviz_pytester.runpytest(*accept[1:]).stdout.fnmatch_lines(["goldens: 0 created, 1 updated, 0 unchanged*"])
    featviz_pytester.runpytest(*settings).assert_outcomes(passed=1)


def test_a_printed_command_keeps_a_run_without_the_ini_addopts(featviz_pytester: pytest.Pytester) -> None:
    """``-o addopts=`` left out of the create command brought the ini's settings back: it wrote a sigmoid golden that
    the run without them then called drifted, and its accept command found that golden unchanged."""
    featviz_pytester.makeini("[pytest]\naddopts = -p no:cacheprovider --featviz-normalize=sigmoid\n")
    featviz_pytester.makepyfile(test_small=SMALL)
    missing = featviz_pytester.runpytest("-o", "addopts=")
    missing.assert_outcomes(failed=1)
    create = shlex.split(next(ln for ln in missing.outlines if "create it with:" in ln).partition(":  ")[2])
    assert create == ["pytest", "--featviz-create", "-o", "addopts=", "test_small.py::test_it"]
    featviz_pytester.runpytest(*create[1:]).assert_outcomes(passed=1)
    featviz_pytester.runpytest("-o", "addopts=").assert_outcomes(passed=1)


SUBTESTS = """
import torch
from torch import nn


def test_sub(feature_snapshot, subtests):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3))
    for name in ("s0", "s1", "s2"):
        with subtests.test(msg=name):
            feature_snapshot(model, torch.ones(1, 1, 8, 8), layers=["0"], name=name)
"""


@needs_subtests
def test_each_snapshot_counts_once_with_subtests(featviz_pytester: pytest.Pytester) -> None:
    featviz_pytester.makepyfile(test_sub=SUBTESTS)
    update = featviz_pytester.runpytest("--featviz-update")
    update.stdout.fnmatch_lines(["3 snapshot(s) compared: 0 matched, 0 drifted, 3 without a golden*"])
    update.stdout.fnmatch_lines(["goldens: 3 created, 0 updated, 0 unchanged*"])
    check = featviz_pytester.runpytest("--junitxml=junit.xml")
    check.stdout.fnmatch_lines(["3 snapshot(s) checked: 3 matched, 0 drifted*"])


INTERRUPTED = """
import torch
from torch import nn


def test_first(feature_snapshot):
    torch.manual_seed(0)
    feature_snapshot(nn.Sequential(nn.Conv2d(1, 2, 3)), torch.ones(1, 1, 8, 8), layers=["0"])


def test_stopped(feature_snapshot):
    torch.manual_seed(0)
    feature_snapshot(nn.Sequential(nn.Conv2d(1, 2, 3)), torch.ones(1, 1, 8, 8), layers=["0"], name="a")
    feature_snapshot(nn.Sequential(nn.Conv2d(1, 2, 3)), torch.ones(1, 1, 8, 8), layers=["0"], name="b")
    raise KeyboardInterrupt
"""


def test_ctrl_c_counts_the_goldens_the_stopped_test_wrote(featviz_pytester: pytest.Pytester) -> None:
    """No report carries the snapshots of the test that Ctrl-C stopped, so the summary said "1 created" while three
    goldens were on disk."""
    featviz_pytester.makepyfile(test_stop=INTERRUPTED)
    update = featviz_pytester.runpytest("--featviz-update", no_reraise_ctrlc=True)
    assert update.ret == pytest.ExitCode.INTERRUPTED
    update.stdout.fnmatch_lines(["goldens: 3 created, 0 updated, 0 unchanged*"])
    assert len(list((featviz_pytester.path / "golden").rglob("snapshot.json"))) == 3
    check = featviz_pytester.runpytest(no_reraise_ctrlc=True)
    check.stdout.fnmatch_lines(["3 snapshot(s) checked: 3 matched, 0 drifted*"])


OUTSIDE = """
import torch
from torch import nn

SEED = {seed}


def test_x(feature_snapshot):
    torch.manual_seed(SEED)
    feature_snapshot(nn.Sequential(nn.Conv2d(1, 2, 3)), torch.ones(1, 1, 8, 8), layers=["0"])
"""


def test_test_files_outside_the_rootdir_keep_goldens_of_their_own(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # -c names an ini file elsewhere: the rootdir is its directory, the tests lie outside it
    (featviz_pytester.path / "ci").mkdir()
    (featviz_pytester.path / "ci" / "pytest.ini").write_text(
        "[pytest]\naddopts = -p no:cacheprovider\nfeatviz_golden_dir = ../golden-ci\n"
    )
    for package, seed in (("a", 0), ("b", 1)):
        (featviz_pytester.path / "tests" / package).mkdir(parents=True)
        (featviz_pytester.path / "tests" / package / "test_m.py").write_text(OUTSIDE.format(seed=seed))
    args = ["-c", "ci/pytest.ini", "--import-mode=importlib", "tests/a/test_m.py", "tests/b/test_m.py"]
    # a missing golden says why its path holds a folder of its own: a -c that was meant to keep the project's rootdir
    # read as every golden missing, under a hashed '..' folder, with nothing to say why
    missing = featviz_pytester.runpytest(*args)
    missing.stdout.fnmatch_lines(
        [
            "E   *its test file lies outside pytest's rootdir (../tests/a/test_m.py from it), so its goldens have a"
            " folder of their own; if the rootdir is not the project's (pytest -c other/pytest.ini), run with"
            " --rootdir and the project's root",
        ]
    )
    update = featviz_pytester.runpytest("--featviz-update", *args)
    update.stdout.fnmatch_lines(["goldens: 2 created, 0 updated, 0 unchanged*"])
    featviz_pytester.runpytest(*args).assert_outcomes(passed=2)
    # the command in a message keeps the -c that decides where the goldens are
    (featviz_pytester.path / "tests" / "a" / "test_m.py").write_text(OUTSIDE.format(seed=2))
    drift = featviz_pytester.runpytest(*args)
    drift.assert_outcomes(passed=1, failed=1)
    # and the --import-mode without which two test_m.py files cannot be collected in one run
    accept = "pytest --featviz-update --import-mode=importlib -c ci/pytest.ini tests/a/test_m.py::test_x"
    drift.stdout.fnmatch_lines([f"*accept it with:  {accept}"])
    # run from the ini file's directory on ../tests (node ids relative to that argument): the command still works
    monkeypatch.chdir(featviz_pytester.path / "ci")
    drift = featviz_pytester.runpytest(
        "-c", "pytest.ini", "--import-mode=importlib", "-o", "featviz_golden_key=none", "../tests"
    )
    drift.assert_outcomes(passed=1, failed=1)
    command = (
        "pytest --featviz-update --import-mode=importlib -c pytest.ini -o featviz_golden_key=none"
        " ../tests/a/test_m.py::test_x"
    )
    drift.stdout.fnmatch_lines([f"*accept it with:  {command}"])
    featviz_pytester.runpytest(*command.split()[1:]).assert_outcomes(passed=1)
    featviz_pytester.runpytest("-c", "pytest.ini", "--import-mode=importlib", "../tests").assert_outcomes(passed=2)


MIXED = """
import os

import pytest
import torch
from torch import nn


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mix(feature_snapshot, seed):
    torch.manual_seed(seed + int(os.environ.get("SHIFT", "0")))
    feature_snapshot(nn.Sequential(nn.Conv2d(1, 2, 3)), torch.ones(1, 1, 8, 8), layers=["0"])
"""


def test_the_summary_creates_only_the_missing_goldens(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    featviz_pytester.makepyfile(test_mix=MIXED)
    featviz_pytester.runpytest("--featviz-update", "-k", "0").assert_outcomes(passed=1, deselected=2)
    monkeypatch.setenv("SHIFT", "5")
    result = featviz_pytester.runpytest()
    result.assert_outcomes(failed=3)  # [0] drifted, [1] and [2] missing
    # a bare `pytest --featviz-update` would also accept [0]'s drift
    ids = "'test_mix.py::test_mix[1]' 'test_mix.py::test_mix[2]'"
    assert f"create the missing goldens with:  pytest --featviz-create {ids}" in result.outlines
    sidecar = featviz_pytester.path / "golden" / "test_mix" / "test_mix[0]" / "0" / "snapshot.json"
    drifted = sidecar.read_bytes()
    created = featviz_pytester.runpytest("--featviz-create")  # the command, with the whole run's selection
    created.assert_outcomes(passed=2, failed=1)
    created.stdout.fnmatch_lines(["FAILED test_mix.py::test_mix[[]0[]] - *FeatureDriftError*"])
    assert sidecar.read_bytes() == drifted
    featviz_pytester.runpytest().assert_outcomes(passed=2, failed=1)


CREATE_THEN_DRIFT = """
import os
import pytest
import torch
from torch import nn


def test_grows(feature_snapshot):
    torch.manual_seed(int(os.environ.get("SEED", "0")))
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    inputs = torch.ones(1, 1, 6, 6).cumsum(-1)
    if os.environ.get("NEW"):
        feature_snapshot(model, inputs, layers=["1"], name="new")
    feature_snapshot(model, inputs, layers=["0"], name="old")
"""


def test_the_command_of_a_missing_golden_never_accepts_a_later_drift(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A test stops at its missing snapshot, so a drift in a later one is not seen; the printed command creates
    the missing golden and fails on that drift (``--featviz-update`` would have rewritten it unseen)."""
    featviz_pytester.makepyfile(test_grow=CREATE_THEN_DRIFT)
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=1)
    old = featviz_pytester.path / "golden" / "test_grow" / "test_grows" / "old" / "snapshot.json"
    before = old.read_bytes()
    monkeypatch.setenv("NEW", "1")
    monkeypatch.setenv("SEED", "3")
    result = featviz_pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*create it with:  pytest --featviz-create test_grow.py::test_grows"])
    result.stdout.fnmatch_lines(
        ["1 golden snapshot(s) of the failing tests were not checked: a test stops at its first drifted, missing*"]
    )
    created = featviz_pytester.runpytest("--featviz-create", "test_grow.py::test_grows")
    created.assert_outcomes(failed=1)
    created.stdout.fnmatch_lines(
        [
            "featviz: torch *, mode create (missing goldens are written), *",
            "*feature drift in snapshot 'old' of test_grow.py::test_grows*",
            # nothing goes missing when missing goldens are created: "0 missing, 1 without a golden" read oddly
            "2 snapshot(s) checked: 0 matched, 1 drifted (1 test(s), 1 layer(s)), 1 without a golden (created)",
            "goldens: 1 created (in *golden); a drifted one is left as it was (accept a drift with --featviz-update)",
        ]
    )
    assert old.read_bytes() == before
    assert (old.parent.parent / "new" / "snapshot.json").is_file()


BAD_MARKER = """
import pytest
import torch
from torch import nn


@pytest.mark.featviz(threshold="high")
def test_marker(feature_snapshot):
    pass


def test_call(feature_snapshot):
    feature_snapshot(nn.Sequential(nn.Conv2d(1, 2, 3)), torch.ones(1, 1, 8, 8), threshold=2)
"""


def test_bad_settings_are_reported_without_the_plugins_frames(featviz_pytester: pytest.Pytester) -> None:
    featviz_pytester.makepyfile(test_bad=BAD_MARKER)
    result = featviz_pytester.runpytest()
    result.assert_outcomes(failed=1, errors=1)
    result.stdout.fnmatch_lines(
        ["*FeatvizError: @pytest.mark.featviz: threshold*high*", "*FeatvizError: *threshold*2*"]
    )
    assert "pytest_featviz/" not in result.stdout.str()


CASE_MARKER = (
    PRECEDENCE.split("@pytest.mark.featviz")[0]
    + """
@pytest.mark.featviz(threshold=0.7)
@pytest.mark.parametrize("expected", [pytest.param(0.8, marks=pytest.mark.featviz(threshold=0.8)), 0.7])
def test_case(feature_snapshot, expected):
    assert snap(feature_snapshot).layers[0].threshold == expected
"""
)


def test_a_parametrized_cases_marker_beats_the_functions(featviz_pytester: pytest.Pytester) -> None:
    """pytest lists a case's marks after its function's: the case's ``featviz(threshold=0.8)`` was dropped unseen."""
    featviz_pytester.makepyfile(test_cases=CASE_MARKER)
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(skipped=2)
    featviz_pytester.runpytest().assert_outcomes(passed=2)


def test_a_typo_in_a_marker_that_a_closer_one_replaces_is_an_error(featviz_pytester: pytest.Pytester) -> None:
    """A module's ``pytestmark`` with a misspelt argument stayed unread, and unreported, under any test marked too."""
    featviz_pytester.makepyfile(
        test_typo=CASE_MARKER.replace("import nn\n", "import nn\n\npytestmark = pytest.mark.featviz(treshold=0.9)\n")
    )
    result = featviz_pytester.runpytest()
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        [
            "*FeatvizError: @pytest.mark.featviz (module test_typo.py's, which a closer one replaces): unknown"
            " setting(s) treshold; known: *"
        ]
    )


TEARDOWN = """
import os

import pytest
import torch
from torch import nn


@pytest.fixture
def checked(feature_snapshot):
    yield
    torch.manual_seed(int(os.environ.get("SEED", "0")))
    feature_snapshot(nn.Sequential(nn.Conv2d(1, 2, 3)), torch.ones(1, 1, 8, 8), layers=["0"], name="down")


def test_it(checked):
    pass
"""


def test_a_snapshot_in_a_fixture_teardown_reaches_junit_xml(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    import xml.etree.ElementTree as ET

    featviz_pytester.makepyfile(test_down=TEARDOWN)
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=1)
    featviz_pytester.runpytest("--junitxml=matched.xml").assert_outcomes(passed=1)
    monkeypatch.setenv("SEED", "3")
    featviz_pytester.runpytest("--junitxml=drifted.xml").assert_outcomes(passed=1, errors=1)
    for name, outcome in (("matched.xml", "matched"), ("drifted.xml", "drifted")):
        properties = {p.get("name"): p.get("value") for p in ET.parse(featviz_pytester.path / name).iter("property")}
        assert properties["featviz:down:outcome"] == outcome, name


WALKS = """
walked = []


def pytest_collect_file(file_path, parent):
    if file_path.suffix in (".png", ".json"):
        walked.append(file_path)


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(f"pytest walked {len(walked)} golden file(s)")
"""


def test_pytest_does_not_walk_the_golden_dir(featviz_pytester: pytest.Pytester) -> None:
    """Walking a golden directory cost pytest about two milliseconds a snapshot on every run, tests or none."""
    featviz_pytester.makeconftest(WALKS)
    featviz_pytester.makepyfile(test_m=OUTSIDE.format(seed=0))
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=1)
    snapshot = featviz_pytester.path / "golden" / "test_m" / "test_x" / "0"
    assert sorted(path.name for path in snapshot.iterdir()) == ["0.png", "snapshot.json"]
    (featviz_pytester.path / "golden" / ".gitattributes").write_text("*.png binary\n")
    result = featviz_pytester.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines(["test_m.py::test_x", "pytest walked 0 golden file(s)", "1 test collected*"])
    # named on the command line, it is walked as any directory is
    featviz_pytester.runpytest("--collect-only", "-q", "golden").stdout.fnmatch_lines(["pytest walked 2 golden*"])
    # a test file among the goldens (a golden directory that holds tests): walked as usual, and the test found
    (snapshot.parent / "test_planted.py").write_text("def test_planted():\n    pass\n")
    walked = featviz_pytester.runpytest("--collect-only", "-q")
    walked.stdout.fnmatch_lines(["*test_planted.py::test_planted", "pytest walked 2 golden*", "2 tests collected*"])


@pytest.mark.parametrize(
    ("unreadable", "failed", "error"),
    [
        ("golden/test_m/test_x/0", ["test_x"], "cannot read golden sidecar \\S*test_x/0/snapshot.json"),
        ("golden/test_m/test_x", ["test_x"], "cannot read golden path \\S*test_x/0"),
        ("golden", ["test_x", "test_y"], "cannot read golden path \\S*test_x/0"),
    ],
    ids=["snapshot", "test-folder", "golden-dir"],
)
def test_an_unreadable_golden_folder_fails_its_tests_only(
    featviz_pytester: pytest.Pytester, without_root_powers: list[str], unreadable: str, failed: list[str], error: str
) -> None:
    """Goldens another user wrote under umask 077: pytest walked into the folder it could not read, and the
    collection error stopped the whole session before any test ran; a folder above the snapshot's failed its tests
    with a bare PermissionError from pathlib, and the featviz summary counted them as neither drifted nor unreadable."""
    featviz_pytester.makepyfile(
        test_m=OUTSIDE.format(seed=0)
        + OUTSIDE.split("SEED = {seed}")[1].replace("test_x", "test_y")
        + "\n\ndef test_plain():\n    pass\n"
    )
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=3)
    folder = featviz_pytester.path / unreadable
    folder.chmod(0)
    try:
        command = [*without_root_powers, sys.executable, "-m", "pytest", "-p", "no:cacheprovider"]
        result = subprocess.run(command, cwd=featviz_pytester.path, capture_output=True, text=True, timeout=300)
    finally:
        folder.chmod(0o755)
    assert "error during collection" not in result.stdout, result.stdout
    assert f"{len(failed)} failed, {3 - len(failed)} passed" in result.stdout, result.stdout
    assert re.search(rf"E +\S*GoldenError: {error}: .*Permission denied", result.stdout), result.stdout
    assert f"0 drifted (0 test(s), 0 layer(s)), 0 missing, {len(failed)} unreadable" in result.stdout, result.stdout
