"""pytest wiring: options and ini keys, the ``featviz`` marker, the ``feature_snapshot`` fixture, report hooks.

Everything heavy (torch, numpy, scikit-image, Pillow) is imported inside the fixture, never at pytest start-up.
"""

from __future__ import annotations

import fnmatch
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_featviz.config import Settings, from_pytest, ini_key
from pytest_featviz.options import add_options
from pytest_featviz.outcomes import FeatvizError
from pytest_featviz.session import RESULTS_KEY, SessionTracker, XdistClearing, torch_version

if TYPE_CHECKING:
    from pytest_featviz.fixture import FeatureSnapshot

SETTINGS_KEY = pytest.StashKey[Settings]()
TRACKER_KEY = pytest.StashKey[SessionTracker]()
# The golden folder of each test that took a snapshot in this process -> its test file, test name and node id: two tests
# whose names differ only in Unicode form (a composed and a decomposed accent) are one name to the golden path.
FOLDERS_KEY = pytest.StashKey[dict[Path, tuple[str, str, str]]]()
MARKER_HELP = (
    "featviz(preset=, threshold=, stat_tolerance=, rms_tolerance=, channels=, normalize=, deterministic=,"
    " noise_floor=): feature snapshot settings for this test; a keyword of the feature_snapshot() call wins over"
    " the marker, the marker over CLI and ini."
)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    try:
        config.stash[SETTINGS_KEY] = from_pytest(config)
    except pytest.UsageError:
        if config.getoption("help", False) or config.getoption("markers", False):
            return  # reading about the options and the marker: a bad value of one must not hide what it accepts
        raise
    tracker = SessionTracker(
        config.stash[SETTINGS_KEY],
        html=html_phase(config) if config.getoption("htmlpath", None) else None,
        setup_only=bool(config.getoption("setuponly", False)),
    )
    config.stash[TRACKER_KEY] = tracker
    config.pluginmanager.register(tracker, "featviz-session")
    config.pluginmanager.register(XdistClearing(tracker, config), "featviz-xdist")
    if not judges_stale(config):  # nor imported: its bookkeeping of every item was most of a --collect-only's cost
        if config.getoption("featviz_prune", False) and not hasattr(config, "workerinput"):
            config.pluginmanager.register(PruneNotJudged(config), "featviz-prune-not-judged")
        return
    from pytest_featviz.stale import StaleGoldens

    config.pluginmanager.register(
        StaleGoldens(
            config,
            config.stash[SETTINGS_KEY].golden_dir,
            _test_location,
            lambda module: _module_file(module, config.rootpath),
            keyed=config.stash[SETTINGS_KEY].golden_key == "device",
            options=lambda: _golden_options(config),  # made when a prune command is printed
        ),
        "featviz-stale",
    )


_UNSEEN = "leaves tests out unseen, and an unused golden may be theirs"
# the options under which a run does not judge stale goldens: (option name, flag, why, as the prune note says it)
NOT_JUDGING = (
    ("collectonly", "--collect-only", "runs no test body"),
    ("setupplan", "--setup-plan", "runs no test body"),  # before --setup-only, which it sets too
    ("setuponly", "--setup-only", "runs no test body"),
    ("lf", "--lf", _UNSEEN),
    ("stepwise", "--sw", _UNSEEN),
    ("stepwise_skip", "--sw-skip", _UNSEEN),
    ("stepwise_reset", "--sw-reset", _UNSEEN),
)


def judges_stale(config: pytest.Config) -> bool:
    """Whether this run can tell stale goldens (:mod:`pytest_featviz.stale`): not one that runs no test body
    (``--collect-only``, ``--setup-only``, ``--setup-plan``), nor ``--lf``, which leaves tests out unseen, nor
    ``--sw``, whose tests depend on the last run's failure (no printed command could repeat its selection)."""
    return not any(config.getoption(name, False) for name, _, _ in NOT_JUDGING)


class PruneNotJudged:
    """Says why a ``--featviz-prune`` run that cannot judge stale goldens (:func:`judges_stale`) deleted none: silence
    would read as "nothing stale"."""

    def __init__(self, config: pytest.Config) -> None:
        self.line = next(
            f"--featviz-prune judged no golden: {flag} {why}; prune in a run of every test"
            for name, flag, why in NOT_JUDGING
            if config.getoption(name, False)
        )

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        terminalreporter.write_sep("=", "featviz stale goldens")
        terminalreporter.write_line(self.line)


def html_phase(config: pytest.Config) -> str | None:
    """The test phase whose report carries the pictures of a test's snapshots to pytest-html: the teardown report, the
    last one, from pytest-html 4.2, which shows the extras of all of a test's reports on its row; the call report
    before (it dropped a passed teardown report with its extras), so that snapshots taken in fixture teardowns have
    none there; ``None`` without pytest-html."""
    if not config.pluginmanager.hasplugin("html"):
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        release = tuple(int(part) for part in version("pytest-html").split(".")[:2])
    except (PackageNotFoundError, ValueError):  # a development build: the newest behaviour
        return "teardown"
    return "teardown" if release >= (4, 2) else "call"


# what a report directory holds at its top (report.REPORT_JSON, INDEX_HTML, GITIGNORE, SNAPSHOTS, manifest.MANIFEST;
# named here so that start-up imports neither module)
REPORT_ENTRIES = frozenset({"report.json", "index.html", ".gitignore", "snapshots", ".featviz-manifest"})
GOLDEN_SUFFIXES = (".png", ".json")  # a golden snapshot's pictures and its sidecar (golden.SIDECAR)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """pytest walks neither the report directory nor the golden directory: they hold no tests. An xdist controller
    clears the last report while its workers may still be collecting (pytest 7 failed a collection on a picture it
    had just listed), and walking a golden directory cost pytest about two milliseconds a snapshot on every run.
    Either is walked as usual when it holds anything else (``--featviz-report-dir tests``, a test file or a conftest
    among the goldens), or when a command-line argument (or where pytest runs, the argument by default) lies in it."""
    settings = config.stash.get(SETTINGS_KEY, None)
    if settings is None or collection_path not in (settings.report_dir, settings.golden_dir):
        return None
    inside = (Path(os.path.normpath(Path(config.invocation_params.dir, arg.split("::")[0]))) for arg in config.args)
    if any(path == collection_path or collection_path in path.parents for path in inside):
        return None
    if collection_path == settings.golden_dir:
        return holds_only_goldens(collection_path, config.getini("norecursedirs")) or None
    try:
        entries = {entry.name for entry in os.scandir(collection_path)}
    except OSError:
        return None
    return entries <= REPORT_ENTRIES or None


def holds_only_goldens(directory: Path, skipped: Sequence[str] = ()) -> bool:
    """Whether every file under ``directory`` is a picture or a sidecar (``.png``, ``.json``), or a hidden file
    (``.gitattributes``) other than Python, leaving out the folders pytest does not walk (``skipped``: the
    ``norecursedirs`` patterns), and no folder is a link (whose target may hold tests). Stops at the first other file,
    so that a golden directory that holds the tests costs little. A folder the OS refuses to list holds nothing pytest
    could collect either: walking into it stopped the whole session with a collection error, where only the test
    whose golden lies there should fail."""
    folders = [directory]
    while folders:
        folder = folders.pop()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.is_dir():
                        if entry.is_symlink():
                            return False
                        if not any(fnmatch.fnmatch(entry.name, pattern) for pattern in skipped):
                            folders.append(Path(entry.path))
                    elif not entry.name.lower().endswith(GOLDEN_SUFFIXES) and (
                        not entry.name.startswith(".") or entry.name.endswith(".py")
                    ):
                        return False
        except FileNotFoundError:  # a snapshot another run replaced meanwhile: nothing of it to collect
            if folder == directory:
                return False
        except OSError:  # unreadable (a folder of goldens another user wrote under umask 077): nothing to collect
            continue
    return True


def _channels_shown(channels: int | tuple[int, ...] | str) -> str:
    """A channel setting as ``--featviz-channels`` takes it: ``16``, ``0,3,7``, ``3,`` (one index, not a count),
    ``all``, ``top:8``."""
    if isinstance(channels, tuple):
        return ",".join(map(str, channels)) + ("," if len(channels) == 1 else "")
    return str(channels)


def pytest_report_header(config: pytest.Config) -> list[str]:
    settings = config.stash[SETTINGS_KEY]
    installed = torch_version()
    mode = {"update": "update (goldens are written)", "create": "create (missing goldens are written)"}.get(
        settings.mode, settings.mode
    )
    lines = [
        f"featviz: torch {installed}, mode {mode}, golden dir {settings.golden_dir},"
        f" threshold {settings.threshold:g}, stat tolerance {settings.stat_tolerance:g},"
        f" rms tolerance {settings.rms_tolerance:g}, channels {_channels_shown(settings.channels)},"
        f" normalize {settings.normalize}, noise floor {'on' if settings.noise_floor else 'off'}"
        + (", deterministic" if settings.deterministic else "")
    ]
    torch = sys.modules.get("torch")
    if torch is None:
        lines.append("featviz: determinism flags are read when torch is first imported (not imported yet)")
    else:
        from pytest_featviz.environment import tf32_flags

        # Read through the environment module: torch (>= 2.9) raises on reading a legacy allow_tf32 flag after a
        # conftest set the new fp32_precision switches, which would stop the session before the first test.
        matmul_tf32, cudnn_tf32 = tf32_flags()
        cuda = {"matmul TF32": matmul_tf32, "cuDNN TF32": cudnn_tf32, "cudnn.benchmark": torch.backends.cudnn.benchmark}
        every = {
            "deterministic algorithms": torch.are_deterministic_algorithms_enabled(),
            "threads": torch.get_num_threads(),
        }
        # Said, not probed: "cuDNN TF32 True" on a CPU run read as a source of noise, and torch.cuda.is_available()
        # would initialize CUDA in this process, which breaks a test's fork-started workers that use it.
        lines.append(
            "featviz: CUDA runs only: "
            + ", ".join(f"{key} {value}" for key, value in cuda.items())
            + "; "
            + ", ".join(f"{key} {value}" for key, value in every.items())
        )
    return lines


def _collecting_options(args: Sequence[str]) -> list[str]:
    """The options among the command line ``args`` without which a printed command would not find the test: plugins
    loaded or turned off with ``-p`` (``-p featviz`` itself where autoloading is off), ``--disable-plugin-autoload``,
    ``--import-mode``, ``--doctest-modules``, and ``-o`` for the ini keys that decide what is collected
    (``-o python_functions=check_*``); each as given."""
    from pytest_featviz.prunecommand import COLLECTING_INI

    options: list[str] = []
    taken = iter(args)
    for arg in taken:
        if arg == "--":
            break
        if arg in ("-p", "--import-mode", "-o", "--override-ini"):
            value = next(taken, None)
            if value is not None and (arg not in ("-o", "--override-ini") or ini_key(value) in COLLECTING_INI):
                options += [arg, value]
        elif arg.startswith(("-o", "--override-ini=")):  # joined to its value: -opython_files=..., --override-ini=...
            if ini_key(arg.removeprefix("--override-ini=").removeprefix("-o")) in COLLECTING_INI:
                options.append(arg)
        elif arg in ("--disable-plugin-autoload", "--doctest-modules") or arg.startswith(("-p", "--import-mode=")):
            options.append(arg)  # a flag, or an option joined to its value (-pfeatviz, --import-mode=importlib)
    return options


# The settings whose command line options a printed create or accept command repeats, besides where the goldens are:
# what a check decides and an update writes. Without them, "accept it with" from a --featviz-normalize=sigmoid run
# compared with the defaults, found the golden unchanged and rewrote nothing, and "create it with" from a
# --featviz-channels=4 run wrote 16 channels, which the same run then called drifted.
CHECK_SETTINGS = (
    "featviz_threshold",
    "featviz_stat_tolerance",
    "featviz_rms_tolerance",
    "featviz_channels",
    "featviz_normalize",
    "featviz_preset",
    "featviz_noise_floor",
    "featviz_deterministic",
)


def _golden_options(config: pytest.Config, check_settings: bool = False) -> list[str]:
    """The command line options that decide where the goldens are, and those without which the test would not be
    found (:func:`_collecting_options`), as given, for the commands a run prints (the command runs where this one
    ran); with ``check_settings``, also those of :data:`CHECK_SETTINGS` and their ``-o`` ini overrides."""
    options = _collecting_options([str(arg) for arg in config.invocation_params.args])
    for option, flag in (("inifilename", "-c"), ("rootdir", "--rootdir")):
        if config.getoption(option, None):
            options += [flag, str(config.getoption(option))]
    for setting in ("featviz_golden_dir", *(CHECK_SETTINGS if check_settings else ())):
        value = config.getoption(setting, None)
        if value is True:  # --featviz-deterministic, a flag
            options.append(f"--{setting.replace('_', '-')}")
        elif value is not None:
            # joined: pytest finds the rootdir and ini file before it knows a plugin's options, and would take a
            # value after a space for a test path (an existing directory outside the project then moves the rootdir)
            options.append(f"--{setting.replace('_', '-')}={value}")
    keys = ("featviz_golden_dir", "featviz_golden_key", *(CHECK_SETTINGS if check_settings else ()))
    overrides = [str(override) for override in config.getoption("override_ini", None) or ()]
    options += [part for override in overrides if ini_key(override) in keys for part in ("-o", override)]
    if check_settings and "addopts" in map(ini_key, overrides):
        # the run replaced the ini's addopts: so does the command, whose settings are those above, one by one (the
        # text of the run's -o addopts=... may hold --featviz-update); without it, the ini's came back, and the
        # golden the command wrote was not the one the run compares with
        options += ["-o", "addopts="]
    return options


def _test_location(node: pytest.Item, repeated: bool = False) -> tuple[str, str]:
    """The test file and test name that name ``node``'s goldens: a run of a repeating plugin is named as the test it
    repeats (:mod:`pytest_featviz.repeats`), unless ``repeated`` (its own name, for its report)."""
    module = node.getparent(pytest.Module)
    if module is None:
        file_part, _, rest = node.nodeid.partition("::")
        return file_part, rest.replace("::", ".") or node.name
    chain = node.listchain()
    below = chain[chain.index(module) + 1 : -1]
    from pytest_featviz.repeats import without_repetition  # on the fixture's path, not at start-up

    last = node.name if repeated else without_repetition(node)
    return _module_file(module, node.config.rootpath), ".".join([*(n.name for n in below), last])


def _module_file(module: pytest.Module, rootdir: Path) -> str:
    """The test file's path for its goldens: its node id, relative to the rootdir. A file outside the rootdir (run
    with ``-c other/pytest.ini``) has a node id relative to whatever the command line named, or none at all, so two
    files could share goldens: its path relative to the rootdir (``../tests/a/test_m.py``) is used instead."""
    try:
        relative = os.path.relpath(module.path, rootdir)
    except ValueError:  # another drive on Windows
        return str(module.path)
    return relative.replace(os.sep, "/") if relative.split(os.sep, 1)[0] == os.pardir else module.nodeid


@pytest.fixture
def feature_snapshot(request: pytest.FixtureRequest) -> FeatureSnapshot:
    """Snapshot the feature maps of a model: ``feature_snapshot(model, inputs, layers=..., channels=...)``.

    Compares them with the goldens under the golden directory and fails the test on drift or a missing golden; with
    ``--featviz-create`` it writes missing goldens and checks the others, with ``--featviz-update`` it also rewrites
    drifted ones. See ``pytest_featviz.fixture.FeatureSnapshot``.
    """
    __tracebackhide__ = True
    from pytest_featviz.fixture import FeatureSnapshot
    from pytest_featviz.snapshot import TestIdentity, update_command

    item = request.node
    assert isinstance(item, pytest.Item)
    settings = request.config.stash[SETTINGS_KEY]
    # by every featviz marker, closest first; each is checked, so a typo in a replaced one shows too
    marked: list[Settings] = []
    for owner, marker in _featviz_markers(item):
        # a replaced marker's error says whose it is: the test's own may be right
        source = "@pytest.mark.featviz" + (f" ({owner}, which a closer one replaces)" if marked else "")
        if marker.args:
            raise FeatvizError(f"{source} takes keyword arguments only, e.g. featviz(threshold=0.95)")
        try:
            marked.append(settings.override(marker.kwargs, source))
        except FeatvizError as error:
            raise error.with_traceback(None) from None  # the message names the setting and the value
    settings = marked[0] if marked else settings  # the closest marker counts, as a whole
    test_file, test_name = _test_location(item)
    from pytest_featviz import goldenpath

    folder = settings.golden_dir.joinpath(*goldenpath.folders_of(test_file, test_name))  # the names only
    claimed = request.config.stash.setdefault(FOLDERS_KEY, {}).setdefault(folder, (test_file, test_name, item.nodeid))
    if claimed[:2] != (test_file, test_name):  # not a repeated run of the same test (pytest-repeat's ids differ)
        shared = folder.relative_to(settings.golden_dir).as_posix()
        raise FeatvizError(
            f"{item.nodeid} has the golden folder of {claimed[2]} ({shared}): their names differ only in Unicode form"
            " (an accent composed in one, decomposed in the other), which golden paths read as one name; rename one"
            " of them"
        )
    command = update_command(
        _node_id_from(item, request.config.invocation_params.dir), _golden_options(request.config, check_settings=True)
    )
    # The sidecar records the test file relative to the snapshot (stale detection): only when both lie inside the
    # rootdir, so that the recorded path is the same on every machine that checks the repository out.
    inside = all(
        Path(os.path.abspath(p)).is_relative_to(os.path.abspath(item.config.rootpath))
        for p in (item.path, settings.golden_dir)
    )
    identity = TestIdentity(
        item.nodeid, test_file, test_name, command, item.path if inside else None, item.config.invocation_params.dir
    )
    results = item.stash.setdefault(RESULTS_KEY, [])
    from pytest_featviz.report import Reporter

    run_name = _test_location(item, repeated=True)[1]
    run = (test_name, run_name) if run_name != test_name else None  # a repeated run's evidence goes apart
    reporter = Reporter(
        settings.report_dir,
        settings.golden_dir,
        settings.report_all,
        run,
        item.config.rootpath,
        item.config.invocation_params.dir,
    )
    return FeatureSnapshot(identity, settings, results.append, reporter)


def _featviz_markers(item: pytest.Item) -> list[tuple[str, pytest.Mark]]:
    """``item``'s ``featviz`` markers, closest first, each with whose it is: a parametrized case's own
    (``pytest.param(..., marks=...)``), then the function's, the class's and the module's. pytest lists a case's
    marks after the function's, so its ``get_closest_marker`` took the function's and dropped the case's without a
    word."""
    callspec = getattr(item, "callspec", None)
    own = [mark for mark in getattr(callspec, "marks", ()) if mark.name == "featviz"]
    markers = [("the parametrized case's", mark) for mark in own]
    for node, mark in item.iter_markers_with_node("featviz"):
        if mark not in own:
            owner = "the test's" if node is item else f"{type(node).__name__.lower()} {node.name}'s"
            markers.append((owner, mark))
    return markers


def _node_id_from(item: pytest.Item, directory: Path) -> str:
    """``item``'s node id as pytest accepts it on a command line run in ``directory``: node ids are relative to the
    rootdir (or, outside it, to the argument that named the file), a command line's paths to where it runs. A run
    of a repeating plugin (``test_a[1-3]``) is named as the test it repeats, which exists
    without the plugin's option."""
    from pytest_featviz.repeats import node_id_without_repetition

    _, separator, rest = node_id_without_repetition(item, item.nodeid).partition("::")
    if not separator:
        return item.nodeid
    try:
        return os.path.relpath(item.path, directory).replace(os.sep, "/") + separator + rest
    except ValueError:  # another drive on Windows
        return str(item.path) + separator + rest
