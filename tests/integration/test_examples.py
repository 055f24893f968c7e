"""The example suites in ``examples/`` pass against the goldens committed under ``golden/examples/``, and the demo's
deliberate bug (``FEATVIZ_DEMO_BREAK=1``) is caught. Runs in a copy, so nothing is written into the repository.

The runs are subprocesses: in-process pytester runs drop the modules a run imported, and torchvision, scikit-image
and their extensions do not survive being imported a second time in one process.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

# Imported before any pytester fixture exists: pytester drops the modules first imported while it is alive, and
# numpy / torch cannot be imported a second time in one process (the outer session's featviz plugin needs them).
torchvision = pytest.importorskip("torchvision", reason="the examples need torchvision (the examples or dev extra)")
import pytest_featviz.goldenpicture  # noqa: E402, F401

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def examples(featviz_pytester: pytest.Pytester) -> pytest.Pytester:
    shutil.copytree(ROOT / "examples", featviz_pytester.path / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "golden" / "examples", featviz_pytester.path / "golden" / "examples")
    return featviz_pytester


def golden_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted((root / "golden").rglob("*")) if p.is_file()}


def test_examples_pass_against_committed_goldens(examples: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEATVIZ_DEMO_BREAK", raising=False)
    before = golden_files(examples.path)
    result = examples.runpytest_subprocess("examples")
    result.assert_outcomes(passed=7)
    result.stdout.fnmatch_lines(["*9 snapshot(s) checked: 9 matched, 0 drifted*"])
    assert golden_files(examples.path) == before


def test_demo_break_is_caught(examples: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEATVIZ_DEMO_BREAK", "1")
    before = golden_files(examples.path)
    result = examples.runpytest_subprocess("examples/test_classifier.py::test_resnet18_stages[astronaut]")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*FeatureDriftError: feature drift in snapshot '0' of *test_resnet18_stages[[]astronaut[]]*",
            "*drift starts at layer 'relu' (first drifted layer in forward order)*",
        ]
    )
    assert golden_files(examples.path) == before


def test_layer1_blocks_golden_holds_the_blocks_of_layer1() -> None:
    # "layer1.?" selects layer1's two blocks; "layer1.*" would take every descendant (fnmatch's * crosses dots).
    snapshot = ROOT / "golden/examples/test_classifier/test_resnet18_blocks/layer1-blocks"
    assert sorted(p.name for p in snapshot.iterdir()) == ["layer1.0.png", "layer1.1.png", "snapshot.json"]
