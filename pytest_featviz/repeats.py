"""Repetitions: the runs of one test that a repeating plugin makes share that test's goldens.

pytest-repeat (``--count 3``, ``@pytest.mark.repeat(3)``) and pytest-flakefinder (``--flake-finder``) run a test
several times by parametrizing it with a fixture of their own, so each run has its own name: ``test_a[1-3]``,
``test_p[x-2-3]``, ``test_a[0]``. Each run is the same test on the same model, and must be checked against the same
golden, and the command that updates it must name the test as it exists without the plugin's option. pytest gives no
public way to take one parametrization's part out of an id; these functions take out the part the plugin's own id
function makes, where it makes it, and leave every other name as it is.
"""

from __future__ import annotations

from typing import Any

import pytest

REPEAT_FIXTURE = "__pytest_repeat_step_number"  # pytest-repeat's: 0, 1, ...; id "<step + 1>-<count>", made last
FLAKEFINDER_PREFIX = "__flakefinder_"  # pytest-flakefinder's, one per test function: 0, 1, ...; id "<run>", made first


def _param(callspec: Any, name: str) -> Any:
    try:
        return callspec.getparam(name)
    except (ValueError, KeyError, AttributeError):
        return None


def _repeat_count(item: pytest.Item) -> int | None:
    """How many runs of ``item`` pytest-repeat makes: its ``repeat`` marker's, else its ``--count``'s."""
    marker = item.get_closest_marker("repeat")
    try:
        return int(marker.args[0]) if marker is not None and marker.args else int(item.config.getoption("count"))
    except (ValueError, TypeError):  # an option another plugin owns, or a marker argument that is no number
        return None


def without_repetition(item: pytest.Item) -> str:
    """``item.name`` without the id part of a repeating plugin's parameter (``test_a[1-3]`` -> ``test_a``,
    ``test_p[x-2-3]`` -> ``test_p[x]``, flakefinder's ``test_p[0-x]`` -> ``test_p[x]``, ``test_e[-2-3]`` ->
    ``test_e[]``); any other name unchanged."""
    name = item.name
    callspec = getattr(item, "callspec", None)
    head, bracket, rest = name.partition("[")
    if callspec is None or not bracket or not rest.endswith("]"):
        return name
    ids: str | None = rest[:-1]  # None: no id of the test's own is left, nor its brackets
    step = _param(callspec, REPEAT_FIXTURE)
    count = _repeat_count(item) if isinstance(step, int) else None
    if isinstance(step, int) and count is not None:
        made = f"{step + 1}-{count}"
        if ids == made:
            ids = None
        elif ids is not None and ids.endswith(f"-{made}"):
            ids = ids[: -len(made) - 1]
    keys = [*getattr(callspec, "params", {}), *getattr(callspec, "funcargs", {})]  # funcargs: pytest 7's direct ones
    flake = next((key for key in keys if key.startswith(FLAKEFINDER_PREFIX)), None)
    run = _param(callspec, flake) if flake is not None else None
    if isinstance(run, int) and ids is not None:
        made = str(run)
        if ids == made:
            ids = None
        elif ids.startswith(f"{made}-"):
            ids = ids[len(made) + 1 :]
    return head if ids is None else f"{head}[{ids}]"  # an empty id of the test's own keeps its brackets: test_e[]


def node_id_without_repetition(item: pytest.Item, node_id: str) -> str:
    """``node_id`` (``item``'s, in any form that ends with its name) with :func:`without_repetition`'s name."""
    name = without_repetition(item)
    if name == item.name or not node_id.endswith(item.name):
        return node_id
    return node_id[: len(node_id) - len(item.name)] + name
