"""Shared fixtures of the project's own tests: tiny seeded models and inputs, and a pytester set-up."""

from __future__ import annotations

import sys

import pytest

pytest_plugins = ["pytester"]


@pytest.fixture
def featviz_pytester(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester whose runs load pytest-featviz and nothing from the outer session's ini or CI environment.

    Under ``CI`` pytest prints whole failure messages in its short summary (so every message shows twice), and a
    ``GITHUB_STEP_SUMMARY`` of the outer job would receive the inner runs' tables; tests that want either set it.

    No bytecode is cached: a test that rewrites a module with one of the same size within the same second (a seed
    changed from 0 to 5) ran the old one from ``__pycache__``, whose check is the source's size and whole-second
    mtime, and failed now and then where ``PYTHONDONTWRITEBYTECODE`` was not set.
    """
    for name in ("CI", "BUILD_NUMBER", "GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # imports in the runs in this process
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")  # runs in a subprocess
    pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\n")
    return pytester
