"""Which test a golden belongs to, for stale detection (:mod:`pytest_featviz.stale`): a test directory's name
matched to a test and the variants parametrize and pytest-repeat make of it (:func:`owns`), tests pytest did not
collect although their module or class holds them (:func:`left_out`), and the goldens a symbolic link in the golden
directory stands for under another name (:func:`link_targets`). Imports only the standard library and pytest at
start-up; the golden naming rules are imported when first used.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from pytest_featviz.orphans import key


def owns(test: str, directory: str) -> bool:
    """Whether test ``test`` (its name as pytest gives it) is the test whose goldens are in the test directory named
    ``directory``, or a variant of it that parametrize or pytest-repeat made: ``test_a[x]`` of ``test_a``,
    ``test_q[u-1-2]`` of ``test_q[u]`` (never ``test_q[U]`` of ``test_q[u]``: a rename in letter case leaves the
    old golden stale), and a skipped ``test_p[NOTSET]`` (parametrized with an empty list) of every ``test_p[...]``.
    Compared through ``sanitize_name``, so that names it changed (``test_café``) match too."""
    return Owners({test: [test]}).of(directory) == [test]


class Owners:
    """:func:`owns` for every test of a file at once: which tests own a test directory, found by one lookup per
    directory instead of one comparison per test (a file of thousands of parametrized tests made stale detection
    quadratic). Built from ``tests``: test name -> the node ids to return for it."""

    def __init__(self, tests: dict[str, list[str]]) -> None:
        from pytest_featviz.goldenpath import DIGEST_LENGTH, MAX_NAME_LENGTH, UNSAFE, sanitize_name

        self._by_directory: dict[str, list[str]] = {}
        self._any_parameters: list[tuple[str, str, list[str]]] = []  # (base's directory, prefix, ids) of NOTSET
        for test, ids in tests.items():
            base, bracket, rest = test.partition("[")
            parameters = rest[:-1] if rest.endswith("]") else rest
            if bracket and "NOTSET" in parameters:
                # any parameter set of ``base``: its directory starts with base's characters made safe, as far as a
                # name sanitizing changed or cut keeps them (it ends in a digest of the whole name)
                head = (UNSAFE.sub("_", base) + "[")[: MAX_NAME_LENGTH - DIGEST_LENGTH - 1]
                self._any_parameters.append((sanitize_name(base), head, ids))
                continue
            parts = parameters.split("-") if bracket else []
            owners = [test, base] + [f"{base}[{'-'.join(parts[:count])}]" for count in range(1, len(parts))]
            for directory in dict.fromkeys(sanitize_name(owner) for owner in owners):
                self._by_directory.setdefault(directory, []).extend(ids)

    def of(self, directory: str) -> list[str]:
        """The node ids of the tests that own the test directory named ``directory``."""
        found = list(self._by_directory.get(directory, ()))
        for exact, head, ids in self._any_parameters:
            if directory == exact or directory.startswith(head):
                found.extend(ids)
        return found


def empty_parameters(item: pytest.Item) -> bool:
    """Whether ``item`` stands for a test parametrized with an empty list (pytest skips it): every parameter set the
    test had before is its. Told by the parameter values, which pytest's id does not name alike in every version."""
    params = getattr(getattr(item, "callspec", None), "params", None) or {}
    return any(type(value).__name__ == "NotSetType" for value in params.values())


def left_out(collector: pytest.Collector, collected: Iterable[Any]) -> bool:
    """Whether a test module or class holds a test pytest did not collect: a callable its ``python_functions`` or
    ``python_classes`` pattern matches, not marked ``__test__ = False``, with no node (a decorator object that is no
    function, the methods of a class with ``__init__``), whether or not pytest's warning about it is filtered. Its
    goldens may be that test's."""
    names = {getattr(node, "originalname", None) or str(node.name).split("[", 1)[0] for node in collected}
    namespace = getattr(getattr(collector, "obj", None), "__dict__", {})
    function_name = getattr(collector, "funcnamefilter", None)
    class_name = getattr(collector, "classnamefilter", None)
    for name, value in list(namespace.items()):
        if name in names or not callable(value) or getattr(value, "__test__", True) is False:
            continue
        matches = class_name if isinstance(value, type) else function_name
        if matches is not None and matches(name):
            return True
    return False


def link_targets(golden_root: Path) -> list[str]:
    """Where the symbolic links to directories inside the golden directory lead (``_key`` of the real paths)."""
    targets = []
    for folder, subfolders, _ in os.walk(golden_root):
        for name in subfolders:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                targets.append(key(os.path.realpath(path)))
    return targets
