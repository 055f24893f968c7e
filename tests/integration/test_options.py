"""Options and ini keys as a user types them: empty values, errors that name the option or key, and every kind of
configuration file, pytest 9's native TOML table included."""

from __future__ import annotations

import pytest

import integration.lifecycle  # noqa: F401  (imports torch before any in-process run; see lifecycle.py)
from pytest_featviz.config import DEFAULT_CHANNELS, DEFAULT_RMS_TOLERANCE, DEFAULT_STAT_TOLERANCE, DEFAULT_THRESHOLD

# Prints the session settings as one line; no snapshot is taken, so nothing is written.
SETTINGS_SUITE = """
from pytest_featviz.plugin import SETTINGS_KEY


def test_settings(pytestconfig):
    s = pytestconfig.stash[SETTINGS_KEY]
    print("\\nSETTINGS", s.threshold, s.stat_tolerance, s.rms_tolerance, s.channels, s.normalize, s.deterministic,
          s.noise_floor, s.golden_dir.name, s.report_dir.name, s.golden_key)
"""
DEFAULTS = (
    f"SETTINGS {DEFAULT_THRESHOLD} {DEFAULT_STAT_TOLERANCE} {DEFAULT_RMS_TOLERANCE} {DEFAULT_CHANNELS} minmax False"
    " True golden featviz-report none"
)
NATIVE_TOML = pytest.mark.skipif(pytest.version_tuple[:2] < (9, 0), reason="[tool.pytest] needs pytest 9")
TYPED_TOML = pytest.mark.skipif(pytest.version_tuple[:2] < (9, 2), reason="typed ini keys need pytest 9.2")


def _configure(pytester: pytest.Pytester, file_name: str, text: str) -> None:
    """Make ``file_name`` the run's only configuration file (the fixture's tox.ini goes)."""
    (pytester.path / "tox.ini").unlink()
    (pytester.path / file_name).write_text(text, encoding="utf-8")


def _settings_line(result: pytest.RunResult) -> str:
    result.assert_outcomes(passed=1)
    return next(line for line in result.outlines if line.startswith("SETTINGS "))


# -- an empty value -------------------------------------------------------------------------------------------------


EMPTY_VALUE_ERRORS = [
    ("--featviz-threshold", "ERROR: --featviz-threshold must be a number; got ''"),
    ("--featviz-stat-tolerance", "ERROR: --featviz-stat-tolerance must be a number; got ''"),
    ("--featviz-rms-tolerance", "ERROR: --featviz-rms-tolerance must be a number; got ''"),
    ("--featviz-channels", "ERROR: --featviz-channels must be a count, a list of indices, 'all' or 'top:N'; got ''"),
    ("--featviz-golden-dir", "ERROR: --featviz-golden-dir needs a directory; got an empty value"),
    ("--featviz-report-dir", "ERROR: --featviz-report-dir needs a directory; got an empty value"),
    # options with choices: argparse refuses the empty value itself
    ("--featviz-normalize", "*argument --featviz-normalize: invalid choice: ''*"),
    ("--featviz-preset", "*argument --featviz-preset: invalid choice: ''*"),
    ("--featviz-noise-floor", "*argument --featviz-noise-floor: invalid choice: ''*"),
]


@pytest.mark.parametrize(
    ("option", "message"),
    EMPTY_VALUE_ERRORS,
    ids=[option.removeprefix("--featviz-") for option, _ in EMPTY_VALUE_ERRORS],
)
def test_an_empty_option_value_is_a_usage_error_naming_the_option(
    featviz_pytester: pytest.Pytester, option: str, message: str
) -> None:
    featviz_pytester.makepyfile(test_settings=SETTINGS_SUITE)
    result = featviz_pytester.runpytest(f"{option}=")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "SETTINGS" not in result.stdout.str()


def test_an_empty_ini_value_is_unset_and_o_with_an_empty_value_restores_the_default(
    featviz_pytester: pytest.Pytester,
) -> None:
    featviz_pytester.makepyfile(test_settings=SETTINGS_SUITE)
    keys = ("threshold", "stat_tolerance", "rms_tolerance", "channels", "normalize", "preset", "deterministic")
    keys += ("noise_floor", "golden_dir", "report_dir", "golden_key")
    empty = "".join(f"featviz_{key} =\n" for key in keys)
    featviz_pytester.makeini(f"[pytest]\naddopts = -p no:cacheprovider\n{empty}")
    assert _settings_line(featviz_pytester.runpytest("-s")) == DEFAULTS
    featviz_pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\nfeatviz_threshold = 0.5\n")
    assert _settings_line(featviz_pytester.runpytest("-s", "-o", "featviz_threshold=")) == DEFAULTS


DIRECTORIES_SUITE = """
def test_dirs(pytestconfig):
    from pytest_featviz.plugin import SETTINGS_KEY

    s = pytestconfig.stash[SETTINGS_KEY]
    print("\\nDIRS", s.golden_dir, s.report_dir)
"""


def test_ini_directories_expand_variables_and_home_as_pytest_s_cache_dir_does(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``featviz_golden_dir = $GOLDENS/g`` made a folder named ``$GOLDENS`` under the rootdir."""
    monkeypatch.setenv("FEATVIZ_QA_GOLDENS", str(featviz_pytester.path / "shared"))
    monkeypatch.setenv("HOME", str(featviz_pytester.path / "home"))
    featviz_pytester.makepyfile(test_dirs=DIRECTORIES_SUITE)
    featviz_pytester.makeini(
        "[pytest]\naddopts = -p no:cacheprovider\nfeatviz_golden_dir = $FEATVIZ_QA_GOLDENS/g\n"
        "featviz_report_dir = ~/report\n"
    )
    result = featviz_pytester.runpytest("-s")
    result.assert_outcomes(passed=1)
    line = next(line for line in result.outlines if line.startswith("DIRS "))
    assert line == f"DIRS {featviz_pytester.path / 'shared' / 'g'} {featviz_pytester.path / 'home' / 'report'}"


@NATIVE_TOML
def test_an_empty_string_in_the_native_toml_table_is_unset(featviz_pytester: pytest.Pytester) -> None:
    featviz_pytester.makepyfile(test_settings=SETTINGS_SUITE)
    _configure(featviz_pytester, "pyproject.toml", '[tool.pytest]\nfeatviz_threshold = ""\nfeatviz_channels = ""\n')
    assert _settings_line(featviz_pytester.runpytest("-s", "-p", "no:cacheprovider")) == DEFAULTS


# -- errors name what the user typed --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "ini_line", "message"),
    [
        (
            ["--featviz-threshold=1.5"],
            "",
            "ERROR: --featviz-threshold is an SSIM score and must lie in [[]-1, 1[]]; got '1.5'",
        ),
        (["--featviz-rms-tolerance", "-1"], "", "ERROR: --featviz-rms-tolerance must be zero or more; got '-1'"),
        (
            ["--featviz-channels=top:0"],
            "",
            "ERROR: --featviz-channels 'top:N' needs a count N of at least 1; got 'top:0'",
        ),
        (
            [],
            "featviz_stat_tolerance = lots",
            "ERROR: tox.ini: featviz_stat_tolerance must be a number; got 'lots'",
        ),
        ([], "featviz_preset = loose", "ERROR: tox.ini: featviz_preset must be one of default, strict, tolerant*"),
        (
            ["-o", "featviz_deterministic=maybe"],
            "",
            "ERROR: -o featviz_deterministic must be true or false (or yes/no, on/off, 1/0); got 'maybe'",
        ),
        ([], "featviz_golden_key = gpu", "ERROR: tox.ini: featviz_golden_key must be one of none, device; got 'gpu'"),
    ],
    ids=["cli-threshold", "cli-rms-tolerance", "cli-channels", "ini-stat-tolerance", "ini-preset", "o-flag", "ini-key"],
)
def test_a_bad_value_names_the_option_or_the_ini_key(
    featviz_pytester: pytest.Pytester, args: list[str], ini_line: str, message: str
) -> None:
    featviz_pytester.makepyfile(test_settings=SETTINGS_SUITE)
    featviz_pytester.makeini(f"[pytest]\naddopts = -p no:cacheprovider\n{ini_line}\n")
    result = featviz_pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "featviz CLI" not in result.stderr.str() and "featviz ini" not in result.stderr.str()
    # the help of the options and the marker still shows: it says what the bad value should be
    shown = featviz_pytester.runpytest(*args, "--help")
    assert shown.ret == pytest.ExitCode.OK and "--featviz-threshold" in shown.stdout.str()
    markers = featviz_pytester.runpytest(*args, "--markers")
    assert markers.ret == pytest.ExitCode.OK and "@pytest.mark.featviz" in markers.stdout.str()


INDEX_LIST_SUITE = """
import pytest
import torch
from torch import nn


def _snapshot(feature_snapshot, **kwargs):
    torch.manual_seed(0)
    feature_snapshot(nn.Sequential(nn.Conv2d(1, 4, 1)).eval(), torch.ones(1, 1, 4, 4), layers=["0"], **kwargs)


def test_setting(feature_snapshot):
    _snapshot(feature_snapshot)


@pytest.mark.featviz(channels=[0, 7])
def test_marker(feature_snapshot):
    _snapshot(feature_snapshot)


def test_call(feature_snapshot):
    _snapshot(feature_snapshot, channels=[0, 9])
"""


@pytest.mark.parametrize(
    ("args", "ini_line", "source"),
    [
        (["--featviz-channels=0,5"], "", "--featviz-channels"),
        (["-o", "featviz_channels=0,5"], "", "-o featviz_channels"),
        ([], "featviz_channels = 0,5", "tox.ini: featviz_channels"),
    ],
    ids=["cli", "o", "ini"],
)
def test_an_index_list_a_layer_cannot_serve_names_the_setting_it_came_from(
    featviz_pytester: pytest.Pytester, args: list[str], ini_line: str, source: str
) -> None:
    # the list is refused only when a layer's channel count is known: the error says which of the places that set
    # channels the list came from, since the test's own code may not mention it
    featviz_pytester.makepyfile(test_indices=INDEX_LIST_SUITE)
    featviz_pytester.makeini(f"[pytest]\naddopts = -p no:cacheprovider\n{ini_line}\n")
    result = featviz_pytester.runpytest("--featviz-update", *args)
    result.assert_outcomes(failed=3)
    out = (
        "*layer '0' (output shape (1, 4, 4, 4)): channel indices [[]{}[]] are out of range for a layer with 4 channels"
    )
    result.stdout.fnmatch_lines(
        [
            out.format(5) + f" (set by {source})",
            out.format(7) + " (set by @pytest.mark.featviz: channels)",
            out.format(9) + " (set by feature_snapshot(): channels)",
        ],
        consecutive=False,
    )
    assert not (featviz_pytester.path / "golden").exists()


# -- every kind of configuration file -------------------------------------------------------------------------------

KEYS = {
    "threshold": "0.5",
    "stat_tolerance": "0",
    "rms_tolerance": "1",
    "channels": "4",
    "normalize": "sigmoid",
    "deterministic": "true",
    "noise_floor": "false",
}
CONFIGURED = "SETTINGS 0.5 0.0 1.0 4 sigmoid True False golden featviz-report none"


def _ini_lines(quote: str = "", native: bool = False) -> str:
    def value(key: str, text: str) -> str:
        return text if native and key != "normalize" else f"{quote}{text}{quote}"

    return "".join(f"featviz_{key} = {value(key, text)}\n" for key, text in KEYS.items())


@pytest.mark.parametrize(
    ("file_name", "text"),
    [
        pytest.param("pytest.ini", "[pytest]\n" + _ini_lines(), id="pytest.ini"),
        pytest.param("tox.ini", "[pytest]\n" + _ini_lines(), id="tox.ini"),
        pytest.param("setup.cfg", "[tool:pytest]\n" + _ini_lines(), id="setup.cfg"),
        pytest.param("pyproject.toml", "[tool.pytest.ini_options]\n" + _ini_lines('"'), id="ini_options-strings"),
        pytest.param(
            "pyproject.toml", "[tool.pytest.ini_options]\n" + _ini_lines('"', native=True), id="ini_options-values"
        ),
        pytest.param("pyproject.toml", "[tool.pytest]\n" + _ini_lines('"'), id="native-strings", marks=NATIVE_TOML),
        pytest.param(
            "pyproject.toml", "[tool.pytest]\n" + _ini_lines('"', native=True), id="native-values", marks=TYPED_TOML
        ),
    ],
)
def test_every_configuration_file_kind_sets_the_same_settings(
    featviz_pytester: pytest.Pytester, file_name: str, text: str
) -> None:
    featviz_pytester.makepyfile(test_settings=SETTINGS_SUITE)
    _configure(featviz_pytester, file_name, text)
    assert _settings_line(featviz_pytester.runpytest("-s", "-p", "no:cacheprovider")) == CONFIGURED


@pytest.mark.parametrize(
    ("table", "line", "message"),
    [
        (
            "tool.pytest.ini_options",
            'featviz_threshold = "2"',
            "ERROR: pyproject.toml: featviz_threshold is an SSIM score and must lie in [[]-1, 1[]]; got '2'",
        ),
        pytest.param(
            "tool.pytest",
            "featviz_threshold = 2",
            "ERROR: pyproject.toml: featviz_threshold is an SSIM score and must lie in [[]-1, 1[]]; got 2",
            marks=TYPED_TOML,
        ),
        pytest.param(
            "tool.pytest",
            'featviz_threshold = "high"',
            "ERROR: pyproject.toml: featviz_threshold must be a number; got 'high'",
            marks=NATIVE_TOML,
        ),
        pytest.param(
            "tool.pytest",
            "featviz_channels = 0",
            "ERROR: pyproject.toml: featviz_channels must be at least 1; got 0",
            marks=TYPED_TOML,
        ),
        pytest.param(
            "tool.pytest",
            'featviz_noise_floor = "sometimes"',
            "ERROR: pyproject.toml: featviz_noise_floor must be true or false (or yes/no, on/off, 1/0);"
            " got 'sometimes'",
            marks=NATIVE_TOML,
        ),
        # a TOML value of no accepted type: pytest's own message, which names the file, the key and the types
        pytest.param(
            "tool.pytest",
            "featviz_threshold = true",
            "ERROR: *pyproject.toml: config option 'featviz_threshold' expects one of string | float, got bool: True",
            marks=TYPED_TOML,
        ),
    ],
    ids=["ini_options-string", "native-number", "native-string", "native-count", "native-flag", "native-bool"],
)
def test_a_bad_toml_value_is_a_usage_error_naming_the_key(
    featviz_pytester: pytest.Pytester, table: str, line: str, message: str
) -> None:
    featviz_pytester.makepyfile(test_settings=SETTINGS_SUITE)
    _configure(featviz_pytester, "pyproject.toml", f"[{table}]\n{line}\n")
    result = featviz_pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "the featviz golden directory */golden is a file: move it away, or keep the goldens elsewhere *"),
        (
            ("--featviz-golden-dir=golden/sub",),
            "the featviz golden directory */golden/sub lies under */golden, which is a file: move it away, *",
        ),
        (
            ("--featviz-report-dir=golden",),
            "the featviz report directory */golden is a file: move it away, or keep the report elsewhere"
            " (--featviz-report-dir / ini featviz_report_dir)",
        ),
    ],
    ids=["golden", "golden-below", "report"],
)
def test_a_file_where_a_featviz_directory_should_be_is_a_usage_error(
    featviz_pytester: pytest.Pytester, args: tuple[str, ...], message: str
) -> None:
    """A file in the report directory's place, or above the golden directory, made every test fail, or printed
    "could not write the report" three times, instead of stopping the run at once."""
    featviz_pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    (featviz_pytester.path / "golden").write_text("not a directory")
    if args:
        featviz_pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\nfeatviz_golden_dir = goldens\n")
    result = featviz_pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])
    assert (featviz_pytester.path / "golden").read_text() == "not a directory"


@pytest.mark.parametrize("role", ["golden", "report"])
def test_a_directory_the_os_refuses_to_look_at_is_a_usage_error(featviz_pytester: pytest.Pytester, role: str) -> None:
    """A name too long for the file system (or a folder above that cannot be read) stopped the session with an
    INTERNALERROR from the start-up checks."""
    featviz_pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    result = featviz_pytester.runpytest(f"--featviz-{role}-dir={'d' * 300}/x")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"ERROR: the featviz {role} directory */ddd*/x cannot be used: *; point --featviz-{role}-dir / ini *"]
    )
    assert "INTERNALERROR" not in result.stderr.str() + result.stdout.str()


def test_a_dangling_symlink_for_the_golden_directory_is_a_usage_error(featviz_pytester: pytest.Pytester) -> None:
    """Goldens kept in another checkout behind a link: with the target gone, every test said "missing golden, run
    --featviz-update", and the update then failed to write. The start-up error names the link and its target."""
    featviz_pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    (featviz_pytester.path / "golden").symlink_to(featviz_pytester.path / "elsewhere" / "goldens")
    for args in ((), ("--featviz-update",)):
        result = featviz_pytester.runpytest(*args)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines(
            ["ERROR: the featviz golden directory */golden is a symbolic link to */elsewhere/goldens, which does not*"]
        )
    assert not (featviz_pytester.path / "elsewhere").exists()
    (featviz_pytester.path / "elsewhere" / "goldens").mkdir(parents=True)
    featviz_pytester.runpytest().assert_outcomes(passed=1)


def test_a_link_loop_a_dangling_parent_and_a_chain_of_links_are_usage_errors(featviz_pytester: pytest.Pytester) -> None:
    """A loop stopped the session with an INTERNALERROR; a dangling link above the golden directory, or a chain of
    links, slipped past the start-up check (or named the wrong missing target)."""
    featviz_pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    path = featviz_pytester.path
    (path / "loop").symlink_to(path / "loop")
    (path / "base").symlink_to(path / "nowhere")
    (path / "first").symlink_to(path / "second")
    (path / "second").symlink_to(path / "gone")
    cases = {
        "loop": "*loop is a symbolic link that loops; *",
        "base/golden": "*base is a symbolic link to */nowhere, which does not exist; *",
        "first": "*first is a symbolic link to */gone, which does not exist; *",
    }
    for directory, message in cases.items():
        result = featviz_pytester.runpytest("--featviz-golden-dir", directory)
        assert result.ret == pytest.ExitCode.USAGE_ERROR, directory
        result.stderr.fnmatch_lines([f"ERROR: the featviz golden directory *{directory}: {message}"])
    result = featviz_pytester.runpytest("--featviz-report-dir", "base/report")
    result.stderr.fnmatch_lines(["ERROR: the featviz report directory *base/report: *base is a symbolic link to *"])


def test_pytest_html_writing_the_featviz_index_is_a_usage_error(featviz_pytester: pytest.Pytester) -> None:
    pytest.importorskip("pytest_html")
    featviz_pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    result = featviz_pytester.runpytest("--html=out/index.html", "--featviz-report-dir", "out")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: pytest-html's --html=out/index.html is the featviz report's index.html in *"])
    featviz_pytester.runpytest("--html=out/tests.html", "--featviz-report-dir", "out").assert_outcomes(passed=1)
