"""Shared fixtures of the project's own tests: tiny seeded models and inputs, and a pytester set-up."""

from __future__ import annotations

import os
import subprocess
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


@pytest.fixture(scope="session")
def without_root_powers() -> list[str]:
    """The command prefix under which file permissions hold for a child process: none for a user; for root (CI runs
    as root), ``setpriv`` without the capabilities that let root read, write and delete anything. Skips the test
    when neither works."""
    if os.geteuid() != 0:
        return []
    dropped = "-dac_override,-dac_read_search,-fowner"
    prefix = ["setpriv", f"--bounding-set={dropped}", f"--inh-caps={dropped}"]
    try:
        subprocess.run([*prefix, "true"], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("running as root, and setpriv cannot drop the capabilities that ignore file permissions")
    return prefix
