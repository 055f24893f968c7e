"""The command that deletes the stale goldens a run lists: ``pytest --featviz-prune`` with what the run's command line
gave the options that decide which test files it collected and which of their tests ran, so that, pasted where the
run ran, it judges the same files and deletes what the section listed. :mod:`pytest_featviz.stale` prints it.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable, Sequence

import pytest

from pytest_featviz.config import ini_key

# pytest's own options that decide which test files a run collects, which of their tests run and whether a collection
# error stops it (then nothing is judged): dest -> (flag, pytest's default). A list default: the flag is given once
# per value; False: it takes none. The prune command repeats what the run's command line gave them.
_COLLECTION: dict[str, tuple[str, object]] = {
    "plugins": ("-p", []),  # a plugin that collects, ignores or drops tests, loaded or disabled (no:name)
    "disable_plugin_autoload": ("--disable-plugin-autoload", False),  # pytest >= 8.4
    "override_ini": ("-o", []),  # only the ini keys in COLLECTING_INI
    "pyargs": ("--pyargs", False),  # the arguments name modules
    "confcutdir": ("--confcutdir", None),  # a conftest may ignore files (collect_ignore) or drop tests
    "noconftest": ("--noconftest", False),
    "ignore": ("--ignore", []),
    "ignore_glob": ("--ignore-glob", []),
    "collect_in_virtualenv": ("--collect-in-virtualenv", False),
    "doctestmodules": ("--doctest-modules", False),  # the directories collected from judge deleted test files
    "doctestglob": ("--doctest-glob", []),
    "doctest_ignore_import_errors": ("--doctest-ignore-import-errors", False),
    "importmode": ("--import-mode", "prepend"),  # two test files of one name import in one mode only
    "continue_on_collection_errors": ("--continue-on-collection-errors", False),
    "strict_markers": ("--strict-markers", False),  # since pytest 9 an -o override, repeated as that
    "strict": ("--strict", False),
    "pythonwarnings": ("-W", []),  # a warning made an error fails a test module's import, or a test
    "maxfail": ("--maxfail", 0),  # -x: the files after the stop did not run
}
_SELECTION: dict[str, tuple[str, object]] = {
    "keyword": ("-k", ""),
    "markexpr": ("-m", ""),
    "deselect": ("--deselect", []),
}
# The options of _COLLECTION by which a run leaves tests out (besides its paths and _SELECTION).
_LEAVING_OUT = frozenset({"ignore", "ignore_glob", "maxfail"})
COLLECTING_INI = frozenset(
    {
        "python_files",
        "python_classes",
        "python_functions",
        "testpaths",
        "norecursedirs",
        "collect_imported_tests",
        "consider_namespace_packages",
        "pythonpath",
        "filterwarnings",
        "empty_parameter_set_mark",
        "markers",
        "strict",
        "strict_markers",
        "strict_parametrization_ids",
    }
)
# How arguments spell the options above, to tell the ones addopts gave: the flags that take a value -> dest, and the
# flags that take none -> what they set.
_WITH_VALUE = {
    **{flag: dest for dest, (flag, default) in (_COLLECTION | _SELECTION).items() if default is not False},
    "--pythonwarnings": "pythonwarnings",
    "--override-ini": "override_ini",
}
_WITHOUT_VALUE: dict[str, tuple[tuple[str, str], ...]] = {
    **{flag: ((dest, "True"),) for dest, (flag, default) in _COLLECTION.items() if default is False},
    "-x": (("maxfail", "1"),),
    "--exitfirst": (("maxfail", "1"),),
    "--strict-markers": (("strict_markers", "True"), ("override_ini", "strict_markers=true")),  # pytest 9: both
    "--strict": (("strict", "True"), ("override_ini", "strict=true")),
}


def prune_command(config: pytest.Config, options: Sequence[str], every_test: bool = False) -> str:
    """The command that deletes what a run lists, pasted where the run ran: ``pytest --featviz-prune``, the options
    that locate the goldens (``options``), and the options that decided which test files the run collected and which
    of their tests ran, as its command line gave them (:data:`_COLLECTION`; its paths and node ids, ``-k``, ``-m``,
    ``--deselect``). With ``every_test``, those that leave tests out (:data:`_LEAVING_OUT`: paths, node ids, the
    selection, ``--ignore``, ``-x``) are not repeated: a prune run that leaves tests out keeps the goldens of deleted
    test files. The ini's addopts and ``PYTEST_ADDOPTS`` apply to the pasted command again by themselves; when
    the command line replaced the ini's addopts (``-o addopts=...``), the command does too, with ``-o addopts=``.
    Nothing else of the command line is repeated: an ``@file`` or ``-o addopts=`` could hold ``--featviz-update``
    (their options above are repeated one by one), and ``--junitxml`` would overwrite a report."""
    overrides = [str(entry) for entry in config.getoption("override_ini", None) or ()]
    environment = shlex.split(os.environ.get("PYTEST_ADDOPTS", ""))
    replaced = _keys(overrides).count("addopts") > _keys(_given(environment).get("override_ini", [])).count("addopts")
    # what the pasted command applies by itself: addopts, and ``options`` (which may repeat -p or --import-mode)
    again = _given([*(environment if replaced else [*map(str, config.getini("addopts")), *environment]), *options])
    paths = [str(arg) for arg in config.args] if config.args_source == pytest.Config.ArgsSource.ARGS else []
    collection = {k: v for k, v in _COLLECTION.items() if k not in _LEAVING_OUT} if every_test else _COLLECTION
    return shlex.join(
        [
            "pytest",
            "--featviz-prune",
            *options,
            *(["-o", "addopts="] if replaced else []),
            *_repeated(config, collection, again, _keys(overrides)),
            *([] if every_test else paths),
            *([] if every_test else _repeated(config, _SELECTION, again, [])),
            # a selection that addopts give applies again: an empty one replaces it
            *(
                part
                for dest, flag in (("keyword", "-k"), ("markexpr", "-m"))
                for part in (flag, "")
                if every_test and again.get(dest)
            ),
        ]
    )


def _repeated(
    config: pytest.Config, table: dict[str, tuple[str, object]], again: dict[str, list[str]], overridden: list[str]
) -> list[str]:
    """The options of ``table`` as this run's command line gave them: their parsed values less what ``again`` (the
    addopts a pasted command applies again) gave. A flag that pytest also turned into an ``-o`` override
    (``--strict-markers`` since pytest 9: a key of ``overridden``) is repeated as that override."""
    command: list[str] = []
    for dest, (flag, default) in table.items():
        value = config.getoption(dest, default)
        if isinstance(default, list):
            values = [str(item) for item in value or ()]
            for item in again.get(dest, ()):
                if item in values:  # addopts come first: the first one is theirs
                    values.remove(item)
            if dest == "override_ini":
                values = [entry for entry in values if _keys([entry])[0] in COLLECTING_INI]
            command += [part for item in values for part in _spelled(flag, item)]
        elif default is False:
            if value is True and dest not in again and dest not in overridden:
                command.append(flag)
        elif value is not None and str(value) != (again.get(dest) or [str(default)])[-1]:
            command += ["-x"] if dest == "maxfail" and value == 1 else _spelled(flag, str(value))
    return command


def _given(arguments: Sequence[str]) -> dict[str, list[str]]:
    """What ``arguments`` give the options of :data:`_COLLECTION` and :data:`_SELECTION`, by dest, in order, read as
    argparse reads them (``--ignore x``, ``--ignore=x``, ``-p x``, ``-px``); a flag without value gives ``"True"``."""
    found: dict[str, list[str]] = {}
    rest = iter(arguments)
    for argument in rest:
        if argument == "--":
            break
        for dest, setting in _WITHOUT_VALUE.get(argument, ()):
            found.setdefault(dest, []).append(setting)
        flag, value = argument, None
        if argument in _WITH_VALUE:
            value = next(rest, None)
        elif argument.startswith("--"):  # --ignore=x
            flag, _, value = argument.partition("=")
        elif argument[:2] in _WITH_VALUE:  # -px, -k=x
            flag, value = argument[:2], argument[2:].removeprefix("=")
        if value is not None and flag in _WITH_VALUE:
            found.setdefault(_WITH_VALUE[flag], []).append(value)
    return found


def _keys(overrides: Iterable[str]) -> list[str]:
    """The ini keys of ``-o key=value`` overrides."""
    return [ini_key(entry) for entry in overrides]


def _spelled(flag: str, value: str) -> list[str]:
    """``flag value``, or ``flag=value`` for a value that starts with a dash (argparse would take it for a flag)."""
    return [f"{flag}={value}"] if value.startswith("-") else [flag, value]
