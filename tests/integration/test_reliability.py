"""Reliability as a user sees it: damaged goldens, hostile names, bad settings and crashing models fail only their own
test with a clear message; killed, disk-full and read-only updates leave each golden old or new; ``-n 2`` gives the
same goldens as a serial run."""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

# Kept in sys.modules: in-process pytester runs drop the modules they import, and importing torch or Pillow's plugin
# registry afresh in one process breaks them.
import torch  # noqa: F401
from PIL import Image, PngImagePlugin  # noqa: F401

import pytest_featviz.golden  # noqa: F401

MODELS = """
import torch
from torch import nn


def make_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))


def make_input():
    torch.manual_seed(1)
    return torch.rand(1, 1, 8, 8)
"""

TWO_TESTS = """
import os
from featviz_models import make_input, make_model

SEED = int(os.environ.get("FEATVIZ_TEST_SEED", "0"))


def test_sound(feature_snapshot):
    feature_snapshot(make_model(), make_input(), layers=["0", "2"])


def test_target(feature_snapshot):
    feature_snapshot(make_model(SEED), make_input(), layers=["0", "2"])
"""

TARGET = Path("golden", "test_two", "test_target", "0")


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def project(featviz_pytester: pytest.Pytester) -> pytest.Pytester:
    featviz_pytester.makepyfile(featviz_models=MODELS, test_two=TWO_TESTS)
    result = featviz_pytester.runpytest("--featviz-update")
    result.assert_outcomes(passed=2)
    return featviz_pytester


def _set_sha(picture: Path, data: bytes) -> None:
    picture.write_bytes(data)
    sidecar_path = picture.parent / "snapshot.json"
    sidecar = json.loads(sidecar_path.read_text())
    for layer in sidecar["layers"]:
        if layer["file"] == picture.name:
            layer["sha256"] = hashlib.sha256(data).hexdigest()
    sidecar_path.write_text(json.dumps(sidecar))


def _enormous_header() -> bytes:
    ihdr = struct.pack(">IIBBBBB", 1 << 20, 1 << 20, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk + b"\0" * 100


def _damage(case: str, snap: Path) -> None:
    picture = snap / "0.png"
    data = picture.read_bytes() if picture.exists() else b""
    if case == "truncated":
        picture.write_bytes(data[: len(data) // 2])
    elif case == "truncated-rehashed":
        _set_sha(picture, data[: len(data) // 2])
    elif case == "not-a-png":
        picture.write_bytes(b"<html>merge conflict</html>")
    elif case == "wrong-geometry":
        buffer = io.BytesIO()
        Image.new("L", (3, 2)).save(buffer, format="PNG")
        _set_sha(picture, buffer.getvalue())
    elif case == "enormous-header":
        picture.write_bytes(_enormous_header())
    elif case == "sidecar-missing":
        (snap / "snapshot.json").unlink()
    elif case == "sidecar-malformed":
        (snap / "snapshot.json").write_text('{"format": 1, "layers": [{"name": "0"}]}')
    elif case == "sidecar-conflicted":
        (snap / "snapshot.json").write_text("<<<<<<< HEAD\n{")
    elif case == "sidecar-newer":
        sidecar = json.loads((snap / "snapshot.json").read_text())
        sidecar["format"] = 7
        (snap / "snapshot.json").write_text(json.dumps(sidecar))
    elif case in ("lfs-picture", "lfs-sidecar"):
        # A clone without Git LFS: each file stored in LFS is a small text pointer in its place.
        target = picture if case == "lfs-picture" else snap / "snapshot.json"
        oid = hashlib.sha256(target.read_bytes()).hexdigest()
        size = target.stat().st_size
        target.write_text(f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n")
    elif case == "unreadable-dir":
        # CI runs as root, where chmod does not stop reads: a file where the golden directory should be does.
        for child in snap.iterdir():
            child.unlink()
        snap.rmdir()
        snap.parent.rmdir()
        snap.parent.write_text("not a directory")
    else:
        raise AssertionError(case)


DAMAGE = {
    "truncated": "golden picture */0.png does not match its sidecar (edited, damaged or half-merged)",
    "truncated-rehashed": "golden picture */0.png is not a readable PNG*",
    "not-a-png": "golden picture */0.png is not a PNG (damaged, truncated or replaced)",
    "wrong-geometry": "golden picture */0.png is 3x2 pixels; its sidecar expects 17x17",
    "enormous-header": "golden picture */0.png claims 1048576x1048576 pixels, *refusing to decode it*",
    "sidecar-missing": "golden snapshot */test_target/0 has pictures but no sidecar snapshot.json*",
    "sidecar-malformed": "golden sidecar */snapshot.json is malformed (KeyError*",
    "sidecar-conflicted": "golden sidecar */snapshot.json holds Git merge-conflict markers: *--featviz-update*",
    "sidecar-newer": "golden sidecar */snapshot.json has format 7, newer than this pytest-featviz reads (1);*",
    "unreadable-dir": "*cannot read golden sidecar */test_target/0/snapshot.json: [[]Errno 20[]] Not a directory*",
    "lfs-picture": "golden picture */0.png is a Git LFS pointer, not the file: *run `git lfs pull`*",
    "lfs-sidecar": "golden sidecar */snapshot.json is a Git LFS pointer, not the file: *run `git lfs pull`*",
}
# A golden that exists but was not fetched is not re-created by --featviz-update: it would be overwritten unseen.
NOT_FETCHED = {"lfs-picture", "lfs-sidecar"}
# Damage that --featviz-update is no way out of: the failing test names no command for it.
NOT_RECREATED = NOT_FETCHED | {"sidecar-newer", "unreadable-dir"}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_golden_fails_only_its_test(project: pytest.Pytester, case: str) -> None:
    snap = project.path / TARGET
    sound = _files(project.path / "golden" / "test_two" / "test_sound")
    _damage(case, snap)
    damaged = _files(project.path / "golden")
    result = project.runpytest("-rf")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*.Golden*: " + DAMAGE[case]])
    result.stdout.fnmatch_lines(["FAILED test_two.py::test_target - *"])
    # the message says it all: no frames from inside the plugin, no chained traceback
    assert "pytest_featviz/" not in result.stdout.str()
    assert "The above exception was the direct cause" not in result.stdout.str()
    # the golden's files named as every other line names paths, relative to where pytest ran (not the runner's root)
    shown = [line for line in result.stdout.lines if line.startswith(("E ", "  golden/"))]
    assert shown and not [line for line in shown if str(project.path) in line]
    recreate = "*re-create it with:  pytest --featviz-update test_two.py::test_target"
    if case in NOT_RECREATED:
        assert "re-create it with:  pytest" not in result.stdout.str()
    else:
        result.stdout.fnmatch_lines([recreate])
    assert _files(project.path / "golden") == damaged  # a check run never writes
    # the featviz summary counts the golden and names it, and the report lists it with the test's message
    result.stdout.fnmatch_lines(
        [
            "2 snapshot(s) checked: 1 matched, 0 drifted (0 test(s), 0 layer(s)), 0 missing, 1 unreadable",
            "1 golden snapshot(s) could not be read (the failing test says how to fix each):",
            "  golden/test_two/test_target/0: " + DAMAGE[case],
        ]
    )
    (entry,) = json.loads((project.path / "featviz-report" / "report.json").read_text())["snapshots"]
    assert (entry["test_id"], entry["outcome"], entry["golden_dir"]) == (
        "test_two.py::test_target",
        "unreadable",
        "golden/test_two/test_target/0",
    )
    assert fnmatch.fnmatch(entry["message"].splitlines()[0], DAMAGE[case])
    # --featviz-update re-creates the damaged golden, except where a file blocks the directory or the golden was
    # not fetched from Git LFS
    result = project.runpytest("--featviz-update")
    if case in NOT_RECREATED:
        result.stdout.fnmatch_lines(["2 snapshot(s) compared: 1 matched, 0 drifted, 0 without a golden*, 1 unreadable"])
    if case == "unreadable-dir":
        result.assert_outcomes(passed=1, failed=1)
        result.stdout.fnmatch_lines(["*GoldenError: cannot read golden sidecar */test_target/0/snapshot.json: *"])
        assert (project.path / "golden" / "test_two" / "test_target").read_text() == "not a directory"
    elif case == "sidecar-newer":  # written by a newer pytest-featviz: never downgraded unseen
        result.assert_outcomes(passed=1, failed=1)
        result.stdout.fnmatch_lines(["*GoldenError: " + DAMAGE[case]])
        assert _files(project.path / "golden") == damaged
    elif case in NOT_FETCHED:
        result.assert_outcomes(passed=1, failed=1)
        result.stdout.fnmatch_lines(["*GoldenNotFetched: " + DAMAGE[case] + "--featviz-update will not write over it"])
        assert _files(project.path / "golden") == damaged
    else:
        result.assert_outcomes(passed=2)
        result.stdout.fnmatch_lines(
            [
                # said as damaged and re-created, not as drifted: nothing was compared
                "2 snapshot(s) compared: 1 matched, 0 drifted, 1 damaged (re-created), 0 without a golden (created)",
                "goldens: 0 created, 1 updated, 1 unchanged*",  # re-created, not new
                "1 damaged golden snapshot(s) re-created from this run (what was damaged could not be compared, and"
                " the rest is rewritten as it is now: review their pictures before committing):"
                " golden/test_two/test_target/0",
            ]
        )
        project.runpytest().assert_outcomes(passed=2)
    assert _files(project.path / "golden" / "test_two" / "test_sound") == sound


def test_featviz_create_leaves_a_damaged_golden_and_says_why(project: pytest.Pytester) -> None:
    # --featviz-create writes missing goldens only; the user who ran it to fix a damaged one is told why it did not
    _damage("not-a-png", project.path / TARGET)
    damaged = _files(project.path / "golden")
    result = project.runpytest("--featviz-create")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "E * " + DAMAGE["not-a-png"],
            "E *--featviz-create writes only missing goldens and leaves a damaged one as it is; re-create it with: "
            " pytest --featviz-update test_two.py::test_target",
        ]
    )
    assert _files(project.path / "golden") == damaged


LINKS = {
    "outside": "leads to */*-elsewhere/0, outside the golden directory golden",  # as where pytest ran
    "dangling": "leads to */nowhere, which does not exist",
    "loop": "loops",
}


@pytest.mark.parametrize("link", sorted(LINKS))
def test_a_golden_folder_that_is_a_link_out_of_the_golden_directory_fails_its_test_saying_so(
    project: pytest.Pytester, link: str
) -> None:
    # a link out of the golden directory read "outside the golden directory" of a path inside it, with the plugin's
    # source in the traceback; a dangling one read as a missing golden, then as "a file"; a loop as a RuntimeError
    snap = project.path / TARGET
    elsewhere = project.path.parent / f"{project.path.name}-elsewhere"
    if link == "outside":
        elsewhere.mkdir()
        snap.rename(elsewhere / "0")
        snap.symlink_to(elsewhere / "0", target_is_directory=True)
    else:
        for child in snap.iterdir():
            child.unlink()
        snap.rmdir()
        snap.symlink_to(snap if link == "loop" else project.path / "nowhere")
    outside = _files(elsewhere) if elsewhere.exists() else {}
    for args in ((), ("--featviz-update",), ("--featviz-create",)):
        result = project.runpytest(*args)
        result.assert_outcomes(passed=1, failed=1)
        result.stdout.fnmatch_lines(
            [
                f"E   *GoldenError: golden path *{TARGET.as_posix()} is a symbolic link that {LINKS[link]}:"
                " pytest-featviz reads and writes goldens only inside the golden directory; remove the link, or put"
                " the folder it stands for in its place"
            ]
        )
        assert "pytest_featviz/" not in result.stdout.str()
        # counted and named as a golden that could not be read, in every mode
        result.stdout.fnmatch_lines(
            ["2 snapshot(s) *, 1 unreadable*", f"  golden/test_two/test_target/0: golden path * {LINKS[link]}:*"]
        )
        assert snap.is_symlink() and (_files(elsewhere) if elsewhere.exists() else {}) == outside
        assert not (project.path / "nowhere").exists()


def test_a_golden_folder_linked_inside_the_golden_directory_is_written_through_the_link(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Links inside the golden directory are used (goldens shared between tests). An update replaced the link by a
    # folder, left the link as a hidden ".0.featviz-old-..." that git add picks up and no later write removed, and
    # the folder it led to (and every other test linking to it) kept the old golden.
    snap = project.path / TARGET
    shared = project.path / "golden" / "shared" / "0"
    shared.parent.mkdir()
    snap.rename(shared)
    snap.symlink_to(Path("..", "..", "shared", "0"), target_is_directory=True)
    project.runpytest().assert_outcomes(passed=2)
    monkeypatch.setenv("FEATVIZ_TEST_SEED", "3")
    before = _files(shared)
    result = project.runpytest("--featviz-update")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["goldens: 0 created, 1 updated, 1 unchanged*"])
    assert snap.is_symlink() and _files(shared) != before
    assert sorted(p.name for p in snap.parent.iterdir()) == ["0"]  # no leftover beside the link
    assert sorted(p.name for p in shared.parent.iterdir()) == ["0"]
    project.runpytest().assert_outcomes(passed=2)


TWO_SNAPSHOTS = """
from featviz_models import make_input, make_model


def test_pair(feature_snapshot):
    feature_snapshot(make_model(), make_input(), layers=["0"], name="first")
    feature_snapshot(make_model(), make_input(), layers=["2"], name="second")


def test_other(feature_snapshot):
    feature_snapshot(make_model(1), make_input(), layers=["0"])
"""


@pytest.mark.parametrize("args", [(), ("-n", "2")], ids=["serial", "xdist"])
def test_an_unreadable_golden_is_counted_reported_and_its_test_s_later_goldens_listed(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...]
) -> None:
    from pytest_featviz.cli import main

    featviz_pytester.makepyfile(featviz_models=MODELS, test_pair=TWO_SNAPSHOTS)
    featviz_pytester.runpytest("--featviz-update", *args).assert_outcomes(passed=2)
    _damage("sidecar-conflicted", featviz_pytester.path / "golden" / "test_pair" / "test_pair" / "first")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(featviz_pytester.path / "summary.md"))
    result = featviz_pytester.runpytest(*args)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "2 snapshot(s) checked: 1 matched, 0 drifted (0 test(s), 0 layer(s)), 0 missing, 1 unreadable",
            "1 golden snapshot(s) could not be read (the failing test says how to fix each):",
            "  golden/test_pair/test_pair/first: golden sidecar */snapshot.json holds Git merge-conflict markers*",
            "1 golden snapshot(s) of the failing tests were not checked: a test stops at its first drifted, missing or"
            " unreadable snapshot (*): golden/test_pair/test_pair/second",
            "report: featviz-report/index.html",
        ]
    )
    report = featviz_pytester.path / "featviz-report"
    data = json.loads((report / "report.json").read_text())
    assert data["summary"]["unreadable"] == 1
    (entry,) = data["snapshots"]
    assert (entry["snapshot"], entry["outcome"], entry["current"], entry["layers"]) == ("first", "unreadable", None, [])
    assert "holds Git merge-conflict markers" in entry["message"]
    assert "re-create it with:  pytest --featviz-update test_pair.py::test_pair" in entry["message"]
    page = (report / "index.html").read_text()
    assert '<section class="test unreadable" data-test="test_pair.py::test_pair">' in page
    assert "<code>golden/test_pair/test_pair/first/</code> could not be read:" in page
    assert "holds Git merge-conflict markers" in page
    summary = (featviz_pytester.path / "summary.md").read_text()
    assert "| `test_pair.py::test_pair` | `first` | unreadable | – | – | – |" in summary
    # with its error and the fix: the table alone said "unreadable"
    assert "\nGoldens that could not be read:\n\n- `golden/test_pair/test_pair/first`: golden sidecar " in summary
    assert fnmatch.fnmatch(
        summary,
        # markdown escapes: test_pair's underscore would open emphasis
        "*markers: both branches changed this snapshot;*; re-create it with: pytest --featviz-update test\\_pair*",
    )
    # promote has no render of it, and says so rather than "nothing to promote", naming it from where it runs
    out = io.StringIO()
    monkeypatch.chdir(featviz_pytester.mkdir("sub"))
    assert main(["promote", "../featviz-report"], out=out) == 1
    assert out.getvalue() == (
        "not promoted: 1 golden snapshot(s) that the run could not read have no current render"
        " (../golden/test_pair/test_pair/first); each one's message in the report says why and how to fix it\n"
    )
    monkeypatch.chdir(featviz_pytester.path)
    # an update stops at a golden it does not re-create (a Git LFS pointer): the goldens after it are named too
    sidecar = featviz_pytester.path / "golden" / "test_pair" / "test_pair" / "first" / "snapshot.json"
    conflicted = sidecar.read_bytes()
    _damage("lfs-sidecar", sidecar.parent)
    update = featviz_pytester.runpytest("--featviz-update", *args)
    update.assert_outcomes(passed=1, failed=1)
    update.stdout.fnmatch_lines(
        [
            "2 snapshot(s) compared: 1 matched, 0 drifted, 0 without a golden (created), 1 unreadable",
            "*golden/test_pair/test_pair/first: golden sidecar * is a Git LFS pointer, not the file*",
            "1 golden snapshot(s) of the failing tests were not checked: * golden/test_pair/test_pair/second",
        ]
    )
    sidecar.write_bytes(conflicted)
    # the command in the message repairs it, and the run after is green with no report
    featviz_pytester.runpytest("--featviz-update", "test_pair.py::test_pair", *args).assert_outcomes(passed=1)
    again = featviz_pytester.runpytest(*args)
    again.assert_outcomes(passed=2)
    again.stdout.fnmatch_lines(["3 snapshot(s) checked: 3 matched, 0 drifted (0 test(s), 0 layer(s)), 0 missing"])
    assert "could not be read" not in again.stdout.str()
    assert not (report / "report.json").exists()


HOSTILE_TESTS = r"""
import pytest
from featviz_models import make_input, make_model

NAMES = [
    "../../escape", "..", ".", "a/b\\c", "/etc/passwd", "ctl\x00\x1b[31m\n", "é" * 200, "\U0001f600" * 90,
    "<script>alert('x')</script>", "CON", "x" * 400, " . ",
]


@pytest.mark.parametrize("name", NAMES, ids=NAMES)
def test_hostile(feature_snapshot, name):
    feature_snapshot(make_model(), make_input(), layers=["0"], name=name)
"""


def test_hostile_names_and_ids_stay_in_the_golden_dir(featviz_pytester: pytest.Pytester) -> None:
    featviz_pytester.makepyfile(featviz_models=MODELS, test_hostile=HOSTILE_TESTS)
    before = set(featviz_pytester.path.rglob("*"))
    result = featviz_pytester.runpytest("--featviz-update")
    result.assert_outcomes(passed=12)
    result.stdout.fnmatch_lines(["goldens: 12 created, 0 updated, 0 unchanged*"])
    golden_root = (featviz_pytester.path / "golden").resolve()
    written = {p for p in featviz_pytester.path.rglob("*") if p not in before and "__pycache__" not in p.parts}
    written = {p for p in written if not p.resolve().is_relative_to(featviz_pytester.path / "featviz-report")}
    assert all(p.resolve().is_relative_to(golden_root) for p in written)
    sidecars = sorted(golden_root.rglob("snapshot.json"))
    assert len(sidecars) == 12 and len({p.parent for p in sidecars}) == 12
    for path in written:
        for part in path.relative_to(golden_root).parts:
            assert len(part.encode()) <= 255 and part.isascii() and part.isprintable()
            assert not part.startswith(".") and "<" not in part and "/" not in part
    assert not (featviz_pytester.path.parent / "escape").exists()
    featviz_pytester.runpytest().assert_outcomes(passed=12)


SURROGATE_TESTS = """
import os
from featviz_models import make_input, make_model


def test_photo(feature_snapshot):
    # a file name that is not UTF-8, as os.listdir or os.fsdecode gives it: 'photo_\\udce9.png'
    feature_snapshot(make_model(), make_input(), layers=["0"], name=os.fsdecode(b"photo_\\xe9.png"))


def test_plain(feature_snapshot):
    feature_snapshot(make_model(), make_input(), layers=["0"])
"""


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_a_name_with_a_lone_surrogate_fails_or_passes_like_any_other(
    featviz_pytester: pytest.Pytester, workers: list[str]
) -> None:
    """It ended the session in a traceback while writing the report (serial) or an INTERNALERROR (xdist), losing
    every test's results; it is carried as its backslash escape, and its golden directory is named as before."""
    featviz_pytester.makepyfile(featviz_models=MODELS, test_odd=SURROGATE_TESTS)
    result = featviz_pytester.runpytest(*workers)
    result.assert_outcomes(passed=0, failed=2)
    result.stdout.fnmatch_lines(["2 snapshot(s) checked: 0 matched, 0 drifted*, 2 missing", "report: *index.html"])
    report = json.loads((featviz_pytester.path / "featviz-report" / "report.json").read_text(encoding="utf-8"))
    assert sorted(s["snapshot"] for s in report["snapshots"]) == ["0", "photo_\\udce9.png"]
    featviz_pytester.runpytest("--featviz-update", *workers).assert_outcomes(passed=2)
    (photo,) = (featviz_pytester.path / "golden" / "test_odd" / "test_photo").iterdir()
    assert photo.name == "photo__.png-4fa6872026"  # the digest of the name itself, as 0.1.0 named it
    featviz_pytester.runpytest(*workers).assert_outcomes(passed=2)


def test_a_test_folder_named_in_bytes_that_are_not_utf8_works(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its test id and the sidecar's record of its test file hold lone surrogates: writing the golden, the current
    render and the job summary failed with a UnicodeEncodeError. The golden goes without the test record."""
    folder = os.fsencode(featviz_pytester.path) + b"/tests_caf\xe9"
    os.mkdir(folder)
    files = {b"test_lat.py": SURROGATE_TESTS.replace("test_photo", "test_lat"), b"featviz_models.py": MODELS}
    for name, text in files.items():
        with open(folder + b"/" + name, "w") as stream:
            stream.write(text)
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(featviz_pytester.path / "summary.md"))
    featviz_pytester.runpytest().assert_outcomes(failed=2)
    assert "tests_caf\\udce9/test_lat.py::test_plain" in (featviz_pytester.path / "summary.md").read_text()
    featviz_pytester.runpytest("--featviz-create").assert_outcomes(passed=2)
    featviz_pytester.runpytest().assert_outcomes(passed=2)
    sidecars = list((featviz_pytester.path / "golden").rglob("snapshot.json"))
    assert len(sidecars) == 2 and all('"test"' not in p.read_text() for p in sidecars)


CASE_TESTS = """
import pytest
from featviz_models import make_input, make_model


@pytest.mark.parametrize("mode", ["RGB", "rgb"])
def test_mode(feature_snapshot, mode):
    feature_snapshot(make_model(), make_input(), layers=["0"])


def test_names(feature_snapshot):
    feature_snapshot(make_model(), make_input(), layers=["0"], name="Stem")
    feature_snapshot(make_model(), make_input(), layers=["0"], name="stem")
"""


def test_names_that_differ_only_in_case_are_refused(featviz_pytester: pytest.Pytester) -> None:
    # On macOS and Windows the two would be one directory, so the second of each pair must fail, also on Linux.
    featviz_pytester.makepyfile(featviz_models=MODELS, test_case=CASE_TESTS)
    for args in (["--featviz-update", "-p", "no:randomly"], []):
        result = featviz_pytester.runpytest(*args)
        result.assert_outcomes(passed=1, failed=2)
        for line in (
            "*golden path */test_case/test_mode[[]rgb[]] differs only in letter case from */test_mode[[]RGB[]]*",
            "*golden path */test_case/test_names/stem differs only in letter case from */test_names/Stem*",
        ):
            result.stdout.fnmatch_lines([line])  # each on its own: the check run may take the tests in any order
    golden = featviz_pytester.path / "golden" / "test_case"
    assert sorted(p.parent.relative_to(golden).as_posix() for p in golden.rglob("snapshot.json")) == [
        "test_mode[RGB]/0",
        "test_names/Stem",
    ]
    # the way out the message names: rename in more than case, or prune the golden a case-only rename left behind
    featviz_pytester.makepyfile(test_case=CASE_TESTS.replace('["RGB", "rgb"]', '["rgb"]').replace('"stem"', '"stem2"'))
    result = featviz_pytester.runpytest("--featviz-update", "--featviz-prune")
    result.assert_outcomes(passed=1, failed=1)  # the stale test_mode[RGB] is pruned at the end of this run
    result.stdout.fnmatch_lines(["*golden/test_case/test_mode[[]RGB[]]/0"])
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=2)
    assert sorted(p.parent.relative_to(golden).as_posix() for p in golden.rglob("snapshot.json")) == [
        "test_mode[rgb]/0",
        "test_names/Stem",
        "test_names/stem2",
    ]


def test_a_case_only_twin_made_meanwhile_by_another_worker_fails_the_update(featviz_pytester: pytest.Pytester) -> None:
    # Under xdist two workers create test_mode[rgb] and test_mode[RGB] at the same time: each looked before the
    # other wrote. The conftest plays the other worker, creating the twin while this worker writes its golden.
    featviz_pytester.makeconftest(
        """
        import pytest
        import pytest_featviz.goldenwrite as goldenwrite

        create_files = goldenwrite.create_files

        def racing(directory, sidecar, pictures):
            twin = directory.parent.with_name(directory.parent.name.replace("rgb", "RGB")) / directory.name
            create_files(twin, sidecar, pictures)
            return create_files(directory, sidecar, pictures)

        @pytest.fixture(autouse=True)
        def other_worker(monkeypatch):  # undone after the test: this pytest runs in the suite's own process
            monkeypatch.setattr(goldenwrite, "create_files", racing)
        """
    )
    featviz_pytester.makepyfile(featviz_models=MODELS, test_case=CASE_TESTS.replace('["RGB", "rgb"]', '["rgb"]'))
    result = featviz_pytester.runpytest("--featviz-update", "-k", "test_mode")
    result.assert_outcomes(failed=1, deselected=1)
    result.stdout.fnmatch_lines(
        ["*golden path */test_case/test_mode[[]rgb[]] differs only in letter case from */test_mode[[]RGB[]]*"]
    )
    # it took its own golden back: one of the two stays, as in a serial run
    golden = featviz_pytester.path / "golden" / "test_case"
    assert sorted(p.parent.relative_to(golden).as_posix() for p in golden.rglob("snapshot.json")) == [
        "test_mode[RGB]/0"
    ]
    assert sorted(p.name for p in golden.iterdir()) == ["test_mode[RGB]"]


def test_two_case_only_twins_created_at_once_leave_one_golden(featviz_pytester: pytest.Pytester) -> None:
    # Two xdist workers create test_mode[rgb] and test_mode[RGB] at the same time and both look for a twin after
    # writing. Without a lock around that look and the take-back, each saw the other's golden, both took theirs back
    # and failed, and no golden was left. The conftest plays the other worker in a thread; each look is slowed so
    # that the two overlap whenever nothing keeps them apart.
    featviz_pytester.makeconftest(
        """
        import threading
        import time

        import pytest
        import pytest_featviz.durable as durable
        import pytest_featviz.goldenpath as goldenpath
        import pytest_featviz.goldenwrite as goldenwrite
        import pytest_featviz.snapshot as snapshot
        from pytest_featviz.golden import GoldenError

        create_files = goldenwrite.create_files
        case_twin = goldenpath.case_twin
        other = {}

        def slow_look(root, directory):
            found = case_twin(root, directory)
            time.sleep(0.5)
            return found

        def the_other_worker_looks_again(root, twin):
            try:
                snapshot._refuse_case_twin(root, twin, take_back=True)
                other["outcome"] = "passed"
            except GoldenError as error:
                other["outcome"] = f"failed: {error}"

        def racing(directory, sidecar, pictures):
            twin = directory.parent.with_name(directory.parent.name.replace("rgb", "RGB")) / directory.name
            create_files(twin, sidecar, pictures)
            created = create_files(directory, sidecar, pictures)
            root = directory.parents[2]

            def look():  # the other worker's look, under the lock snapshot.py takes for it
                with durable.locked(root):
                    the_other_worker_looks_again(root, twin)

            other["thread"] = threading.Thread(target=look)
            other["thread"].start()
            return created

        @pytest.fixture(autouse=True)
        def other_worker(monkeypatch):
            monkeypatch.setattr(goldenwrite, "create_files", racing)
            monkeypatch.setattr(goldenpath, "case_twin", slow_look)
            yield
            other["thread"].join()
            print("other worker:", other["outcome"])
        """
    )
    featviz_pytester.makepyfile(featviz_models=MODELS, test_case=CASE_TESTS.replace('["RGB", "rgb"]', '["rgb"]'))
    result = featviz_pytester.runpytest("--featviz-update", "-k", "test_mode", "-s")
    outcomes = result.parseoutcomes()
    other = "passed" if "other worker: passed" in result.stdout.str() else "failed"
    assert sorted([other, "passed" if outcomes.get("passed") else "failed"]) == ["failed", "passed"]
    golden = featviz_pytester.path / "golden" / "test_case"
    left = "test_mode[rgb]/0" if other == "failed" else "test_mode[RGB]/0"
    assert sorted(p.parent.relative_to(golden).as_posix() for p in golden.rglob("snapshot.json")) == [left]
    result.stdout.fnmatch_lines(["*differs only in letter case*"])


BAD_INPUT_TESTS = """
import pytest
import torch
from torch import nn
from featviz_models import make_input, make_model


class Poisoned(nn.Module):
    def __init__(self, value):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        with torch.no_grad():
            self.conv.bias.fill_(value)

    def forward(self, x):
        return self.conv(x)


class Exploding(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.drop = nn.Dropout()

    def forward(self, x):
        self.drop(self.conv(x))
        raise RuntimeError("forward exploded at step 3")


def test_sound(feature_snapshot):
    feature_snapshot(make_model(), make_input(), layers=["0"])


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite(feature_snapshot, value):
    feature_snapshot(Poisoned(value), make_input(), layers=["conv"])


def test_empty_channels(feature_snapshot):
    feature_snapshot(make_model(), make_input(), layers=["0"], channels=[])


@pytest.mark.featviz(threshold=1.5)
def test_marker_threshold(feature_snapshot):
    feature_snapshot(make_model(), make_input(), layers=["0"])


def test_call_threshold(feature_snapshot):
    feature_snapshot(make_model(), make_input(), layers=["0"], threshold=-1.01)


@pytest.mark.parametrize("layers", [["conv"], None])
def test_forward_raises_and_model_is_restored(feature_snapshot, layers):
    model = Exploding()
    model.train()
    with pytest.raises(RuntimeError, match="forward exploded at step 3"):
        feature_snapshot(model, make_input(), layers=layers)
    assert model.training and model.conv.training and model.drop.training
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_forward_raises_shown(feature_snapshot):
    feature_snapshot(Exploding(), make_input(), layers=["conv"])
"""


def test_bad_inputs_fail_their_own_test(featviz_pytester: pytest.Pytester) -> None:
    featviz_pytester.makepyfile(featviz_models=MODELS, test_bad=BAD_INPUT_TESTS)
    result = featviz_pytester.runpytest("--featviz-update")
    result.assert_outcomes(passed=3, failed=5, errors=1)  # a bad marker fails the fixture's set-up
    result.stdout.fnmatch_lines_random(
        [
            "*FeatvizError: layer 'conv' produced 72 NaN or Inf value(s) among the 72 values kept*",
            "*FeatvizError: feature_snapshot(): channels is an empty list: select at least one channel",
            "*FeatvizError: @pytest.mark.featviz: threshold is an SSIM score and must lie in [[]-1, 1[]]; got 1.5",
            "*FeatvizError: feature_snapshot(): threshold is an SSIM score and must lie in [[]-1, 1[]]; got -1.01",
            "E       RuntimeError: forward exploded at step 3",
        ]
    )
    golden = featviz_pytester.path / "golden" / "test_bad"
    assert sorted(p.name for p in golden.iterdir()) == ["test_sound"]  # nothing written for the failing tests


@pytest.mark.parametrize(
    ("args", "ini"),
    [(["--featviz-threshold", "1.5"], ""), (["--featviz-threshold", "nan"], ""), ([], "featviz_threshold = -2\n")],
    ids=["cli", "cli-nan", "ini"],
)
def test_threshold_outside_range_is_a_usage_error(featviz_pytester: pytest.Pytester, args: list[str], ini: str) -> None:
    featviz_pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\n" + ini)
    featviz_pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    result = featviz_pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    source = "tox.ini: featviz_threshold" if ini else "--featviz-threshold"
    result.stderr.fnmatch_lines([f"ERROR: {source} *"])
    assert not (featviz_pytester.path / "golden").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["--featviz-report-dir", "golden"],
        ["--featviz-report-dir", "golden/report"],
        ["--featviz-golden-dir", "featviz-report/g"],
    ],
)
def test_a_report_directory_overlapping_the_goldens_is_a_usage_error(
    featviz_pytester: pytest.Pytester, args: list[str]
) -> None:
    featviz_pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    (featviz_pytester.path / "golden").mkdir()
    (featviz_pytester.path / "link").symlink_to(featviz_pytester.path / "golden")  # the same directory by a link
    result = featviz_pytester.runpytest("--featviz-report-dir", "link/report")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result = featviz_pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: the featviz report directory * and the golden directory * overlap: *"])


# -- faults during --featviz-update ---------------------------------------------------------------------------------

HANG_CONFTEST = """
import os
import time
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def hang_mid_write(monkeypatch):
    from pytest_featviz import durable

    after = int(os.environ["FEATVIZ_HANG_AFTER"])
    real = durable._write_file
    count = []

    def write(path, data):
        real(path, data)
        count.append(path)
        if len(count) == after:
            Path(os.environ["FEATVIZ_READY"]).write_text(str(path))
            time.sleep(300)

    monkeypatch.setattr(durable, "_write_file", write)
"""


@pytest.mark.parametrize("after", [1, 3], ids=["after-first-picture", "after-sidecar"])
def test_killed_update_leaves_the_old_golden(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, after: int
) -> None:
    old = _files(project.path / "golden")
    project.makeconftest(HANG_CONFTEST)
    ready = project.path / "ready"
    env = dict(os.environ, FEATVIZ_HANG_AFTER=str(after), FEATVIZ_READY=str(ready), FEATVIZ_TEST_SEED="5")
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--featviz-update", "test_two.py"]
    process = subprocess.Popen(command, cwd=project.path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ready.exists(), "the update never reached the write that hangs"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert "featviz-new-" in ready.read_text()  # it was killed while writing into the hidden staging directory
    after_kill = _files(project.path / "golden")
    visible = {k: v for k, v in after_kill.items() if not any(part.startswith(".") for part in k.split("/"))}
    assert visible == old  # every golden is the old one, byte for byte
    assert after_kill.keys() - old.keys()  # the half-built new snapshot, hidden
    assert all(
        k.startswith(f"{TARGET.parent.as_posix()[len('golden/') :]}/.0.featviz-new-")
        for k in after_kill.keys() - old.keys()
    )
    (project.path / "conftest.py").unlink()
    ready.unlink()
    project.runpytest().assert_outcomes(passed=2)  # the leftover does not disturb a check
    monkeypatch.setenv("FEATVIZ_TEST_SEED", "5")
    result = project.runpytest("--featviz-update")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["goldens: 0 created, 1 updated, 1 unchanged*"])
    project.runpytest().assert_outcomes(passed=2)
    assert sorted(p.name for p in (project.path / TARGET).parent.iterdir()) == ["0"]  # leftover removed


FAULT_CONFTEST = """
import errno
import os

import pytest


@pytest.fixture(autouse=True)
def fault(monkeypatch):
    from pytest_featviz import durable

    kind = os.environ["FEATVIZ_FAULT"]
    if kind == "enospc":
        real = durable._write_file

        def write(path, data):
            if path.name == "2.png":
                with path.open("xb") as stream:
                    stream.write(data[:10])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real(path, data)

        monkeypatch.setattr(durable, "_write_file", write)
    else:
        def refuse(source, target):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(target))

        monkeypatch.setattr(durable.os, "replace", refuse)
"""


@pytest.mark.parametrize(
    ("fault", "message"),
    [("enospc", "[[]Errno 28[]] No space left on device"), ("erofs", "[[]Errno 30[]] Read-only file system: *")],
    ids=["enospc", "erofs"],
)
def test_failed_write_names_the_path_and_leaves_no_partial_files(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, fault: str, message: str
) -> None:
    old = _files(project.path / "golden")
    project.makeconftest(FAULT_CONFTEST)
    monkeypatch.setenv("FEATVIZ_FAULT", fault)
    monkeypatch.setenv("FEATVIZ_TEST_SEED", "5")
    (project.path / "golden" / "test_two" / "test_sound").rename(project.path / "sound-aside")
    result = project.runpytest("--featviz-update")
    result.assert_outcomes(failed=2)  # the missing golden cannot be created, the drifted one not rewritten
    # each keeps the verdict of its check, the reason it was not written first
    result.stdout.fnmatch_lines(
        [
            f"*FeatureDriftError: cannot write golden snapshot {TARGET.as_posix()}: {message}; the golden there was"
            " left as*"
        ]
    )
    result.stdout.fnmatch_lines(
        [f"*GoldenMissingError: cannot write golden snapshot */test_sound/0: {message}; nothing was written"]
    )
    # the command in the message is the one just run: it writes the golden only once the reason is dealt with
    note = "*(once that is fixed, the same run writes it)"
    result.stdout.fnmatch_lines([note, "*accept it with:  pytest --featviz-update test_two.py::test_target"])
    result.stdout.fnmatch_lines([note, "*create it with:  pytest --featviz-create test_two.py::test_sound"])
    left = _files(project.path / "golden")
    assert left == {k: v for k, v in old.items() if "test_sound" not in k}  # no partial file, old golden intact
    assert not (project.path / "golden" / "test_two" / "test_sound").exists()  # nor the new golden's empty folder
    monkeypatch.setenv("FEATVIZ_TEST_SEED", "0")
    (project.path / "conftest.py").unlink()
    result = project.runpytest("-rf")
    result.assert_outcomes(passed=1, failed=1)  # the old target golden still matches; test_sound is missing
    result.stdout.fnmatch_lines(["*GoldenMissingError: no golden for snapshot '0' of test_two.py::test_sound*"])


# -- parallel runs ----------------------------------------------------------------------------------------------

PARALLEL_TESTS = """
import pytest
from featviz_models import make_input, make_model


@pytest.mark.parametrize("seed", range(4))
def test_many(feature_snapshot, seed):
    feature_snapshot(make_model(seed), make_input(), layers=["0", "2"])
    feature_snapshot(make_model(seed), make_input(), layers=["1"], name="relu")
"""


def test_parallel_update_and_check_match_a_serial_run(featviz_pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    featviz_pytester.makepyfile(featviz_models=MODELS, test_par=PARALLEL_TESTS, test_par2=PARALLEL_TESTS)
    serial = featviz_pytester.runpytest("--featviz-update", "--featviz-golden-dir", "serial")
    serial.assert_outcomes(passed=8)
    result = featviz_pytester.runpytest("--featviz-update", "-n", "2")
    result.assert_outcomes(passed=8)
    result.stdout.fnmatch_lines(["goldens: 16 created, 0 updated, 0 unchanged*"])
    parallel = _files(featviz_pytester.path / "golden")
    assert parallel == _files(featviz_pytester.path / "serial")  # same files, same bytes
    assert len([k for k in parallel if k.endswith("snapshot.json")]) == 16
    assert not [k for k in parallel if "/." in "/" + k]  # no leftovers of the shared directories
    stamps = {p: p.stat().st_mtime_ns for p in (featviz_pytester.path / "golden").rglob("*")}
    result = featviz_pytester.runpytest("-n", "2")
    result.assert_outcomes(passed=8)
    result.stdout.fnmatch_lines(["16 snapshot(s) checked: 16 matched, 0 drifted*"])
    assert {p: p.stat().st_mtime_ns for p in (featviz_pytester.path / "golden").rglob("*")} == stamps


UNBATCHED_TESTS = """
import pytest
import torch
from torch import nn


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3)).eval()


@pytest.mark.parametrize("layers", [None, ["2"]])
def test_one_sample(feature_snapshot, layers):
    feature_snapshot(model(), torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1)), layers=layers)


def test_batched(feature_snapshot):
    feature_snapshot(model(), torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)))
"""


def test_a_conv_net_given_one_sample_without_a_batch_fails_its_test_and_writes_nothing(
    featviz_pytester: pytest.Pytester,
) -> None:
    # dimension 0 of its outputs is the channels: a golden of "batch item 0" held channel 0 alone, and a change of
    # every other filter passed
    featviz_pytester.makepyfile(test_unbatched=UNBATCHED_TESTS)
    result = featviz_pytester.runpytest("--featviz-update")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(
        [
            "E   *FeatvizError: layer '*' (output shape (8, *)): the model ran on one sample without a batch"
            " dimension: its convolution '0' took the input, of shape (3, 32, 32), which torch reads as (C, H, W);*"
        ]
        * 2
    )
    assert "Pass the input with a batch dimension: x.unsqueeze(0) (or x[None])" in result.stdout.str()
    golden = featviz_pytester.path / "golden" / "test_unbatched"
    assert sorted(p.name for p in golden.iterdir()) == ["test_batched"]


READ_ONLY_CONFTEST = """
import errno
import os

import pytest

from pytest_featviz import durable


@pytest.fixture(autouse=True)
def read_only_goldens(monkeypatch):
    if os.environ.get("FEATVIZ_TEST_READ_ONLY"):
        def refuse(directory, *args, **kwargs):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(directory))

        monkeypatch.setattr(durable, "switch_directory", refuse)
"""

READ_ONLY_TESTS = """
import os

import torch
from torch import nn


def snap(feature_snapshot, seed):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
    feature_snapshot(model, torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1)), layers=["2"])


def test_changed(feature_snapshot):
    snap(feature_snapshot, 5 if os.environ.get("FEATVIZ_TEST_DRIFT") else 0)


def test_same(feature_snapshot):
    snap(feature_snapshot, 1)


def test_new(feature_snapshot):
    if os.environ.get("FEATVIZ_TEST_DRIFT"):
        snap(feature_snapshot, 2)
"""


def _read_only_project(pytester: pytest.Pytester, *selection: str) -> None:
    """The project of READ_ONLY_TESTS with the goldens of the ``selection`` written; once FEATVIZ_TEST_READ_ONLY is
    set, no golden can be written (a read-only golden directory, as root would not see one)."""
    pytester.makeconftest(READ_ONLY_CONFTEST)
    pytester.makepyfile(test_ro=READ_ONLY_TESTS)
    assert pytester.runpytest("--featviz-update", *selection).ret == pytest.ExitCode.OK


@pytest.mark.parametrize("mode", ["--featviz-update", "--featviz-create"])
def test_goldens_that_cannot_be_written_keep_their_verdict_in_the_summary_and_the_report(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    # a read-only golden directory: the tests failed with the OS error, and the summary and the report knew nothing
    # of them (no count, no report: the drift's mosaics and current render were lost)
    _read_only_project(featviz_pytester)
    golden = featviz_pytester.path / "golden" / "test_ro"
    before = {p: p.read_bytes() for p in golden.rglob("*") if p.is_file()}
    monkeypatch.setenv("FEATVIZ_TEST_DRIFT", "1")
    monkeypatch.setenv("FEATVIZ_TEST_READ_ONLY", "1")
    result = featviz_pytester.runpytest(mode)
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(
        [
            "E   *cannot write golden snapshot *golden/test_ro/test_new/0: [[]Errno 30[]] Read-only file system*",
            "E   *no golden for snapshot '0' of test_ro.py::test_new (looked for golden/test_ro/test_new/0/*",
        ],
        consecutive=False,
    )
    if mode == "--featviz-update":  # a create run leaves a drift alone: it fails as in a check
        result.stdout.fnmatch_lines(
            [
                "E   *cannot write golden snapshot *golden/test_ro/test_changed/0: [[]Errno 30[]] Read-only file*",
                "E   *feature drift in snapshot '0' of test_ro.py::test_changed: 1 of 1 layer(s) drifted*",
                "3 snapshot(s) compared: 1 matched, 0 drifted, 0 without a golden (created), 2 not written (1 drifted,"
                " 1 missing)",
                "goldens: 0 created, 0 updated, 1 unchanged (in golden)",
                "2 golden snapshot(s) could not be written and were left as they were (each test's error says why):"
                " golden/test_ro/test_changed/0, golden/test_ro/test_new/0",
            ]
        )
    else:
        result.stdout.fnmatch_lines(
            [
                "3 snapshot(s) checked: 1 matched, 1 drifted (1 test(s), 1 layer(s)), 1 missing, 0 without a golden*",
                "goldens: 0 created (in golden)*",
                "1 golden snapshot(s) could not be written and were left as they were (each test's error says why):"
                " golden/test_ro/test_new/0",
            ]
        )
    data = json.loads((featviz_pytester.path / "featviz-report" / "report.json").read_text())
    outcomes = {s["test_id"]: s["outcome"] for s in data["snapshots"]}
    assert outcomes == {"test_ro.py::test_changed": "drifted", "test_ro.py::test_new": "missing"}
    unwritten = {s["test_id"] for s in data["snapshots"] if s.get("unwritten") is True}
    assert unwritten == ({"test_ro.py::test_new"} if mode == "--featviz-create" else set(outcomes))
    assert {p: p.read_bytes() for p in golden.rglob("*") if p.is_file()} == before


def test_a_damaged_golden_that_cannot_be_rewritten_stays_unreadable(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _read_only_project(featviz_pytester, "-k", "same")
    sidecar = featviz_pytester.path / "golden" / "test_ro" / "test_same" / "0" / "snapshot.json"
    sidecar.write_text(sidecar.read_text()[:40])
    monkeypatch.setenv("FEATVIZ_TEST_READ_ONLY", "1")
    result = featviz_pytester.runpytest("--featviz-update", "-k", "same")
    result.assert_outcomes(failed=1, deselected=2)
    result.stdout.fnmatch_lines(
        [
            "E   *GoldenError: golden sidecar golden/test_ro/test_same/0/snapshot.json *",
            "E   *--featviz-update could not re-create it: cannot write golden snapshot golden/test_ro/test_same/0:"
            " [[]Errno 30[]]*",
            "1 snapshot(s) compared: 0 matched, 0 drifted, 0 without a golden (created), 1 unreadable",
            "*golden/test_ro/test_same/0*",
        ]
    )
    assert sidecar.read_text().startswith("{") and len(sidecar.read_text()) == 40  # left as it was


def test_a_device_golden_that_cannot_be_written_is_the_one_named(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # with goldens keyed by device, a drift from the shared golden writes the device's own: that one could not be
    # written, and the summary named the shared one, which was never to be written
    _read_only_project(featviz_pytester, "-k", "changed")
    monkeypatch.setenv("FEATVIZ_TEST_DRIFT", "1")
    monkeypatch.setenv("FEATVIZ_TEST_READ_ONLY", "1")
    result = featviz_pytester.runpytest("--featviz-update", "-k", "changed", "-o", "featviz_golden_key=device")
    result.assert_outcomes(failed=1, deselected=2)
    result.stdout.fnmatch_lines(
        [
            "E   *cannot write golden snapshot golden/test_ro/test_changed/0@cpu: [[]Errno 30[]]*",
            "1 golden snapshot(s) could not be written and were left as they were (each test's error says why):"
            " golden/test_ro/test_changed/0@cpu",
        ]
    )


def test_a_damaged_picture_that_cannot_be_rewritten_stays_unreadable(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # it read as a drift, explained as "a code or dependency change"
    _read_only_project(featviz_pytester, "-k", "same")
    picture = next((featviz_pytester.path / "golden" / "test_ro" / "test_same" / "0").glob("*.png"))
    picture.write_bytes(b"garbage")
    monkeypatch.setenv("FEATVIZ_TEST_READ_ONLY", "1")
    result = featviz_pytester.runpytest("--featviz-update", "-k", "same")
    result.assert_outcomes(failed=1, deselected=2)
    result.stdout.fnmatch_lines(
        [
            "E   *GoldenError: golden picture golden/test_ro/test_same/0/*.png *",
            "E   *--featviz-update could not re-create it: cannot write golden snapshot golden/test_ro/test_same/0:*",
            "1 snapshot(s) compared: 0 matched, 0 drifted, 0 without a golden (created), 1 unreadable",
        ]
    )
    assert "code or dependency change" not in result.stdout.str()
