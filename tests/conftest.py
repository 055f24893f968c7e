"""Shared fixtures of the project's own tests: tiny seeded models and inputs, and a pytester set-up."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]


@pytest.fixture
def featviz_pytester(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester whose runs load pytest-featviz and nothing from the outer session's ini or CI environment.

    Under ``CI`` pytest prints whole failure messages in its short summary (so every message shows twice), and a
    ``GITHUB_STEP_SUMMARY`` of the outer job would receive the inner runs' tables; tests that want either set it.
    """
    for name in ("CI", "BUILD_NUMBER", "GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY"):
        monkeypatch.delenv(name, raising=False)
    pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\n")
    return pytester
