"""Integration tests: real pytest runs through pytester, and what they share."""

from __future__ import annotations

from importlib.util import find_spec

import pytest

# The ``subtests`` fixture is pytest's own from pytest 9, the pytest-subtests plugin's before it.
needs_subtests = pytest.mark.skipif(
    find_spec("_pytest.subtests") is None and find_spec("pytest_subtests") is None,
    reason="subtests need pytest 9 or the pytest-subtests plugin",
)
