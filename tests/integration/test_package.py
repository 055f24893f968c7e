"""The package as a user installs it: wheel and sdist build, metadata passes ``twine check``, the wheel holds the
plugin (with ``py.typed`` and its templates) and nothing else, and installed from the wheel into a fresh virtualenv
the plugin registers with pytest and a sample snapshot test goes through create -> check. The names that
``docs/api.md`` documents as exported by ``pytest_featviz`` import from it.

The fresh virtualenv gets the plugin from the wheel and *only* from the wheel. Its heavy dependencies (torch alone is
gigabytes) are borrowed from the outer environment through a ``.pth`` file that points at a *shadow* of the outer
site-packages: a directory of symlinks to every entry there except pytest-featviz's own (its editable-install hook
and its dist-info). So the fresh environment cannot see the working tree, pip resolves the wheel's declared
dependencies against what is visible without touching the network (``--no-index``), and the test checks that
``pytest_featviz`` was imported from the fresh environment's site-packages.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import typing
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OWN_ENTRY_PREFIXES = ("pytest_featviz", "_pytest_featviz", "__editable__", "_editable_impl_pytest_featviz")

SAMPLE_TEST = """
import sys
from pathlib import Path

import pytest_featviz
import torch
from torch import nn


def test_plugin_comes_from_the_wheel():
    assert Path(pytest_featviz.__file__).resolve().is_relative_to(Path(sys.prefix).resolve()), pytest_featviz.__file__


def test_sample_snapshot(feature_snapshot):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    result = feature_snapshot(model, x, layers=["0", "2"])
    assert [layer.name for layer in result.layers] == ["0", "2"]
"""


# The outer CI's variables stay out of the sample runs: a GITHUB_STEP_SUMMARY would receive their tables.
OUTER_CI = ("CI", "BUILD_NUMBER", "GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY")


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in (os.environ if env is None else env).items() if key not in OUTER_CI}
    return subprocess.run(command, cwd=cwd, env=clean, capture_output=True, text=True, timeout=600)


def checked(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = run(command, cwd, env)
    assert done.returncode == 0, f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done


def documented_public_names() -> list[str]:
    """The members listed under ``::: pytest_featviz.outcomes`` and ``::: pytest_featviz.records`` in
    ``docs/api.md`` ("Errors and records")."""
    api = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    names = []
    for module in ("outcomes", "records"):
        members = rf"^::: pytest_featviz\.{module}\n    options:\n      members:\n((?:        - \w+\n)+)"
        block = re.search(members, api, re.M)
        assert block, f"docs/api.md has no members list for pytest_featviz.{module}"
        names += re.findall(r"- (\w+)", block.group(1))
    return names


def test_documented_public_names_import_from_the_package() -> None:
    import pytest_featviz
    import pytest_featviz.records
    from pytest_featviz import FeatureDriftError, FeatvizError, GoldenMissingError, LayerResult, SnapshotResult

    exported = [FeatureDriftError, FeatvizError, GoldenMissingError, LayerResult, SnapshotResult]
    # the names code written for earlier versions imports from records are the same classes
    assert exported == [getattr(pytest_featviz.records, cls.__name__) for cls in exported]
    assert [cls.__module__ for cls in exported] == [*["pytest_featviz.outcomes"] * 3, *["pytest_featviz.records"] * 2]
    documented = documented_public_names()
    assert sorted(documented) == sorted(cls.__name__ for cls in exported)
    assert sorted([*documented, "__version__"]) == sorted(pytest_featviz.__all__)
    assert issubclass(FeatureDriftError, AssertionError) and issubclass(GoldenMissingError, AssertionError)
    # the records, imported when first asked for, are listed and resolved as the other names are
    assert set(pytest_featviz.__all__) <= set(dir(pytest_featviz))
    assert typing.get_type_hints(FeatureDriftError.__init__)["result"] == SnapshotResult | None


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wheel and sdist built from the working tree by ``python -m build`` (no isolation: no network needed)."""
    pytest.importorskip("build", reason="needs the dev extra (build, twine, hatchling)")
    out = tmp_path_factory.mktemp("dist")
    checked([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)], cwd=out)
    return out


def only(directory: Path, pattern: str) -> Path:
    found = sorted(directory.glob(pattern))
    assert len(found) == 1, f"expected one {pattern} in {directory}, found {[p.name for p in found]}"
    return found[0]


def test_build_makes_wheel_and_sdist_that_pass_twine_check(dist: Path) -> None:
    wheel, sdist = only(dist, "*.whl"), only(dist, "*.tar.gz")
    assert wheel.name.startswith("pytest_featviz-") and wheel.name.endswith("-py3-none-any.whl")
    assert sdist.name.startswith("pytest_featviz-")
    done = checked([sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)], cwd=dist)
    assert done.stdout.count("PASSED") == 2, done.stdout


def test_wheel_holds_the_plugin_and_nothing_else(dist: Path) -> None:
    with zipfile.ZipFile(only(dist, "*.whl")) as wheel:
        names = wheel.namelist()
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = wheel.read(f"{dist_info}/METADATA").decode()
        entry_points = wheel.read(f"{dist_info}/entry_points.txt").decode()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"pytest_featviz", dist_info}, f"unexpected top-level entries: {sorted(tops)}"
    sources = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "pytest_featviz").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }
    missing = sources - set(names)
    assert not missing, f"package files missing from the wheel: {sorted(missing)}"
    assert "pytest_featviz/plugin.py" in names and "pytest_featviz/py.typed" in names
    templates = ROOT / "pytest_featviz" / "templates"
    if templates.is_dir():
        assert any(n.startswith("pytest_featviz/templates/") for n in names)
    assert not [n for n in names if n.startswith(("tests/", "golden/", "examples/")) or n.endswith(".pyc")]
    assert "Classifier: Framework :: Pytest" in metadata
    assert "Requires-Dist: torch" in metadata
    assert "[pytest11]\nfeatviz = pytest_featviz.plugin" in entry_points


def shadow_site_packages(target: Path) -> Path:
    """Symlinks to every entry of the outer site-packages except pytest-featviz's own (see the module doc)."""
    outer = Path(sysconfig.get_path("purelib"))
    target.mkdir()
    for entry in outer.iterdir():
        lowered = entry.name.lower()
        if lowered.startswith(OWN_ENTRY_PREFIXES) or lowered.endswith(".pth"):
            continue  # .pth files there would not run from a .pth-added directory anyway; skip them explicitly
        (target / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    return target


@pytest.fixture(scope="module")
def fresh_venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtualenv (no pip, no site packages) with the wheel installed by pip; returns its python."""
    base = tmp_path_factory.mktemp("fresh")
    venv = base / "venv"
    checked([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=base)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = Path(
        checked([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], base).stdout.strip()
    )
    shadow = shadow_site_packages(base / "borrowed-site-packages")
    (purelib / "borrowed-dependencies.pth").write_text(f"{shadow}\n")
    checked(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-index",
            "--quiet",
            str(only(dist, "*.whl")),
        ],
        cwd=base,
    )
    return python


def test_wheel_installs_into_a_fresh_venv_and_the_plugin_registers(fresh_venv: Path, tmp_path: Path) -> None:
    where = checked(
        [
            str(fresh_venv),
            "-c",
            "import sys, pytest_featviz; from importlib import metadata;"
            " print(pytest_featviz.__file__); print(metadata.version('pytest-featviz'));"
            " print(any('pytest_featviz' in str(p) or p.rstrip('/') == sys.argv[-1] for p in sys.path))",
            str(ROOT),
        ],
        cwd=tmp_path,
    ).stdout.split()
    prefix = fresh_venv.parent.parent.resolve()
    assert Path(where[0]).resolve().is_relative_to(prefix), f"plugin imported from {where[0]}, not the fresh venv"
    assert where[2] == "False", "the working tree is on the fresh venv's sys.path"

    sample = tmp_path / "project"
    sample.mkdir()
    (sample / "test_sample.py").write_text(SAMPLE_TEST)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTEST_", "PYTHON"))}
    pytest_cmd = [str(fresh_venv), "-m", "pytest", "-p", "no:cacheprovider", "-q"]

    helped = checked([*pytest_cmd, "--help"], sample, env)
    assert "--featviz-update" in helped.stdout and "featviz_threshold" in helped.stdout

    missing = run(pytest_cmd, sample, env)
    assert missing.returncode == 1, missing.stdout
    command = "pytest --featviz-create -p no:cacheprovider test_sample.py::test_sample_snapshot"  # -p as given
    assert f"create it with:  {command}" in missing.stdout
    assert not (sample / "golden").exists()

    created = checked([*pytest_cmd, "--featviz-update"], sample, env)
    assert "2 passed" in created.stdout and "1 created" in created.stdout
    assert sorted(p.name for p in (sample / "golden/test_sample/test_sample_snapshot/0").iterdir()) == [
        "0.png",
        "2.png",
        "snapshot.json",
    ]
    checked_run = checked(pytest_cmd, sample, env)
    assert "2 passed" in checked_run.stdout and "1 matched" in checked_run.stdout

    disabled = run([*pytest_cmd, "-p", "no:featviz"], sample, env)
    assert disabled.returncode == 1 and "fixture 'feature_snapshot' not found" in disabled.stdout
