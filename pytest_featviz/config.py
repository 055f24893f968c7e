"""Settings: one frozen dataclass of resolved options, with the precedence call > marker > CLI > ini > default.

This module is imported at pytest start-up, so it imports nothing heavy.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_featviz.outcomes import NORMALIZE_MODES, FeatvizError

DEFAULT_GOLDEN_DIR = "golden"
# Chosen by benchmarks/detection.py (table in docs/detection.md): every harmful case caught and no benign alarm
# on resnet18, mobilenet_v3_large and efficientnet_b0, with TF32-level noise at most ~1/2 of each tolerance.
DEFAULT_THRESHOLD = 0.99
DEFAULT_STAT_TOLERANCE = 0.03
DEFAULT_RMS_TOLERANCE = 0.15
# Presets set the three tolerances at once: (threshold, stat_tolerance, rms_tolerance).
PRESETS = {
    "default": (DEFAULT_THRESHOLD, DEFAULT_STAT_TOLERANCE, DEFAULT_RMS_TOLERANCE),
    # Catches 1% weight noise and a 1% norm-scale change on well-conditioned nets; may alarm on TF32 (GPU) noise
    # in the deep layers of chaotic ones. For suites pinned to one CPU environment.
    "strict": (0.995, 0.012, 0.05),
    # Quiet under noise several times TF32's; still catches input, preprocessing and structural changes.
    "tolerant": (0.98, 0.08, 0.3),
}
DEFAULT_CHANNELS = 16
DEFAULT_NORMALIZE = "minmax"
DEFAULT_REPORT_DIR = "featviz-report"

# Settings that a marker or a call may override, with the CLI option and ini key of each.
TUNABLE = (
    "preset",
    "threshold",
    "stat_tolerance",
    "rms_tolerance",
    "channels",
    "normalize",
    "deterministic",
    "noise_floor",
)
GOLDEN_KEYS = ("none", "device")  # featviz_golden_key: one shared golden, or one per device type with fallback
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")

ChannelsSetting = int | tuple[int, ...] | str
# Names a setting in an error as the user wrote it: ``"--featviz-threshold"``, ``"tox.ini: featviz_threshold"``.
SettingNames = Callable[[str], str]


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a snapshot check needs to know besides the model and its input."""

    golden_dir: Path
    update: bool = False
    create: bool = False  # --featviz-create: write missing goldens only (update implies it)
    threshold: float = DEFAULT_THRESHOLD
    stat_tolerance: float = DEFAULT_STAT_TOLERANCE
    rms_tolerance: float = DEFAULT_RMS_TOLERANCE
    channels: ChannelsSetting = DEFAULT_CHANNELS
    channels_from: str = ""  # the setting that gave ``channels`` as the user wrote it; "" for the default
    normalize: str = DEFAULT_NORMALIZE
    report_dir: Path = Path(DEFAULT_REPORT_DIR)
    report_all: bool = False
    deterministic: bool = False  # environment.deterministic_mode around each snapshot call
    noise_floor: bool = True  # fit a layer's tolerances to its TF32 noise when its scores are not clean
    golden_key: str = "none"  # one of GOLDEN_KEYS
    calibrate: bool = False  # --featviz-calibrate: score benign perturbations against the goldens, write nothing

    @property
    def mode(self) -> str:
        """``update``, ``create`` (missing goldens only) or ``check``: what the run does with goldens."""
        return "update" if self.update else "create" if self.create else "check"

    def override(self, values: Mapping[str, Any], source: str | SettingNames) -> Settings:
        """A copy with ``values`` applied; ``None`` values are ignored.

        ``source`` says in errors where the values come from: a word (``"@pytest.mark.featviz"``: "<source>:
        threshold must be ...") or a function naming each setting as the user wrote it (``"--featviz-threshold
        must be ..."``). A ``preset`` sets the three tolerances first; tolerances given at the same level win over it.
        """
        names = source if callable(source) else _prefixed(source)
        unknown = sorted(set(values) - set(TUNABLE))
        if unknown:
            where = "" if callable(source) else f"{source}: "
            raise FeatvizError(f"{where}unknown setting(s) {', '.join(unknown)}; known: {', '.join(TUNABLE)}")
        changes = {key: value for key, value in values.items() if value is not None}
        preset = changes.pop("preset", None)
        if preset is not None:
            if preset not in PRESETS:
                raise FeatvizError(f"{names('preset')} must be one of {', '.join(PRESETS)}; got {preset!r}")
            tolerances = dict(zip(("threshold", "stat_tolerance", "rms_tolerance"), PRESETS[preset], strict=True))
            changes = {**tolerances, **changes}
        checked = {key: _validate(key, value, names(key)) for key, value in changes.items()}
        if "channels" in checked:  # an index list that a layer cannot serve is refused only at capture: named then
            checked["channels_from"] = names("channels")
        return dataclasses.replace(self, **checked)


def _prefixed(source: str) -> SettingNames:
    return lambda key: f"{source}: {key}"


def _validate(key: str, value: Any, name: str) -> Any:
    """``value`` checked and converted for the setting ``key``; errors call the setting ``name``."""
    if key == "threshold":
        number = _number(value, name)
        if not -1.0 <= number <= 1.0:
            raise FeatvizError(f"{name} is an SSIM score and must lie in [-1, 1]; got {value!r}")
        return number
    if key in ("stat_tolerance", "rms_tolerance"):
        number = _number(value, name)
        if number < 0:
            raise FeatvizError(f"{name} must be zero or more; got {value!r}")
        return number
    if key == "normalize":
        if value not in NORMALIZE_MODES:
            raise FeatvizError(f"{name} must be one of {', '.join(NORMALIZE_MODES)}; got {value!r}")
        return value
    if key == "channels":
        return _channels(value, name)
    if key in ("deterministic", "noise_floor"):
        return _flag(value, name)
    raise AssertionError(key)


def _flag(value: Any, name: str) -> bool:
    """An on/off setting: a bool (numpy's too), the integer 0 or 1, or one of the words of :data:`_TRUE` and
    :data:`_FALSE` (what an ini file or the command line gives)."""
    if isinstance(value, bool) or (type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_")):
        return bool(value)
    if not isinstance(value, str) and hasattr(value, "__index__"):
        try:
            whole = operator.index(value)  # 1 and 0 as Python or numpy integers, as the error offers them
        except TypeError:  # a float tensor or an array of one item: the error below names the setting
            whole = None
        if whole in (0, 1):
            return bool(whole)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise FeatvizError(f"{name} must be true or false (or yes/no, on/off, 1/0); got {value!r}")


def _number(value: Any, name: str) -> float:
    try:
        if isinstance(value, bool):  # float(True) is 1.0: a flag given where a number belongs
            raise TypeError(value)
        number = float(value)
    except (TypeError, ValueError):
        raise FeatvizError(f"{name} must be a number; got {value!r}") from None
    if not math.isfinite(number):
        raise FeatvizError(f"{name} must be a finite number; got {value!r}")
    return number


_INTEGER = re.compile(r"[-+]?[0-9]+")  # a whole number as a channel setting's text writes it


def _whole(value: Any) -> int:
    """``value`` as an int when it is a whole number (``4``, ``4.0``, ``"4"``); ``ValueError`` for ``4.7``, a bool,
    and text other than ASCII digits (``int()`` also reads ``"1_6"`` as 16, and other scripts' digits)."""
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(value)
    if isinstance(value, str) and not _INTEGER.fullmatch(value.strip()):
        raise ValueError(value)
    return int(value)


def parse_channels(value: Any, source: str = "channels") -> ChannelsSetting:
    """A channel selection from code or text: ``16``, ``"16"``, ``"all"``, ``"top:16"``, ``[0, 3]`` or ``"0,3"``."""
    return _channels(value, f"{source}: channels")


def _channels(value: Any, name: str) -> ChannelsSetting:
    shown = value.strip() if isinstance(value, str) else value  # as the refusals quote it
    if isinstance(value, str):
        text = value.strip()
        if text == "all":
            return "all"
        if text.startswith("top:"):  # the N channels of highest activation energy (channels.choose_channels)
            top = text[len("top:") :].strip()
            if not _INTEGER.fullmatch(top) or int(top) < 1:
                raise FeatvizError(f"{name} 'top:N' needs a count N of at least 1; got {value!r}")
            return f"top:{int(top)}"
        if "," in text or text.startswith(("[", "(")):
            inner = text
            if text[0] in "[(":  # one pair of brackets, matched: "[0, 3]", "(0, 3)"
                if not text.endswith("]" if text[0] == "[" else ")"):
                    raise FeatvizError(f"{name} has unmatched brackets; got {value!r}")
                inner = text[1:-1]
            parts = [part.strip() for part in inner.split(",")]
            if len(parts) > 1 and not parts[-1]:  # "3," or "[0, 3,]": one trailing comma, as Python writes it
                parts.pop()
            value = [] if parts == [""] else parts
        else:
            value = text
    try:  # _whole takes ASCII digits only: an empty entry ("1,,2"), "1_6" or another script's digits is refused
        if isinstance(value, (bytes, bytearray)):  # a Sequence of ints: b"3" would be channel 51
            raise TypeError(value)
        if hasattr(value, "tolist") and getattr(value, "ndim", None) == 1:  # np.arange(0, 64, 4), a torch tensor
            value = value.tolist()
        if isinstance(value, Sequence) and not isinstance(value, str):
            indices = tuple(_whole(v) for v in value)
            if not indices:
                raise FeatvizError(f"{name} is an empty list: select at least one channel")
            if any(i < 0 for i in indices):
                raise FeatvizError(f"{name} must hold channel indices of zero or more; got {list(indices)}")
            if len(set(indices)) != len(indices):
                raise FeatvizError(f"{name} names a channel twice; got {list(indices)}")
            return indices
        count = _whole(value)
    except (TypeError, ValueError):
        raise FeatvizError(f"{name} must be a count, a list of indices, 'all' or 'top:N'; got {shown!r}") from None
    if count < 1:
        raise FeatvizError(f"{name} must be at least 1; got {count}")
    return count


def from_pytest(config: pytest.Config) -> Settings:
    """Session settings from ini and command line (the command line wins); raises ``pytest.UsageError``."""
    cli, ini = _cli_reader(config), _ini_reader(config)
    base = config.inipath.parent if config.inipath is not None else config.rootpath
    golden_cli, report_cli = cli("golden_dir"), cli("report_dir")
    for key, value in (("golden_dir", golden_cli), ("report_dir", report_cli)):
        if value is not None and not value.strip():
            raise pytest.UsageError(f"{_cli_name(key)} needs a directory; got an empty value")
    if golden_cli is not None:
        golden_dir = Path(config.invocation_params.dir, golden_cli)
    else:
        golden_dir = Path(base, expanded(ini("golden_dir") or DEFAULT_GOLDEN_DIR))
    if report_cli is not None:
        report_dir = Path(config.invocation_params.dir, report_cli)
    else:
        report_dir = Path(base, expanded(ini("report_dir") or DEFAULT_REPORT_DIR))
    golden_dir, report_dir = Path(os.path.normpath(golden_dir)), Path(os.path.normpath(report_dir))
    for role, directory in (("golden", golden_dir), ("report", report_dir)):
        _check_directory(role, directory)
    real_golden, real_report = golden_dir.resolve(), report_dir.resolve()  # through symlinks too
    if real_golden == real_report or real_golden in real_report.parents or real_report in real_golden.parents:
        raise pytest.UsageError(
            f"the featviz report directory {report_dir} and the golden directory {golden_dir} overlap: the report's"
            " files would mix with the committed goldens, and each run clears the report; give them separate"
            " directories (--featviz-report-dir, --featviz-golden-dir)"
        )
    html = config.getoption("htmlpath", None)  # pytest-html's report, when that plugin is installed
    if html and Path(config.invocation_params.dir, html).resolve() == real_report / "index.html":
        raise pytest.UsageError(
            f"pytest-html's --html={html} is the featviz report's index.html in {report_dir}: one would overwrite the"
            " other; give pytest-html another file name or featviz another --featviz-report-dir"
        )
    settings = Settings(
        golden_dir=golden_dir,
        update=bool(config.getoption("featviz_update")),
        create=bool(config.getoption("featviz_create")),
        report_dir=report_dir,
        report_all=bool(config.getoption("featviz_report_all")),
    )
    golden_key = (ini("golden_key") or "none").strip()
    if golden_key not in GOLDEN_KEYS:
        raise pytest.UsageError(
            f"{_ini_names(config)('golden_key')} must be one of {', '.join(GOLDEN_KEYS)}; got {golden_key!r}"
        )
    calibrate = bool(config.getoption("featviz_calibrate"))
    if calibrate and (settings.update or settings.create):
        flag = "--featviz-update" if settings.update else "--featviz-create"
        raise pytest.UsageError(
            f"--featviz-calibrate never writes goldens: run it without {flag}"
            f" ({flag.removeprefix('--featviz-')} first, then calibrate)"
        )
    settings = dataclasses.replace(settings, golden_key=golden_key, calibrate=calibrate)
    try:
        settings = settings.override({key: ini(key) for key in TUNABLE}, _ini_names(config))
        # an option given with an empty value (--featviz-threshold=) is checked like any other, and refused
        settings = settings.override({key: cli(key) for key in TUNABLE}, _cli_name)
    except FeatvizError as exc:
        raise pytest.UsageError(str(exc)) from None
    return settings


def _check_directory(role: str, directory: Path) -> None:
    """Stop the run with a usage error when ``directory`` cannot be the featviz ``role`` (golden, report) directory:
    it, or a folder above it, is a file or a symbolic link that leads nowhere, or the OS refuses to look (a name too
    long for the file system, a folder above it that cannot be read). Each test would fail the same way, or the
    run would end with an INTERNALERROR."""
    elsewhere = f"--featviz-{role}-dir / ini featviz_{role}_dir"
    try:
        broken = _broken_link(directory)
        existing = next((path for path in (directory, *directory.parents) if path.exists()), None)
    except OSError as error:
        raise pytest.UsageError(
            f"the featviz {role} directory {directory} cannot be used: {error.strerror or error}; point {elsewhere}"
            " elsewhere"
        ) from None
    if broken:  # every golden would read as missing, and the update the message suggests would fail to write
        raise pytest.UsageError(
            f"the featviz {role} directory {directory}: {broken}; restore what it points at (a checkout or mount the"
            f" files live in), or point {elsewhere} elsewhere"
        )
    if existing is not None and not existing.is_dir():
        what = "the goldens" if role == "golden" else "the report"
        where = "" if existing == directory else f" lies under {existing}, which"
        raise pytest.UsageError(
            f"the featviz {role} directory {directory}{where} is a file: move it away, or keep {what} elsewhere"
            f" ({elsewhere})"
        )


def _broken_link(path: Path) -> str | None:
    """What is wrong when ``path`` or a folder above it is a symbolic link that leads nowhere (its final target
    missing, or a loop); ``None`` otherwise."""
    for candidate in (path, *path.parents):
        if not candidate.is_symlink():
            continue
        try:
            candidate.resolve(strict=True)
        except FileNotFoundError:
            return f"{candidate} is a symbolic link to {os.path.realpath(candidate)}, which does not exist"
        except (OSError, RuntimeError):  # RuntimeError: Python before 3.13 on a loop
            return f"{candidate} is a symbolic link that loops"
    return None


def expanded(path: str) -> str:
    """An ini path with ``~`` and ``$VAR`` expanded, as pytest does for its own ``cache_dir`` (a shell expands them
    on the command line)."""
    return os.path.expandvars(os.path.expanduser(path))


def _cli_reader(config: pytest.Config) -> Callable[[str], Any]:
    """The command-line value of a setting; ``None`` when the option was not given."""
    return lambda key: config.getoption(f"featviz_{key}")


def _ini_reader(config: pytest.Config) -> Callable[[str], Any]:
    """The ini value of a setting; ``None`` when the key is absent or empty (``featviz_threshold =``), as pytest
    treats its own keys, so that ``-o featviz_threshold=`` restores the default."""

    def read(key: str) -> Any:
        try:
            value = config.getini(f"featviz_{key}")
        except TypeError as exc:  # pytest 9.0 and 9.1: a native TOML value for a string key (see options._ini_types)
            raise pytest.UsageError(f"{exc}; quote it in TOML, or use pytest 9.2 or later") from None
        return None if isinstance(value, str) and not value.strip() else value

    return read


def _cli_name(key: str) -> str:
    return f"--featviz-{key.replace('_', '-')}"


def ini_key(override: str) -> str:
    """The ini key of an ``-o key=value`` override."""
    return override.split("=", 1)[0].strip()


def _ini_names(config: pytest.Config) -> SettingNames:
    """Names an ini key as the user wrote it: in the ini file (``tox.ini: featviz_threshold``, as pytest names its
    own keys) or with ``-o`` (``-o featviz_threshold``)."""
    overridden = {ini_key(str(line)) for line in config.getoption("override_ini", None) or ()}

    def name(key: str) -> str:
        ini_key = f"featviz_{key}"
        if ini_key in overridden:
            return f"-o {ini_key}"
        return f"{config.inipath.name}: {ini_key}" if config.inipath is not None else ini_key

    return name
