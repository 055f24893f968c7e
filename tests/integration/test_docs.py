"""The documentation: the MkDocs site builds with ``--strict`` (every nav page exists, every link resolves, the API
pages render from the docstrings), every option and ini key the plugin registers is documented, and the README's
quickstart is the two ``make`` targets the Makefile has.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_featviz import config

ROOT = Path(__file__).resolve().parents[2]


def test_docs_build_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs", reason="needs the docs extra: pip install -e '.[docs]'")
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    for anchor in ("pytest_featviz.outcomes.FeatureDriftError", "pytest_featviz.records.SnapshotResult"):
        assert f'id="{anchor}"' in api, f"API page lacks {anchor}"
    assert "SnapshotResult" in api and "forward order" in api  # docstring text made it onto the page
    changelog = (site / "changelog" / "index.html").read_text(encoding="utf-8")
    assert "0.1.0" in changelog  # CHANGELOG.md is included, not a stale copy


def test_every_option_and_ini_key_is_documented(featviz_pytester: pytest.Pytester) -> None:
    result = featviz_pytester.runpytest("--help")
    assert result.ret == 0
    text = result.stdout.str()
    options = set(re.findall(r"--featviz-[a-z-]+[a-z]", text))
    ini_keys = set(re.findall(r"^\s+(featviz_[a-z_]+) \(", text, flags=re.MULTILINE))
    assert "--featviz-update" in options and "featviz_threshold" in ini_keys
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    undocumented = sorted(name for name in options | ini_keys if f"`{name}" not in page)
    assert not undocumented, f"docs/configuration.md does not document {undocumented}"
    rows = {
        "featviz_threshold": config.DEFAULT_THRESHOLD,
        "featviz_stat_tolerance": config.DEFAULT_STAT_TOLERANCE,
        "featviz_rms_tolerance": config.DEFAULT_RMS_TOLERANCE,
        "featviz_channels": config.DEFAULT_CHANNELS,
    }
    for ini_key, default in rows.items():
        row = next(line for line in page.splitlines() if f"| `{ini_key}` |" in line)
        assert row.endswith(f"| `{default:g}` |"), f"docs/configuration.md gives a stale default for {ini_key}: {row}"


def test_readme_quickstart_is_make_demo_and_make_test() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```console\n(.*?)```", section, flags=re.DOTALL)
    assert block is not None, "the Quickstart section has no console block"
    assert block.group(1).split("\n")[:-1] == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for target in ("demo", "test", "docs"):
        assert re.search(rf"^{target}: \$\(STAMP\)", makefile, flags=re.MULTILINE), f"Makefile lacks `{target}`"
