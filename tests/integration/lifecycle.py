"""The golden lifecycle walked through real pytest runs, as one helper that every feature's tests reuse.

:class:`Lifecycle` drives a pytester directory through the seven steps a user meets, asserting at each step what
the user would see (outcomes, messages, summary counts, files written or not, bytes and mtimes):

1. ``missing``: check mode without goldens -> every test fails with the exact ``pytest --featviz-update <nodeid>``
   command, and nothing at all is written under the golden directory;
2. ``create``: ``--featviz-update`` -> every test passes, goldens appear, the summary counts them as created;
3. ``recheck``: check mode -> passes, golden files untouched;
4. ``update_unchanged``: a second ``--featviz-update`` -> passes, every golden file keeps its bytes and mtime, and
   the summary counts every snapshot as unchanged;
5. ``drift``: the test module is replaced by ``changed_source`` -> the drifting tests fail with
   ``FeatureDriftError`` and "drift starts at layer ...", goldens untouched;
6. ``accept``: ``--featviz-update`` -> passes, the summary counts the drifted snapshots as updated;
7. ``final_check``: check mode -> passes.

``run_lifecycle(pytester, test_source, changed_source)`` walks them all; a test that needs to look between steps
builds a :class:`Lifecycle` and calls the steps itself. Extra arguments (``args=["-n", "2"]``) go to every run.

Usage from another test module (``tests/integration`` is a package, ``tests/`` is on ``sys.path``)::

    from integration.lifecycle import run_lifecycle

    def test_my_feature_lifecycle(featviz_pytester):
        run_lifecycle(featviz_pytester, SOURCE, SOURCE.replace("nn.ReLU()", "nn.GELU()"), drift_layer="2")

Test sources should import torch inside the test functions when run under xdist: a worker that gets no test then
does not pay for importing torch.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# In-process pytester runs restore ``sys.modules`` after each run; torch cannot be imported a second time in one
# process, so it (and the fixture's heavy path) must be imported here, before any run. So must torch._dynamo, which
# torch.manual_seed and --featviz-deterministic's torch.use_deterministic_algorithms import lazily, inductor with it:
# a second import registers inductor's operators again and fails.
import torch  # noqa: F401
import torch._dynamo  # noqa: F401

import pytest_featviz.snapshot  # noqa: F401

# A fixed old mtime given to every golden file after it is created: a rewrite shows as a new mtime even on file
# systems with coarse timestamps, and even when the rewrite happens in the same second.
PINNED_MTIME_NS = 1_000_000_000 * 1_000_000_000

FileState = dict[str, tuple[bytes, int]]


@dataclass
class Lifecycle:
    """The lifecycle of one test module; see the module docstring for the steps.

    ``tests`` is the number of test functions in the module, ``snapshots`` the number of snapshots they take in all
    (default: one per test). ``drifting_tests`` / ``drifting_snapshots`` say how many of them ``changed_source``
    makes drift (default: all). ``drift_layer``, when given, is the layer the drift message must name as where the
    drift starts.
    """

    pytester: pytest.Pytester
    test_source: str
    changed_source: str
    args: tuple[str, ...] = ()
    module: str = "test_subject"
    golden_dir: str = "golden"
    tests: int = 1
    snapshots: int | None = None
    drifting_tests: int | None = None
    drifting_snapshots: int | None = None
    drift_layer: str | None = None
    runs: dict[str, pytest.RunResult] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.pytester.makepyfile(**{self.module: self.test_source})

    @property
    def total_snapshots(self) -> int:
        return self.snapshots if self.snapshots is not None else self.tests

    @property
    def golden_root(self) -> Path:
        return self.pytester.path / self.golden_dir

    def run(self, step: str, *args: str) -> pytest.RunResult:
        """One pytest run of the module (with the lifecycle's ``args``), kept under ``runs[step]``."""
        result = self.pytester.runpytest(*self.args, *args)
        self.runs[step] = result
        return result

    def golden_files(self) -> FileState:
        """Every file under the golden directory (relative path -> bytes, mtime in ns)."""
        if not self.golden_root.exists():
            return {}
        return {
            path.relative_to(self.golden_root).as_posix(): (path.read_bytes(), path.stat().st_mtime_ns)
            for path in sorted(self.golden_root.rglob("*"))
            if path.is_file()
        }

    def node_ids(self) -> list[str]:
        result = self.pytester.runpytest("--collect-only", "-q", "-p", "no:featviz")
        ids = [line for line in result.outlines if line.startswith(f"{self.module}.py::")]
        assert len(ids) == self.tests, f"expected {self.tests} test(s) in {self.module}.py, collected {ids}"
        return ids

    def _summary(self, result: pytest.RunResult, created: int, updated: int, unchanged: int) -> None:
        result.stdout.fnmatch_lines([f"goldens: {created} created, {updated} updated, {unchanged} unchanged (in *"])

    def missing(self) -> pytest.RunResult:
        """Check mode without goldens: every test fails with its update command; nothing is written."""
        result = self.run("missing")
        result.assert_outcomes(failed=self.tests)
        output = result.stdout.str()
        for node_id in self.node_ids():
            command = shlex.join(["pytest", "--featviz-create", node_id])
            assert f"create it with:  {command}\n" in output + "\n", output
        assert "GoldenMissingError" in output
        assert not self.golden_root.exists(), f"check mode wrote {sorted(self.golden_files())}"
        return result

    def create(self) -> pytest.RunResult:
        """``--featviz-update`` creates every golden (PNG + JSON only) and passes."""
        result = self.run("create", "--featviz-update")
        result.assert_outcomes(passed=self.tests)
        self._summary(result, self.total_snapshots, 0, 0)
        files = self.golden_files()
        sidecars = [name for name in files if name.endswith("/snapshot.json")]
        assert len(sidecars) == self.total_snapshots, sorted(files)
        assert all(name.endswith((".png", ".json")) for name in files), sorted(files)
        for name in files:
            os.utime(self.golden_root / name, ns=(PINNED_MTIME_NS, PINNED_MTIME_NS))
        return result

    def _assert_untouched(self, before: FileState, step: str) -> None:
        after = self.golden_files()
        assert sorted(after) == sorted(before), f"{step} changed the set of golden files"
        for name, (data, mtime) in before.items():
            assert after[name][0] == data, f"{step} changed the bytes of {name}"
            assert after[name][1] == mtime, f"{step} touched {name} (mtime changed)"

    def recheck(self, step: str = "recheck") -> pytest.RunResult:
        """Check mode with matching goldens: passes and leaves every golden file alone."""
        before = self.golden_files()
        result = self.run(step)
        result.assert_outcomes(passed=self.tests)
        result.stdout.fnmatch_lines([f"{self.total_snapshots} snapshot(s) checked: {self.total_snapshots} matched, *"])
        self._assert_untouched(before, step)
        return result

    def update_unchanged(self) -> pytest.RunResult:
        """A second ``--featviz-update``: passes, every golden keeps its bytes and mtime, all counted unchanged."""
        before = self.golden_files()
        result = self.run("update_unchanged", "--featviz-update")
        result.assert_outcomes(passed=self.tests)
        self._summary(result, 0, 0, self.total_snapshots)
        self._assert_untouched(before, "a second --featviz-update")
        return result

    def drift(self) -> pytest.RunResult:
        """The changed module drifts: FeatureDriftError naming where the drift starts; goldens untouched."""
        failing = self.drifting_tests if self.drifting_tests is not None else self.tests
        before = self.golden_files()
        self.pytester.makepyfile(**{self.module: self.changed_source})
        result = self.run("drift")
        result.assert_outcomes(failed=failing, passed=self.tests - failing)
        output = result.stdout.str()
        # Counted in the tracebacks' "E" lines: the short summary repeats messages (whole ones under CI).
        raised = re.findall(r"^E +\S*FeatureDriftError: feature drift in snapshot", output, re.MULTILINE)
        assert len(raised) == failing, output
        starts = re.findall(r"^E +drift starts at layer '([^']*)'", output, re.MULTILINE)
        assert len(starts) == failing, output
        if self.drift_layer is not None:
            assert set(starts) == {self.drift_layer}, f"drift starts at {starts}, expected {self.drift_layer!r}"
        assert "if the change is intended, accept it with:  pytest --featviz-update " in output
        self._assert_untouched(before, "a check run with drift")
        return result

    def accept(self) -> pytest.RunResult:
        """``--featviz-update`` after the change rewrites the drifted goldens and passes."""
        drifted = self.drifting_snapshots
        if drifted is None:
            drifted = self.drifting_tests if self.drifting_tests is not None else self.total_snapshots
        before = self.golden_files()
        result = self.run("accept", "--featviz-update")
        result.assert_outcomes(passed=self.tests)
        self._summary(result, 0, drifted, self.total_snapshots - drifted)
        assert self.golden_files() != before, "--featviz-update after a drift did not rewrite any golden"
        return result

    def walk(self, rechecks: bool = True) -> Lifecycle:
        """All seven steps, in order; ``rechecks=False`` leaves out the two plain check runs (steps 3 and 7), for
        variants such as ``-n 2`` where every run costs worker start-ups and those two steps add nothing new."""
        self.missing()
        self.create()
        if rechecks:
            self.recheck()
        self.update_unchanged()
        self.drift()
        self.accept()
        if rechecks:
            self.recheck("final_check")
        return self


def run_lifecycle(
    pytester: pytest.Pytester,
    test_source: str,
    changed_source: str,
    *,
    args: tuple[str, ...] | list[str] = (),
    tests: int = 1,
    snapshots: int | None = None,
    drifting_tests: int | None = None,
    drifting_snapshots: int | None = None,
    drift_layer: str | None = None,
    rechecks: bool = True,
) -> Lifecycle:
    """Walk the whole golden lifecycle of ``test_source`` (changed to ``changed_source`` at step 5); see
    :class:`Lifecycle`. Returns the lifecycle, whose ``runs`` hold each step's ``RunResult``."""
    return Lifecycle(
        pytester,
        test_source,
        changed_source,
        args=tuple(args),
        tests=tests,
        snapshots=snapshots,
        drifting_tests=drifting_tests,
        drifting_snapshots=drifting_snapshots,
        drift_layer=drift_layer,
    ).walk(rechecks)
