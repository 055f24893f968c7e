"""The ``featviz`` command-line options and ini keys, as ``pytest --help`` lists them (:func:`add_options`);
:mod:`pytest_featviz.config` reads and checks their values into :class:`~pytest_featviz.config.Settings`."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_featviz.config import (
    DEFAULT_CHANNELS,
    DEFAULT_GOLDEN_DIR,
    DEFAULT_NORMALIZE,
    DEFAULT_REPORT_DIR,
    DEFAULT_RMS_TOLERANCE,
    DEFAULT_STAT_TOLERANCE,
    DEFAULT_THRESHOLD,
    PRESETS,
)
from pytest_featviz.outcomes import NORMALIZE_MODES


def add_options(parser: pytest.Parser) -> None:
    """Register the ``featviz`` option group and ini keys."""
    group = parser.getgroup("featviz", "feature-map snapshots (pytest-featviz)")
    group.addoption(
        "--featviz-update",
        action="store_true",
        default=False,
        help="create missing goldens and rewrite drifted ones instead of failing; matching goldens are left alone.",
    )
    group.addoption(
        "--featviz-create",
        action="store_true",
        default=False,
        help="create missing goldens and check the others as usual: no golden is rewritten, so a drift still fails"
        " (the command a missing golden's message prints).",
    )
    group.addoption(
        "--featviz-golden-dir",
        metavar="DIR",
        default=None,
        help=f"directory of golden snapshots, relative to the invocation directory (ini: featviz_golden_dir,"
        f" relative to the ini file's directory, else the rootdir; default: {DEFAULT_GOLDEN_DIR}/ there).",
    )
    group.addoption(
        "--featviz-threshold",
        metavar="SSIM",
        default=None,
        help=f"lowest per-channel SSIM that still matches, in [-1, 1] (ini: featviz_threshold;"
        f" default {DEFAULT_THRESHOLD}).",
    )
    group.addoption(
        "--featviz-stat-tolerance",
        metavar="STD",
        default=None,
        help="largest change of a channel's mean or std, in units of its golden std"
        f" (ini: featviz_stat_tolerance; default {DEFAULT_STAT_TOLERANCE}).",
    )
    group.addoption(
        "--featviz-rms-tolerance",
        metavar="SPREAD",
        default=None,
        help="largest RMS difference of a channel's picture, in units of its golden spread"
        f" (ini: featviz_rms_tolerance; default {DEFAULT_RMS_TOLERANCE}).",
    )
    group.addoption(
        "--featviz-channels",
        metavar="N|all|I,J|top:N",
        default=None,
        help=(
            "channels per layer: N spread evenly over the layer, 'all', indices (0,3,7), or top:N, the N of highest"
            f" activation (ini: featviz_channels; default {DEFAULT_CHANNELS})."
        ),
    )
    group.addoption(
        "--featviz-normalize",
        choices=NORMALIZE_MODES,
        default=None,
        help=f"how channel values become grey levels (ini: featviz_normalize; default {DEFAULT_NORMALIZE}).",
    )
    group.addoption(
        "--featviz-preset",
        choices=tuple(PRESETS),
        default=None,
        help="set threshold, stat and rms tolerance at once: default, strict (sharper, for one pinned environment)"
        " or tolerant (quieter) (ini: featviz_preset; marker/call: preset=).",
    )
    group.addoption(
        "--featviz-report-dir",
        metavar="DIR",
        default=None,
        help="directory of the drift report (diff mosaics, current renders, report.json, index.html), relative to"
        f" the invocation directory (ini: featviz_report_dir, relative to the ini file's directory, else the rootdir;"
        f" default: {DEFAULT_REPORT_DIR}/ there).",
    )
    group.addoption(
        "--featviz-report-all",
        action="store_true",
        default=False,
        help="write the report for every snapshot checked, not only for drifted, missing and unreadable ones.",
    )
    group.addoption(
        "--featviz-prune",
        action="store_true",
        default=False,
        help="delete stale goldens: snapshots of test files that ran completely which no executed test used, and of"
        " test files that no longer exist.",
    )
    group.addoption(
        "--featviz-deterministic",
        action="store_true",
        default=None,
        help="run every snapshot with TF32 and cudnn.benchmark off and deterministic algorithms on, flags restored"
        " afterwards (ini: featviz_deterministic; marker/call: deterministic=True).",
    )
    group.addoption(
        "--featviz-noise-floor",
        choices=("on", "off"),
        default=None,
        help="'on' (default): a layer whose scores are not clean is judged by tolerances fitted to how far emulated"
        " TF32 rounding moves it (4x that, between 0.4x and 1x the configured ones; one more forward pass, only"
        " then); 'off': configured tolerances only (ini: featviz_noise_floor; marker/call: noise_floor=False).",
    )
    group.addoption(
        "--featviz-calibrate",
        action="store_true",
        default=False,
        help="also run each snapshot under benign perturbations (threads, channels_last, TF32 rounding, float64) and"
        " print per layer the lowest SSIM and largest changes seen next to the thresholds; never writes goldens.",
    )
    flag, number, count = _ini_types()
    parser.addini(
        "featviz_deterministic",
        "deterministic algorithms, TF32 off for every snapshot (true/false)",
        type=flag,
        default=None,
    )
    parser.addini(
        "featviz_noise_floor",
        "fit tolerances to each layer's TF32 noise floor when scores are not clean (true/false)",
        type=flag,
        default=None,
    )
    parser.addini(
        "featviz_golden_key",
        "'device': goldens per device type (<snapshot>@cuda/), falling back to the shared one; 'none' (default)",
        default=None,
    )
    parser.addini(
        "featviz_golden_dir", "directory of golden snapshots, relative to this ini file's directory", default=None
    )
    parser.addini(
        "featviz_report_dir", "directory of the drift report, relative to this ini file's directory", default=None
    )
    parser.addini("featviz_preset", f"tolerance preset: {', '.join(PRESETS)}", default=None)
    parser.addini("featviz_threshold", "lowest per-channel SSIM that still matches", type=number, default=None)
    parser.addini(
        "featviz_stat_tolerance", "largest channel statistic change, in golden std units", type=number, default=None
    )
    parser.addini(
        "featviz_rms_tolerance", "largest RMS picture difference, in golden spread units", type=number, default=None
    )
    parser.addini("featviz_channels", "channels per layer: N, 'all', indices or top:N", type=count, default=None)
    parser.addini("featviz_normalize", f"normalization: {', '.join(NORMALIZE_MODES)}", default=None)


def _ini_types() -> tuple[Any, Any, Any]:
    """The ``addini`` types of the flag, number and count keys: text, or also a native TOML bool, float or int.

    pytest 9's native ``[tool.pytest]`` table hands a key its TOML value and rejects one that is not of the
    registered type: a plain string key refuses ``featviz_threshold = 0.5``. pytest 9.2 takes a union such as
    ``str | float``; ``str`` comes first so that ini files and ``-o`` keep their text, which ``Settings.override``
    checks with its own messages. Earlier pytest takes string keys only (there, quote the value in TOML).
    """
    if pytest.version_tuple[:2] < (9, 2):
        return None, None, None
    return str | bool, str | float, str | int
