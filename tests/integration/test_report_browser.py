"""index.html in a real browser (headless Chromium): every image loads from the file system and the filter box
hides the tests that do not match."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch  # noqa: F401  # loaded once here: in-process runs cannot import numpy twice

from integration.test_report import TEST_FILE

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; .ci/run installs it)"
)


def _dump_dom(page: Path, fragment: str, profile: Path) -> str:
    assert CHROMIUM is not None
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
        "--dump-dom", page.as_uri() + fragment,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


def test_index_loads_every_image_and_filters(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    featviz_pytester.makepyfile(test_models=TEST_FILE)
    featviz_pytester.runpytest("--featviz-update", "-k", "plain or stable").assert_outcomes(passed=2, deselected=1)
    monkeypatch.setenv("FEATVIZ_TEST_DRIFT", "1")
    featviz_pytester.runpytest().assert_outcomes(passed=1, failed=2)  # [plain] drifted, [a<b>&c] missing
    page = featviz_pytester.path / "featviz-report" / "index.html"

    dom = _dump_dom(page, "", tmp_path / "profile")
    body = re.search(r"<body([^>]*)>", dom)
    assert body is not None, dom[:500]
    total = re.search(r'data-images-total="(\d+)"', body.group(1))
    loaded = re.search(r'data-images-loaded="(\d+)"', body.group(1))
    assert total is not None and loaded is not None, body.group(1)
    # [plain]: one diff mosaic; the missing [a<b>&c]: the current render of its two layers
    assert int(total.group(1)) == 3 and loaded.group(1) == total.group(1), body.group(1)
    sections = re.findall(r'<section class="test \w+" data-test="([^"]*)"( hidden="")?', dom)
    assert [hidden for _, hidden in sections] == ["", ""]

    filtered = _dump_dom(page, "#filter=PLAIN", tmp_path / "profile")
    sections = re.findall(r'<section class="test \w+" data-test="([^"]*)"( hidden="")?', filtered)
    assert sorted((name, bool(hidden)) for name, hidden in sections) == [
        ("test_models.py::test_net[a&lt;b&gt;&amp;c]", True),
        ("test_models.py::test_net[plain]", False),
    ]
