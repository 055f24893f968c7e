"""config: validation of every setting, precedence of overrides, and the ini / CLI keys as pytest reads them."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import integration.lifecycle  # noqa: F401  (imports torch before any in-process run; see lifecycle.py)
import pytest

from pytest_featviz.config import (
    DEFAULT_CHANNELS,
    DEFAULT_NORMALIZE,
    DEFAULT_RMS_TOLERANCE,
    DEFAULT_STAT_TOLERANCE,
    DEFAULT_THRESHOLD,
    Settings,
    _ini_reader,
    parse_channels,
)
from pytest_featviz.records import FeatvizError


def test_defaults() -> None:
    settings = Settings(golden_dir=Path("golden"))
    assert (settings.threshold, settings.stat_tolerance, settings.rms_tolerance) == (
        DEFAULT_THRESHOLD,
        DEFAULT_STAT_TOLERANCE,
        DEFAULT_RMS_TOLERANCE,
    )
    assert settings.channels == DEFAULT_CHANNELS and settings.normalize == DEFAULT_NORMALIZE
    assert not settings.update
    assert -1.0 <= DEFAULT_THRESHOLD <= 1.0


def test_each_override_wins_over_the_one_before_and_none_keeps_it() -> None:
    base = Settings(golden_dir=Path("golden"))
    ini = base.override({"threshold": "0.5", "channels": "4"}, "ini")
    cli = ini.override({"threshold": "0.6", "channels": None}, "CLI")
    marker = cli.override({"threshold": 0.7, "normalize": "sigmoid"}, "marker")
    call = marker.override({"threshold": 0.8, "normalize": None}, "call")
    assert [s.threshold for s in (base, ini, cli, marker, call)] == [DEFAULT_THRESHOLD, 0.5, 0.6, 0.7, 0.8]
    assert call.channels == 4 and call.normalize == "sigmoid"
    # the setting that gave the channels is kept to name it where a layer cannot serve them
    assert [s.channels_from for s in (base, ini, cli, marker, call)] == ["", *["ini: channels"] * 4]


@pytest.mark.parametrize("value", [1.0001, -1.5, 2, "1.5", float("nan"), float("inf"), "x", True, None])
def test_threshold_must_be_an_ssim_score(value: object) -> None:
    base = Settings(golden_dir=Path("golden"))
    if value is None:
        assert base.override({"threshold": value}, "call").threshold == DEFAULT_THRESHOLD
        return
    with pytest.raises(FeatvizError, match=r"^call: threshold must be|^call: threshold is an SSIM score"):
        base.override({"threshold": value}, "call")


@pytest.mark.parametrize("value", [-1.0, 0, 1, "0.95"])
def test_threshold_bounds_are_inclusive(value: object) -> None:
    assert Settings(golden_dir=Path("g")).override({"threshold": value}, "call").threshold == float(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"stat_tolerance": -0.1}, "stat_tolerance must be zero or more"),
        ({"rms_tolerance": "abc"}, "rms_tolerance must be a number"),
        ({"threshold": True}, "threshold must be a number; got True"),  # not "a finite number": float(True) is 1.0
        ({"normalize": "zscore"}, "normalize must be one of minmax, sigmoid, percentile"),
        ({"thresold": 0.9}, "unknown setting"),
    ],
)
def test_bad_settings_say_what_is_wrong(values: dict[str, object], message: str) -> None:
    with pytest.raises(FeatvizError, match=message):
        Settings(golden_dir=Path("g")).override(values, "marker")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"threshold": ""}, "--featviz-threshold must be a number; got ''"),
        ({"stat_tolerance": "-1"}, "--featviz-stat-tolerance must be zero or more; got '-1'"),
        ({"preset": "loose"}, "--featviz-preset must be one of default, strict, tolerant; got 'loose'"),
        ({"channels": "top:x"}, "--featviz-channels 'top:N' needs a count N of at least 1; got 'top:x'"),
        ({"channels": "1,-1"}, "--featviz-channels must hold channel indices of zero or more; got [1, -1]"),
        (
            {"noise_floor": "sometimes"},
            "--featviz-noise-floor must be true or false (or yes/no, on/off, 1/0); got 'sometimes'",
        ),
        ({"thresold": 0.9}, "unknown setting(s) thresold; known: preset, threshold,"),
    ],
    ids=["empty", "negative", "preset", "top", "index", "flag", "unknown"],
)
def test_a_naming_function_as_source_names_each_setting(values: dict[str, object], message: str) -> None:
    def option(key: str) -> str:
        return f"--featviz-{key.replace('_', '-')}"

    with pytest.raises(FeatvizError) as raised:
        Settings(golden_dir=Path("g")).override(values, option)
    assert str(raised.value).startswith(message)


def _config(ini_value: object) -> Any:
    return SimpleNamespace(getini=lambda name: ini_value)


@pytest.mark.parametrize(
    ("ini_value", "read"), [("", None), ("  ", None), (None, None), ("0.5", "0.5"), (0, 0), (0.0, 0.0), (False, False)]
)
def test_an_empty_ini_value_is_unset_and_a_native_zero_or_false_is_kept(ini_value: object, read: object) -> None:
    assert _ini_reader(_config(ini_value))("threshold") == read


def test_a_native_toml_value_refused_by_pytest_before_9_2_is_a_usage_error_saying_what_to_do() -> None:
    def getini(name: str) -> object:  # pytest 9.0 and 9.1 raise TypeError for a float in [tool.pytest]
        raise TypeError(f"pyproject.toml: config option '{name}' expects a string, got float: 0.5")

    with pytest.raises(pytest.UsageError, match=r"expects a string, got float: 0\.5; quote it in TOML, or use pytest"):
        _ini_reader(SimpleNamespace(getini=getini))("threshold")


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        (16, 16),
        ("16", 16),
        (" all ", "all"),
        ([0, 3], (0, 3)),
        ("0,3", (0, 3)),
        ("[1, 2]", (1, 2)),
        ((5,), (5,)),
        ("3,", (3,)),
        ("[0, 3,]", (0, 3)),
        ("top: 4", "top:4"),
        ("+3", 3),
        (["3 ", 4.0], (3, 4)),
    ],
)
def test_parse_channels(text: object, parsed: object) -> None:
    assert parse_channels(text) == parsed


@pytest.mark.parametrize(
    "text",
    [0, -2, "none", True, [], "1.5", [1, -1], "0,0", [2, 2], "[]", "-1", "1,-1", b"3", ["1_6"], ["\u0663"], [True]],
)
def test_parse_channels_rejects(text: object) -> None:
    with pytest.raises(FeatvizError, match="channel"):
        parse_channels(text, "ini")


def test_channels_from_an_array_or_a_tensor_of_indices() -> None:
    # np.arange(0, 64, 4) was refused ("must be a count, a list of indices, ...")
    import numpy as np
    import torch

    assert parse_channels(np.arange(0, 16, 4)) == (0, 4, 8, 12)
    assert parse_channels(torch.tensor([3, 1])) == (3, 1)
    assert parse_channels(np.int64(5)) == 5
    for refused in (np.array([0.5, 1.0]), np.array([[0, 1]]), torch.tensor([2, 2])):
        with pytest.raises(FeatvizError, match="channels"):
            parse_channels(refused)


@pytest.mark.parametrize(
    "text",
    ["1,,2", ",1", "1_6", "\u0663", "top:\u0663", "top:\u00b2", "1 2", "0x10", "[[0,3]]", "0,3]", "[0,3", "(0,3]"],
)
def test_channel_text_int_would_read_is_refused_as_written(text: str) -> None:
    # int() takes "1_6" as 16 and "\u0663" (an Arabic-Indic three) as 3, and an empty entry was dropped: each is a
    # typo that silently selected other channels
    with pytest.raises(
        FeatvizError, match=r"--featviz-channels: channels (must be a count|'top:N' needs|has unm)"
    ) as raised:
        parse_channels(text, "--featviz-channels")
    assert repr(text) in str(raised.value)


CHANNELS_SUITE = """
import torch
from torch import nn


def test_channels(feature_snapshot):
    torch.manual_seed(0)
    result = feature_snapshot(nn.Sequential(nn.Conv2d(1, 8, 1)), torch.ones(1, 1, 4, 4), layers="0")
    print("CHANNELS", list(result.layers[0].channels))
"""


@pytest.mark.parametrize(
    ("ini", "cli", "expected"),
    [
        ("3", None, "[0, 2, 5]"),
        ("all", None, "[0, 1, 2, 3, 4, 5, 6, 7]"),
        ("1,5", None, "[1, 5]"),
        ("3", "2", "[0, 4]"),
        (None, None, str(list(range(min(8, DEFAULT_CHANNELS))))),
    ],
)
def test_ini_featviz_channels(
    featviz_pytester: pytest.Pytester, ini: str | None, cli: str | None, expected: str
) -> None:
    featviz_pytester.makepyfile(test_ch=CHANNELS_SUITE)
    if ini is not None:
        featviz_pytester.makeini(f"[pytest]\naddopts = -p no:cacheprovider\nfeatviz_channels = {ini}\n")
    args = ["--featviz-update", "-s"] + (["--featviz-channels", cli] if cli else [])
    result = featviz_pytester.runpytest(*args)
    result.assert_outcomes(passed=1)
    assert f"CHANNELS {expected}\n" in result.stdout.str()


@pytest.mark.parametrize(
    ("ini_line", "message"),
    [
        (
            "featviz_channels = lots",
            "ERROR: tox.ini: featviz_channels must be a count, a list of indices, 'all' or 'top:N'; got 'lots'",
        ),
        (
            "featviz_noise_floor = sometimes",
            "ERROR: tox.ini: featviz_noise_floor must be true or false (or yes/no, on/off, 1/0); got 'sometimes'",
        ),
    ],
)
def test_a_bad_ini_value_is_a_usage_error(featviz_pytester: pytest.Pytester, ini_line: str, message: str) -> None:
    featviz_pytester.makepyfile(test_ch=CHANNELS_SUITE)
    featviz_pytester.makeini(f"[pytest]\naddopts = -p no:cacheprovider\n{ini_line}\n")
    result = featviz_pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_golden_dir_from_ini_and_cli(featviz_pytester: pytest.Pytester) -> None:
    featviz_pytester.makepyfile(test_ch=CHANNELS_SUITE)
    featviz_pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\nfeatviz_golden_dir = snapshots/feat\n")
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=1)
    assert (featviz_pytester.path / "snapshots/feat/test_ch/test_channels/0/snapshot.json").is_file()
    featviz_pytester.runpytest("--featviz-update", "--featviz-golden-dir", "elsewhere").assert_outcomes(passed=1)
    assert (featviz_pytester.path / "elsewhere/test_ch/test_channels/0/snapshot.json").is_file()
    missing = featviz_pytester.runpytest("--featviz-golden-dir", "nowhere")
    missing.assert_outcomes(failed=1)
    # the command given for a missing golden keeps the golden directory that was asked for
    missing.stdout.fnmatch_lines(
        ["*create it with:  pytest --featviz-create --featviz-golden-dir=nowhere test_ch.py::*"]
    )


GAIN_SUITE = """
import os

import pytest
import torch
from torch import nn


def build():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
    with torch.no_grad():  # a 1% gain on the second conv when GAIN is set: inside the configured tolerances
        model[2].weight *= float(os.environ.get("GAIN", "1"))
        model[2].bias *= float(os.environ.get("GAIN", "1"))
    smooth = torch.nn.functional.avg_pool2d(torch.randn(1, 3, 52, 52, generator=torch.Generator().manual_seed(1)), 5, 1)
    return model, smooth / smooth.std()


{marker}
def test_gain(feature_snapshot):
    model, x = build()
    feature_snapshot(model, x, layers=["3"]{call})
"""


@pytest.mark.parametrize("where", ["default", "cli", "ini", "marker", "call"])
def test_the_noise_floor_is_on_by_default_and_off_at_every_level(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    marker = "@pytest.mark.featviz(noise_floor=False)" if where == "marker" else ""
    call = ", noise_floor=False" if where == "call" else ""
    featviz_pytester.makepyfile(test_gain=GAIN_SUITE.format(marker=marker, call=call))
    if where == "ini":
        featviz_pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\nfeatviz_noise_floor = false\n")
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=1)
    monkeypatch.setenv("GAIN", "1.01")
    result = featviz_pytester.runpytest(*(["--featviz-noise-floor=off"] if where == "cli" else []))
    if where == "default":
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines(["*judged by tolerances fitted to this layer's noise floor: TF32 rounding alone*"])
    else:
        result.assert_outcomes(passed=1)


def test_a_preset_on_the_call_sets_the_three_tolerances(tmp_path: Path) -> None:
    import torch
    from torch import nn

    from unit import snapshotter

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 1))
    snap = snapshotter(tmp_path, update=True)
    result = snap(model, torch.ones(1, 1, 4, 4), layers="0", preset="tolerant")
    assert result.outcome == "created"
    checked = snapshotter(tmp_path)(model, torch.ones(1, 1, 4, 4), layers="0", preset="strict")
    layer = checked.layers[0]
    assert (layer.threshold, layer.stat_tolerance, layer.rms_tolerance) == (0.995, 0.012, 0.05)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1, True), (0, False), ("1", True), ("off", False), (True, True)],
)
def test_an_on_off_setting_takes_what_its_error_offers(value: object, expected: bool) -> None:
    import numpy as np

    settings = Settings(golden_dir=Path("g"))
    assert settings.override({"deterministic": value}, "call").deterministic is expected
    assert settings.override({"noise_floor": np.bool_(expected)}, "marker").noise_floor is expected
    assert settings.override({"noise_floor": np.int64(int(expected))}, "marker").noise_floor is expected


@pytest.mark.parametrize("value", [2, -1, 1.0, 0.0, "2", "maybe", [1], "tensor 1.0", "array [1]"])
def test_an_on_off_setting_refuses_other_numbers_and_words(value: object) -> None:
    import numpy as np
    import torch

    if value == "tensor 1.0":
        value = torch.tensor(1.0)  # has __index__, which raises for a float tensor
    elif value == "array [1]":
        value = np.array([1])
    with pytest.raises(FeatvizError, match=r"noise_floor must be true or false \(or yes/no, on/off, 1/0\); got"):
        Settings(golden_dir=Path("g")).override({"noise_floor": value}, "call")
