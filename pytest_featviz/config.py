"""Settings: one frozen dataclass of resolved options, with the precedence call > marker > CLI > ini > default.

This module is imported at pytest start-up, so it imports nothing heavy.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_featviz.records import NORMALIZE_MODES, FeatvizError

DEFAULT_GOLDEN_DIR = "golden"
DEFAULT_THRESHOLD = 0.98
DEFAULT_STAT_TOLERANCE = 0.05
DEFAULT_RMS_TOLERANCE = 0.03
DEFAULT_CHANNELS = 16
DEFAULT_NORMALIZE = "minmax"

# Settings that a marker or a call may override, with the CLI option and ini key of each.
TUNABLE = ("threshold", "stat_tolerance", "rms_tolerance", "channels", "normalize")

ChannelsSetting = int | tuple[int, ...] | str


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a snapshot check needs to know besides the model and its input."""

    golden_dir: Path
    update: bool = False
    threshold: float = DEFAULT_THRESHOLD
    stat_tolerance: float = DEFAULT_STAT_TOLERANCE
    rms_tolerance: float = DEFAULT_RMS_TOLERANCE
    channels: ChannelsSetting = DEFAULT_CHANNELS
    normalize: str = DEFAULT_NORMALIZE

    def override(self, values: Mapping[str, Any], source: str) -> Settings:
        """A copy with ``values`` (from ``source``, named in errors) applied; ``None`` values are ignored."""
        unknown = sorted(set(values) - set(TUNABLE))
        if unknown:
            raise FeatvizError(f"{source}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(TUNABLE)}")
        changes = {key: value for key, value in values.items() if value is not None}
        checked = {key: _validate(key, value, source) for key, value in changes.items()}
        return dataclasses.replace(self, **checked)


def _validate(key: str, value: Any, source: str) -> Any:
    if key == "threshold":
        number = _number(value, key, source)
        if not -1.0 <= number <= 1.0:
            raise FeatvizError(f"{source}: threshold is an SSIM score and must lie in [-1, 1]; got {value!r}")
        return number
    if key in ("stat_tolerance", "rms_tolerance"):
        number = _number(value, key, source)
        if number < 0:
            raise FeatvizError(f"{source}: {key} must be zero or more; got {value!r}")
        return number
    if key == "normalize":
        if value not in NORMALIZE_MODES:
            raise FeatvizError(f"{source}: normalize must be one of {', '.join(NORMALIZE_MODES)}; got {value!r}")
        return value
    if key == "channels":
        return parse_channels(value, source)
    raise AssertionError(key)


def _number(value: Any, key: str, source: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise FeatvizError(f"{source}: {key} must be a number; got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(number):
        raise FeatvizError(f"{source}: {key} must be a finite number; got {value!r}")
    return number


def parse_channels(value: Any, source: str = "channels") -> ChannelsSetting:
    """A channel selection from code or text: ``16``, ``"16"``, ``"all"``, ``[0, 3]`` or ``"0,3"``."""
    if isinstance(value, str):
        text = value.strip()
        if text == "all":
            return "all"
        if "," in text or text.startswith(("[", "(")):
            value = [part for part in text.strip("[]()").split(",") if part.strip()]
        else:
            value = text
    try:
        if isinstance(value, Sequence) and not isinstance(value, str):
            indices = tuple(int(v) for v in value)
            if not indices:
                raise FeatvizError(f"{source}: channels is an empty list: select at least one channel")
            if any(i < 0 for i in indices):
                raise FeatvizError(f"{source}: channel indices must be zero or more; got {list(indices)}")
            return indices
        if isinstance(value, bool):
            raise ValueError
        count = int(value)
    except (TypeError, ValueError):
        raise FeatvizError(f"{source}: channels must be a count, a list of indices or 'all'; got {value!r}") from None
    if count < 1:
        raise FeatvizError(f"{source}: channels must be at least 1; got {count}")
    return count


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
        "--featviz-golden-dir",
        metavar="DIR",
        default=None,
        help=f"directory of golden snapshots, relative to the invocation directory (ini: featviz_golden_dir,"
        f" relative to the rootdir; default: {DEFAULT_GOLDEN_DIR}/).",
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
        help="largest change of a channel's mean/std/min/max, in units of its golden std"
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
        metavar="N|all|I,J",
        default=None,
        help=f"channels per layer: the first N, 'all', or indices (ini: featviz_channels; default {DEFAULT_CHANNELS}).",
    )
    group.addoption(
        "--featviz-normalize",
        choices=NORMALIZE_MODES,
        default=None,
        help=f"how channel values become grey levels (ini: featviz_normalize; default {DEFAULT_NORMALIZE}).",
    )
    parser.addini("featviz_golden_dir", "directory of golden snapshots, relative to the rootdir", default=None)
    parser.addini("featviz_threshold", "lowest per-channel SSIM that still matches", default=None)
    parser.addini("featviz_stat_tolerance", "largest channel statistic change, in golden std units", default=None)
    parser.addini("featviz_rms_tolerance", "largest RMS picture difference, in golden spread units", default=None)
    parser.addini("featviz_channels", "channels per layer: N, 'all' or indices", default=None)
    parser.addini("featviz_normalize", f"normalization: {', '.join(NORMALIZE_MODES)}", default=None)


def from_pytest(config: pytest.Config) -> Settings:
    """Session settings from ini and command line (the command line wins); raises ``pytest.UsageError``."""
    golden_cli = config.getoption("featviz_golden_dir")
    golden_ini = config.getini("featviz_golden_dir")
    if golden_cli:
        golden_dir = Path(config.invocation_params.dir, golden_cli)
    else:
        base = config.inipath.parent if config.inipath is not None else config.rootpath
        golden_dir = Path(base, golden_ini or DEFAULT_GOLDEN_DIR)
    settings = Settings(golden_dir=golden_dir, update=bool(config.getoption("featviz_update")))
    try:
        for source, read in (("ini", lambda k: config.getini(f"featviz_{k}")), ("CLI", _cli_reader(config))):
            settings = settings.override({key: read(key) or None for key in TUNABLE}, f"featviz {source}")
    except FeatvizError as exc:
        raise pytest.UsageError(str(exc)) from None
    return settings


def _cli_reader(config: pytest.Config) -> Any:
    return lambda key: config.getoption(f"featviz_{key}")
