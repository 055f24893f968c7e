"""Start-up cost: ``pytest --collect-only`` on a suite without snapshots, with the plugin and with ``-p no:featviz``.

Generates a suite of plain tests in a temporary directory (its own ``pytest.ini``), runs ``pytest --collect-only
-q`` in fresh interpreters, alternating with and without the plugin, and reports the median wall time of each and
the median of the paired differences (each run with the plugin minus the run without it just after), in wall time
and in the child's CPU time: on a shared machine one slow run moves a median of 15 by tens of milliseconds, the
paired differences much less. A probe ``conftest.py`` records which of torch, numpy, scikit-image and Pillow are
imported by the end of each run (after collection, session finish and summary), so anything the plugin pulls in
shows as a difference.

Then the same suite with a golden directory of ``--goldens`` snapshots beside it (a sidecar and one picture each,
as ``pytest --featviz-update`` leaves them), which pytest would walk on every run: with the plugin, which keeps
pytest out of it, against ``-p no:featviz``, and against the plugin on the suite without goldens.

Usage: ``python benchmarks/startup.py [--repeats N] [--tests N] [--goldens N]``. Target (issue #6): within 30 ms,
and no torch, numpy, scikit-image or PIL imported on behalf of the plugin.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

HEAVY = ("torch", "numpy", "skimage", "PIL")
TARGET_SECONDS = 0.030
PROBE = """
import json, os, sys

def pytest_unconfigure(config):  # the last hook: after collection, session finish and the terminal summary
    heavy = sorted(m for m in {heavy!r} if m in sys.modules)
    plugin = config.pluginmanager.has_plugin("featviz")
    with open(os.environ["FEATVIZ_PROBE"], "w") as stream:
        json.dump({{"heavy": heavy, "plugin": plugin}}, stream)
"""


def make_suite(root: Path, tests: int) -> None:
    (root / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    (root / "conftest.py").write_text(PROBE.format(heavy=HEAVY))
    per_file = 20
    for index in range(0, tests, per_file):
        body = "\n\n".join(f"def test_{n}():\n    assert {n} + 1 > {n}" for n in range(index, index + per_file))
        (root / f"test_plain_{index // per_file}.py").write_text(body + "\n")


def add_goldens(root: Path, snapshots: int) -> None:
    for index in range(snapshots):
        snapshot = root / "golden" / f"test_plain_{index // 20}" / f"test_{index}" / "0"
        snapshot.mkdir(parents=True)
        (snapshot / "snapshot.json").write_text("{}\n")
        (snapshot / "layer1.png").write_bytes(b"\x89PNG\r\n\x1a\n")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(root: Path, extra: list[str], probe: Path) -> tuple[float, float, dict[str, Any]]:
    """Wall seconds, CPU seconds and the probe's record of one ``pytest --collect-only`` run."""
    command = [sys.executable, "-m", "pytest", "--collect-only", "-q", *extra]
    start, start_cpu = time.perf_counter(), _children_cpu()
    done = subprocess.run(
        command, cwd=root, capture_output=True, text=True, env={**_env(), "FEATVIZ_PROBE": str(probe)}, check=False
    )
    seconds, cpu = time.perf_counter() - start, _children_cpu() - start_cpu
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    return seconds, cpu, json.loads(probe.read_text())


def _env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    # Byte-code caching on, as on a developer's machine or CI: without it every run re-compiles (and pytest
    # re-rewrites the asserts of) every plugin module, which is not what a user pays.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("PYTEST_PLUGINS", None)
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--tests", type=int, default=200)
    parser.add_argument("--goldens", type=int, default=500)
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="featviz-bench-startup-"))
    plain, with_goldens = root / "plain", root / "goldens"
    for suite in (plain, with_goldens):
        suite.mkdir()
        make_suite(suite, args.tests)
    add_goldens(with_goldens, args.goldens)
    probe = root / "probe.json"
    cases = {"with featviz": (plain, []), "-p no:featviz": (plain, ["-p", "no:featviz"])}
    wall, cpu, seen = measure(cases, args.repeats, probe)
    rows = [
        [
            name,
            f"{statistics.median(wall[name]) * 1000:.0f}",
            f"{min(wall[name]) * 1000:.0f}",
            f"{statistics.median(cpu[name]) * 1000:.0f}",
            seen[name]["plugin"],
            ", ".join(seen[name]["heavy"]) or "none",
        ]
        for name in cases
    ]
    print(f"pytest --collect-only -q on {args.tests} plain tests, {args.repeats} alternating runs")
    print(
        common.table(rows, ["run", "median wall ms", "min wall ms", "median CPU ms", "plugin loaded", "heavy modules"])
    )
    on, off = cases
    difference = paired(wall, on, off)
    extra_modules = sorted(set(seen[on]["heavy"]) - set(seen[off]["heavy"]))
    print(
        f"difference (median of paired runs) {difference * 1000:.1f} ms wall, {paired(cpu, on, off) * 1000:.1f} ms CPU;"
        f" of the fastest runs {(min(wall[on]) - min(wall[off])) * 1000:.1f} ms"
        f" (target <= 30 ms: {'met' if difference <= TARGET_SECONDS else 'NOT met'});"
        f" heavy modules imported on behalf of the plugin: {', '.join(extra_modules) or 'none'}"
    )
    if args.goldens:
        goldens = f"{args.goldens} golden snapshots"
        cases = {
            f"with featviz, {goldens}": (with_goldens, []),
            f"-p no:featviz, {goldens}": (with_goldens, ["-p", "no:featviz"]),
            "with featviz, no goldens": (plain, []),
        }
        wall, cpu, seen = measure(cases, args.repeats, probe)
        rows = [
            [name, f"{statistics.median(wall[name]) * 1000:.0f}", f"{min(wall[name]) * 1000:.0f}"] for name in cases
        ]
        print(f"\nthe same suite with {goldens} in golden/ beside it, {args.repeats} alternating runs")
        print(common.table(rows, ["run", "median wall ms", "min wall ms"]))
        on, off, bare = cases
        print(
            f"the goldens cost the run {paired(wall, on, bare) * 1000:.1f} ms with featviz (median of paired runs),"
            f" {paired(wall, off, bare) * 1000:.1f} ms when pytest walks them (-p no:featviz)"
        )
    shutil.rmtree(root, ignore_errors=True)
    return 0


def measure(
    cases: dict[str, tuple[Path, list[str]]], repeats: int, probe: Path
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, dict[str, Any]]]:
    """Wall and CPU seconds of each case's runs, alternated, and the probe's record of each case's last run."""
    wall: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    seen: dict[str, dict[str, Any]] = {}
    for suite, extra in cases.values():  # warm-up: byte-code caches, file-system cache
        run(suite, extra, probe)
    for _ in range(repeats):
        for name, (suite, extra) in cases.items():
            seconds, cpu_seconds, seen[name] = run(suite, extra, probe)
            wall[name].append(seconds)
            cpu[name].append(cpu_seconds)
    return wall, cpu, seen


def paired(times: dict[str, list[float]], case: str, baseline: str) -> float:
    """The median of the paired differences: each run of ``case`` minus the run of ``baseline`` of its round."""
    return statistics.median(a - b for a, b in zip(times[case], times[baseline], strict=True))


if __name__ == "__main__":
    raise SystemExit(main())
