"""Start-up cost: ``pytest --collect-only`` on a suite without snapshots, with the plugin and with ``-p no:featviz``.

Generates a suite of plain tests in a temporary directory (its own ``pytest.ini``), runs ``pytest --collect-only
-q`` in fresh interpreters, alternating with and without the plugin, and reports the median wall time of each and
the difference. A probe ``conftest.py`` records which of torch, numpy, scikit-image and Pillow are imported by the end
of each run (after collection, session finish and summary), so anything the plugin pulls in shows as a difference.

Usage: ``python benchmarks/startup.py [--repeats N] [--tests N]``. Target (issue #6): within 30 ms, and no torch,
numpy, scikit-image or PIL imported on behalf of the plugin.
"""

from __future__ import annotations

import argparse
import json
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


def run(root: Path, extra: list[str], probe: Path) -> tuple[float, dict[str, Any]]:
    command = [sys.executable, "-m", "pytest", "--collect-only", "-q", *extra]
    start = time.perf_counter()
    done = subprocess.run(
        command, cwd=root, capture_output=True, text=True, env={**_env(), "FEATVIZ_PROBE": str(probe)}, check=False
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    return seconds, json.loads(probe.read_text())


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
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--tests", type=int, default=200)
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="featviz-bench-startup-"))
    make_suite(root, args.tests)
    probe = root.parent / (root.name + "-probe.json")
    cases: dict[str, list[str]] = {"with featviz": [], "-p no:featviz": ["-p", "no:featviz"]}
    samples: dict[str, list[float]] = {name: [] for name in cases}
    seen: dict[str, dict[str, Any]] = {}
    for extra in cases.values():  # warm-up: byte-code caches, file-system cache
        run(root, extra, probe)
    for _ in range(args.repeats):
        for name, extra in cases.items():
            seconds, seen[name] = run(root, extra, probe)
            samples[name].append(seconds)
    shutil.rmtree(root, ignore_errors=True)
    probe.unlink(missing_ok=True)
    with_plugin, without = (statistics.median(samples[name]) for name in cases)
    rows = [
        [
            name,
            f"{statistics.median(samples[name]) * 1000:.0f}",
            f"{min(samples[name]) * 1000:.0f}",
            seen[name]["plugin"],
            ", ".join(seen[name]["heavy"]) or "none",
        ]
        for name in cases
    ]
    print(f"pytest --collect-only -q on {args.tests} plain tests, {args.repeats} alternating runs")
    print(common.table(rows, ["run", "median ms", "min ms", "plugin loaded", "heavy modules imported"]))
    difference = with_plugin - without
    extra_modules = sorted(set(seen["with featviz"]["heavy"]) - set(seen["-p no:featviz"]["heavy"]))
    print(
        f"difference {difference * 1000:.1f} ms"
        f" (target <= 30 ms: {'met' if difference <= TARGET_SECONDS else 'NOT met'});"
        f" heavy modules imported on behalf of the plugin: {', '.join(extra_modules) or 'none'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
