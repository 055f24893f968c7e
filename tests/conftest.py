"""Shared fixtures of the project's own tests: tiny seeded models and inputs, and a pytester set-up."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]


@pytest.fixture
def featviz_pytester(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester whose runs load pytest-featviz and nothing from the outer session's ini."""
    pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\n")
    return pytester
