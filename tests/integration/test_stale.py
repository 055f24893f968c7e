"""Stale goldens: reported at session end for test files that ran completely, deleted by ``--featviz-prune``, never
touched for test files that were deselected in part, stopped early, failed to collect or were not collected."""

from __future__ import annotations

import contextlib
import shlex
import shutil
import subprocess
from collections.abc import Callable
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
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU())


def make_input():
    torch.manual_seed(1)
    return torch.rand(1, 1, 6, 6)
"""

BEFORE = """
from featviz_models import make_input, make_model


def test_a(feature_snapshot):
    feature_snapshot(make_model(), make_input(), layers=["0"], name="keep")
    feature_snapshot(make_model(), make_input(), layers=["0"], name="drop")


def test_b(feature_snapshot):
    feature_snapshot(make_model(), make_input(), layers=["0"])


def test_c(feature_snapshot):
    feature_snapshot(make_model(), make_input(), layers=["0"])
"""

# test_b is gone and test_a no longer takes "drop"; test_c stays and may be told to fail or skip.
AFTER = """
import os
import pytest
from featviz_models import make_input, make_model


def test_a(feature_snapshot):
    feature_snapshot(make_model(), make_input(), layers=["0"], name="keep")


def test_c(feature_snapshot):
    if os.environ.get("FEATVIZ_C") == "fail":
        raise RuntimeError("test_c broke before its snapshot")
    if os.environ.get("FEATVIZ_C") == "skip":
        pytest.skip("not on this machine")
    feature_snapshot(make_model(), make_input(), layers=["0"])
"""

OTHER_BEFORE = """
from featviz_models import make_input, make_model


def test_o(feature_snapshot):
    feature_snapshot(make_model(), make_input(), layers=["0"])
"""

OTHER_AFTER = """
def test_plain():
    pass
"""

STALE = ["golden/test_st/test_a/drop", "golden/test_st/test_b/0"]
OTHER_STALE = "golden/test_other/test_o/0"


def _judged_nothing(result: pytest.RunResult) -> None:
    """A prune run that could judge no golden (no test file with goldens ran completely) deletes nothing, lists
    nothing as stale, and says it judged nothing: silent, it read as a prune that found nothing stale."""
    output = result.stdout.str()
    assert "stale golden snapshot" not in output
    assert "--featviz-prune judged no golden: no test file with goldens ran completely" in output


def _snapshots(root: Path) -> list[str]:
    return sorted(p.parent.relative_to(root).as_posix() for p in root.rglob("snapshot.json"))


def _goldens(root: Path) -> list[str]:
    """:func:`_snapshots` of the golden directory alone (a missing golden's current render is in the report)."""
    return [snapshot for snapshot in _snapshots(root) if snapshot.startswith("golden/")]


@pytest.fixture
def project(featviz_pytester: pytest.Pytester) -> pytest.Pytester:
    featviz_pytester.makepyfile(featviz_models=MODELS, test_st=BEFORE, test_other=OTHER_BEFORE)
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=4)
    featviz_pytester.makepyfile(test_st=AFTER, test_other=OTHER_AFTER)
    return featviz_pytester


ALL = ["golden/test_other/test_o/0", "golden/test_st/test_a/drop", "golden/test_st/test_a/keep"]
ALL += ["golden/test_st/test_b/0", "golden/test_st/test_c/0"]


UNDELETABLE = """
import errno
import os
from pathlib import Path

_unlink = Path.unlink


def pytest_configure(config):
    def refuse(self, *args, **kwargs):
        if "golden" in self.parts:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return _unlink(self, *args, **kwargs)

    Path.unlink = refuse


def pytest_unconfigure(config):
    Path.unlink = _unlink
"""


def test_a_prune_that_cannot_delete_fails_the_run(project: pytest.Pytester) -> None:
    # a read-only golden directory: "could not delete" was printed, with the absolute path, and the run passed
    project.makeconftest(UNDELETABLE)
    result = project.runpytest("--featviz-prune")
    result.assert_outcomes(passed=3)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "0 stale golden snapshot(s) deleted*",
            "could not delete golden/test_other/test_o/0: [[]Errno 30[]] Read-only file system:"
            " 'golden/test_other/test_o/0/*.png'",
            "could not delete golden/test_st/test_a/drop: *",
            "could not delete golden/test_st/test_b/0: *",
            "  (the run fails for it: a prune that deleted less than it found must not pass)",
        ]
    )
    assert _snapshots(project.path) == ALL


def test_stale_goldens_are_reported_then_pruned(project: pytest.Pytester) -> None:
    assert _snapshots(project.path) == ALL
    project.makeini("[pytest]\naddopts = -p no:cacheprovider\nfeatviz_golden_key = device\n")
    keep = project.path / "golden" / "test_st" / "test_a" / "keep"
    keyed = keep.with_name("keep@cuda")  # an environment-keyed golden, used on another machine
    keyed.mkdir()
    (keyed / "0.png").write_bytes((keep / "0.png").read_bytes())
    sidecar = (keep / "snapshot.json").read_text()
    assert '"device": "cpu"' in sidecar
    (keyed / "snapshot.json").write_text(sidecar.replace('"device": "cpu"', '"device": "cuda"'))
    unrelated = project.path / "golden" / "test_st" / "notes"
    unrelated.mkdir()
    (unrelated / "README.txt").write_text("not a snapshot")
    result = project.runpytest()
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        [
            "*= featviz stale goldens =*",
            "3 stale golden snapshot(s) that no executed test used (2 test file(s) with goldens that ran completely"
            " checked):",
            f"  {OTHER_STALE}",
            f"  {STALE[0]}",
            f"  {STALE[1]}",
            "delete them with:  pytest --featviz-prune",
        ]
    )
    assert _snapshots(project.path) == sorted([*ALL, "golden/test_st/test_a/keep@cuda"])  # reporting deletes nothing

    result = project.runpytest("--featviz-prune")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        [
            "3 stale golden snapshot(s) deleted, no executed test used them (2 test file(s) with goldens that ran"
            " completely checked):"
        ]
    )
    assert _snapshots(project.path) == [
        "golden/test_st/test_a/keep",
        "golden/test_st/test_a/keep@cuda",
        "golden/test_st/test_c/0",
    ]
    assert not (project.path / "golden" / "test_st" / "test_b").exists()  # emptied parents go
    assert not (project.path / "golden" / "test_other").exists()
    assert (unrelated / "README.txt").read_text() == "not a snapshot"  # not a snapshot directory: kept

    result = project.runpytest("--featviz-prune")
    result.assert_outcomes(passed=3)
    assert "stale golden" not in result.stdout.str()


TEST_D = """

def test_d(feature_snapshot):
    feature_snapshot(make_model(2), make_input(), layers=["0"])
"""

PARAMETRIZED = """
import pytest
from featviz_models import make_input, make_model


@pytest.mark.parametrize("seed", [1, 2])
def test_p(feature_snapshot, seed):
    feature_snapshot(make_model(seed), make_input(), layers=["0"])
"""


@pytest.mark.parametrize("rename", ["test", "file", "moved file", "merged files", "parametrized test"])
def test_the_goldens_of_a_renamed_test_are_offered_as_a_move_not_a_new_golden(
    featviz_pytester: pytest.Pytester, rename: str
) -> None:
    # A renamed test or test file read as missing goldens (create them) and stale ones (prune them), with nothing
    # linking the two: following both re-made its goldens from the code as it is now, never compared with the old.
    # (a test file left in the folder the moved one came from: orphans are looked for where test files were collected)
    two = BEFORE.split("\n\n\n", 1)[0] + TEST_D  # its imports and test_d
    files = {"featviz_models": MODELS, "test_st": BEFORE, "test_plain": "def test_plain():\n    pass\n"}
    featviz_pytester.makepyfile(**files, test_two=two, test_par=PARAMETRIZED)
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=7)
    path = featviz_pytester.path
    source = path / "test_st.py"
    if rename == "test":
        source.write_text(BEFORE.replace("def test_b(", "def test_bee("))
        moves = ["git mv golden/test_st/test_b golden/test_st/test_bee"]
    elif rename == "file":
        source.rename(path / "test_renamed.py")
        moves = ["git mv golden/test_st golden/test_renamed"]
    elif rename == "moved file":
        featviz_pytester.mkdir("suite")
        source.rename(path / "suite" / "test_st.py")
        (path / "suite" / "featviz_models.py").write_text(MODELS)  # importable beside it
        moves = ["mkdir -p golden/suite && git mv golden/test_st golden/suite/test_st"]
    elif rename == "merged files":
        # two whole-folder moves into one new folder: the second put test_two's folder inside test_all's
        (path / "test_all.py").write_text(BEFORE + TEST_D)
        source.unlink()
        (path / "test_two.py").unlink()
        moves = ["mkdir -p golden/test_all && git mv golden/test_st/test_a golden/test_all/test_a"]
        moves += [f"mkdir -p golden/test_all && git mv golden/{f}/{t} golden/test_all/{t}" for f, t in (
            ("test_st", "test_b"), ("test_st", "test_c"), ("test_two", "test_d"))]  # fmt: skip
    else:  # each parameter set's folder to its own: every one matched every other before
        (path / "test_par.py").write_text(PARAMETRIZED.replace("def test_p(", "def test_q("))
        moves = [f"git mv 'golden/test_par/test_p[[]{n}]' 'golden/test_par/test_q[[]{n}]'" for n in (1, 2)]
    result = featviz_pytester.runpytest()
    result.stdout.fnmatch_lines(
        [
            "some look like the goldens of a renamed or moved test whose goldens are now missing: move them rather"
            " than create new ones, so that they are compared (then run again):",
            *(f"  {move}" for move in moves),
            "a prune deletes none of them now: each is kept for the reason above",  # its command would delete none
            "create the missing goldens with:  pytest --featviz-create *",  # said below, but pointing up
            "  but where a test was renamed or moved, move its goldens instead (the git mv in the stale section"
            " above), so that they are compared",
        ]
    )
    lines = result.outlines
    start = next(n for n, line in enumerate(lines) if line.startswith("some look like")) + 1
    for line in lines[start : start + len(moves)]:  # the printed commands, as pasted (mv: no git repository here)
        subprocess.run(line.strip().replace("git mv", "mv"), shell=True, cwd=path, check=True)  # noqa: S602
    result = featviz_pytester.runpytest()
    result.assert_outcomes(passed=7)
    result.stdout.fnmatch_lines(["7 snapshot(s) checked: 7 matched, 0 drifted (0 test(s), 0 layer(s)), 0 missing"])
    assert "stale golden" not in result.stdout.str(), result.stdout.str()


RENAMED_FILE = """
import pytest
from featviz_models import make_input, make_model


def test_one(feature_snapshot):
    feature_snapshot(make_model(), make_input(), layers=["0"])


def test_two(feature_snapshot):
    feature_snapshot(make_model(3), make_input(), layers=["0"])


@pytest.mark.parametrize("seed", [1, 2])
def test_param(feature_snapshot, seed):
    feature_snapshot(make_model(seed), make_input(), layers=["0"])
"""


def test_prune_keeps_the_goldens_of_a_renamed_test_and_gives_their_move(featviz_pytester: pytest.Pytester) -> None:
    """--featviz-prune deleted the goldens the stale section had just paired with a renamed test's missing ones, and
    dropped the move: creating them then re-made them from the code as it is now, never compared with the old."""
    featviz_pytester.makepyfile(featviz_models=MODELS, test_c=RENAMED_FILE)
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=4)
    path = featviz_pytester.path
    (path / "test_c.py").rename(path / "test_c_renamed.py")
    old = ["golden/test_c/test_one/0", "golden/test_c/test_param[1]/0", "golden/test_c/test_param[2]/0"]
    old.insert(3, "golden/test_c/test_two/0")
    move = "mkdir -p golden/test_c_renamed && git mv golden/test_c/test_one golden/test_c_renamed/test_one"
    result = featviz_pytester.runpytest("-k", "one")
    result.assert_outcomes(failed=1, deselected=3)  # test_one's golden is missing under the new file's name
    result.stdout.fnmatch_lines(
        [
            "4 stale golden snapshot(s) that no executed test used*",
            *(f"  {snapshot}" for snapshot in old),
            "some look like the goldens of a renamed or moved test whose goldens are now missing: move them*",
            f"  {move}",
            "delete them with:  pytest --featviz-prune -k one",
            "  (it keeps the 3 golden snapshot(s) of deleted or renamed test files, since it leaves tests out as this"
            " run did; a prune run of every test deletes them too:  pytest --featviz-prune)",
            "  (it keeps the ones the git mv above moves, and deletes the others: move them first, then run again)",
        ],
        consecutive=True,
    )
    assert _goldens(path) == old
    # -k left the renamed file's other tests out: their goldens are no less theirs for that, and nothing pairs them
    result = featviz_pytester.runpytest("-k", "one", "--featviz-prune")
    result.assert_outcomes(failed=1, deselected=3)
    result.stdout.fnmatch_lines(
        [
            "0 stale golden snapshot(s) deleted, no executed test used them (*)",
            "1 stale golden snapshot(s) kept: they look like the goldens of a renamed or moved test whose goldens"
            " are now missing; move them rather than create new ones, so that they are compared (then run again):",
            f"  {move}",
            "3 stale golden snapshot(s) of deleted or renamed test files kept: this run left tests out (paths or"
            " node ids, a folder below the rootdir, -k, -m, --deselect, --ignore, a stop at -x, a module skipped or"
            " failing at import), and a renamed test among them would lose its goldens; prune in a run of every test"
            " (no paths) to delete them",
            "create the missing goldens with:  pytest --featviz-create *",
            "  but where a test was renamed or moved, move its goldens instead (the git mv in the stale section"
            " above), so that they are compared",
        ]
    )
    assert _goldens(path) == old
    subprocess.run(move.replace("git mv", "mv"), shell=True, cwd=path, check=True)  # noqa: S602  # as pasted
    result = featviz_pytester.runpytest("-k", "one")
    result.assert_outcomes(passed=1, deselected=3)
    result.stdout.fnmatch_lines(["1 snapshot(s) checked: 1 matched, 0 drifted (0 test(s), 0 layer(s)), 0 missing"])
    # run whole, prune pairs the other three with their missing goldens and keeps them for their moves
    result = featviz_pytester.runpytest("--featviz-prune")
    result.stdout.fnmatch_lines(["0 stale golden snapshot(s) deleted*", "3 stale golden snapshot(s) kept: *"])
    assert _goldens(path) == sorted([*old[1:], "golden/test_c_renamed/test_one/0"])


def test_a_create_run_that_prunes_keeps_the_goldens_it_made_anew_for_a_renamed_test(
    featviz_pytester: pytest.Pytester,
) -> None:
    """--featviz-create --featviz-prune after a rename created the renamed tests' goldens from the code as it is now
    and deleted the old ones: a drift in between was accepted unseen, and nothing said so."""
    featviz_pytester.makepyfile(featviz_models=MODELS, test_c=RENAMED_FILE)
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=4)
    path = featviz_pytester.path
    (path / "test_c.py").rename(path / "test_c_renamed.py")
    result = featviz_pytester.runpytest("--featviz-create", "--featviz-prune")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(
        [
            "0 stale golden snapshot(s) deleted*",
            "4 stale golden snapshot(s) kept: they look like the goldens of a renamed or moved test, for which this"
            " run created new goldens without comparing them with these; to compare, put each in place of the new"
            " one (then run again without creating goldens):",
            "  rm -rf golden/test_c_renamed/test_one/0 && git mv golden/test_c/test_one/0"
            " golden/test_c_renamed/test_one/0",
        ]
    )
    assert len(_goldens(path)) == 8
    # pasted (git mv as mv: no repository here), the old golden is compared with the renamed test
    command = result.stdout.str().split("  rm -rf ", 1)[1].splitlines()[0]
    subprocess.run(f"rm -rf {command}".replace("git mv", "mv"), shell=True, cwd=path, check=True)  # noqa: S602
    assert "golden/test_c/test_one/0" not in _goldens(path) and len(_goldens(path)) == 7
    featviz_pytester.runpytest().assert_outcomes(passed=4)
    # a run named by its paths left the renamed file out: a prune keeps the deleted file's goldens
    (path / "test_other.py").write_text("def test_x():\n    pass\n")
    result = featviz_pytester.runpytest("test_other.py", "--featviz-prune")
    result.stdout.fnmatch_lines(["0 stale golden snapshot(s) deleted*", "3 stale golden snapshot(s) of deleted *"])
    assert len(_goldens(path)) == 7


def test_prune_keeps_nothing_when_no_missing_golden_pairs_with_a_stale_one(project: pytest.Pytester) -> None:
    result = project.runpytest("--featviz-prune")
    result.stdout.fnmatch_lines(["3 stale golden snapshot(s) deleted*"])
    assert "kept" not in result.stdout.str() and "git mv" not in result.stdout.str()


@pytest.mark.parametrize(
    "args",
    [
        ["-k", "test_a or test_plain"],
        ["--deselect", "test_st.py::test_c", "--deselect", "test_other.py::test_plain"],
        ["-m", "not slow"],
        ["test_st.py::test_a", "test_st.py::test_c", "test_other.py::test_plain"],
    ],
    ids=["-k", "--deselect", "-m-nothing-deselected", "node-ids"],
)
def test_partial_selection(project: pytest.Pytester, args: list[str]) -> None:
    result = project.runpytest("--featviz-prune", *args)
    if args[0] == "-m":  # nothing deselected: both files ran completely
        result.assert_outcomes(passed=3)
        result.stdout.fnmatch_lines(["3 stale golden snapshot(s) deleted*"])
        return
    if args[0] == "-k":  # test_c deselected: test_st.py did not run completely, test_other.py did
        result.assert_outcomes(passed=2, deselected=1)
        result.stdout.fnmatch_lines(["1 stale golden snapshot(s) deleted*", f"  {OTHER_STALE}"])
        assert _snapshots(project.path) == [s for s in ALL if s != OTHER_STALE]
        return
    # --deselect of one test in each file, or tests named by node id (the others were never collected)
    result.assert_outcomes(passed=3 if args[0] == "test_st.py::test_a" else 1)
    _judged_nothing(result)
    assert _snapshots(project.path) == ALL


def test_files_not_collected_are_never_touched(project: pytest.Pytester) -> None:
    result = project.runpytest("--featviz-prune", "test_other.py")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["1 stale golden snapshot(s) deleted, * (1 test file(s) with goldens that ran completely checked):"]
    )
    assert _snapshots(project.path) == [s for s in ALL if s != OTHER_STALE]


def test_stopped_early_and_collection_errors_are_not_complete(project: pytest.Pytester) -> None:
    project.makepyfile(test_other="import no_such_module_anywhere\n")
    result = project.runpytest("--featviz-prune", "--continue-on-collection-errors")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["2 stale golden snapshot(s) deleted*", f"  {STALE[0]}", f"  {STALE[1]}"])
    assert OTHER_STALE in _snapshots(project.path)  # the file that failed to collect keeps its goldens

    project.makepyfile(test_other=OTHER_AFTER)
    project.makepyfile(test_aaa="def test_first():\n    assert False\n")
    result = project.runpytest("--featviz-prune", "-x")
    result.assert_outcomes(failed=1)
    _judged_nothing(result)
    assert OTHER_STALE in _snapshots(project.path)


@pytest.mark.parametrize("mode", ["--setup-only", "--setup-plan", "--collect-only", "--lf", "--sw"])
def test_setup_only_runs_no_test_body_and_judges_nothing_stale(project: pytest.Pytester, mode: str) -> None:
    result = project.runpytest("--featviz-prune", mode)
    assert result.ret == 0
    assert "stale golden snapshot" not in result.stdout.str()
    assert _snapshots(project.path) == ALL
    # asked to prune, it says why it judged nothing: silent, --lf or --sw read as a prune that found nothing stale
    why = "leaves tests out unseen, and an unused golden may be theirs" if mode in ("--lf", "--sw") else "runs no test"
    result.stdout.fnmatch_lines([f"--featviz-prune judged no golden: {mode} {why}*; prune in a run of every test"])
    assert "judged no golden" not in project.runpytest(mode).stdout.str()  # said only where a prune was asked for


@pytest.mark.parametrize("outcome", ["fail", "skip"])
def test_failed_or_skipped_test_keeps_its_goldens(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, outcome: str
) -> None:
    monkeypatch.setenv("FEATVIZ_C", outcome)
    result = project.runpytest("--featviz-prune")
    if outcome == "fail":
        result.assert_outcomes(passed=2, failed=1)
    else:
        result.assert_outcomes(passed=2, skipped=1)
    result.stdout.fnmatch_lines(["3 stale golden snapshot(s) deleted*"])
    assert _snapshots(project.path) == ["golden/test_st/test_a/keep", "golden/test_st/test_c/0"]


def test_prune_under_xdist(project: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    result = project.runpytest("-n", "2", "-k", "test_a or test_c", "--featviz-prune")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "2 stale golden snapshot(s) deleted, no executed test used them (1 test file(s) with goldens that ran*",
            f"  {STALE[0]}",
            f"  {STALE[1]}",
        ]
    )
    assert _snapshots(project.path) == [OTHER_STALE, "golden/test_st/test_a/keep", "golden/test_st/test_c/0"]
    result = project.runpytest("-n", "2", "--featviz-prune")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["1 stale golden snapshot(s) deleted, *", f"  {OTHER_STALE}"])
    assert _snapshots(project.path) == ["golden/test_st/test_a/keep", "golden/test_st/test_c/0"]


def test_a_used_snapshot_whose_name_holds_an_at_sign_is_not_stale(featviz_pytester: pytest.Pytester) -> None:
    featviz_pytester.makepyfile(
        featviz_models=MODELS,
        test_at="""
        from featviz_models import make_input, make_model


        def test_at(feature_snapshot):
            feature_snapshot(make_model(), make_input(), layers=["0"], name="conv@Stage-2")
        """,
    )
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=1)
    assert _snapshots(featviz_pytester.path) == ["golden/test_at/test_at/conv@Stage-2"]
    result = featviz_pytester.runpytest("--featviz-prune")
    result.assert_outcomes(passed=1)
    assert "stale golden" not in result.stdout.str()
    assert _snapshots(featviz_pytester.path) == ["golden/test_at/test_at/conv@Stage-2"]


@pytest.mark.parametrize(
    ("name", "keys"),
    [("enc@fp16", "device"), ("enc@cpu", "none")],
    ids=["no-device-name-keys-on", "its-own-device-keys-off"],
)
def test_a_snapshot_named_like_a_device_keyed_golden_does_not_hide_a_stale_one(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, name: str, keys: str
) -> None:
    # With keys on, enc@fp16 was made on the cpu, not on an "fp16" device; with keys off, enc@cpu (a plausible
    # name=f"enc@{device}") is a snapshot of its own even though it was made on the cpu.
    featviz_pytester.makeini(f"[pytest]\naddopts = -p no:cacheprovider\nfeatviz_golden_key = {keys}\n")
    featviz_pytester.makepyfile(
        featviz_models=MODELS,
        test_at=f"""
        import os
        from featviz_models import make_input, make_model


        def test_at(feature_snapshot):
            if not os.environ.get("FEATVIZ_DROP"):
                feature_snapshot(make_model(), make_input(), layers=["0"], name="enc")
            feature_snapshot(make_model(), make_input(), layers=["0"], name="{name}")
        """,
    )
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=1)
    monkeypatch.setenv("FEATVIZ_DROP", "1")
    result = featviz_pytester.runpytest("--featviz-prune")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["1 stale golden snapshot(s) deleted*", "  golden/test_at/test_at/enc"])
    assert _snapshots(featviz_pytester.path) == [f"golden/test_at/test_at/{name}"]


@pytest.mark.parametrize("flag", ["--sw", "--sw-skip"])
def test_a_stepwise_run_judges_nothing(project: pytest.Pytester, flag: str) -> None:
    """Which tests a --sw run takes depends on the last run's failure, which no printed prune command can repeat."""
    project.makeini("[pytest]\n")  # with the cache provider, which --sw needs
    result = project.runpytest(flag, "--featviz-prune")
    result.assert_outcomes(passed=3)
    assert "stale golden snapshot" not in result.stdout.str()
    result.stdout.fnmatch_lines([f"--featviz-prune judged no golden: {flag} leaves tests out unseen*"])
    assert _snapshots(project.path) == ALL
    project.runpytest().stdout.fnmatch_lines(["* stale golden snapshot(s)*"])  # the same run without it judges


def test_last_failed_and_a_conftest_filter_leave_files_incomplete(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # --lf drops the passing tests of a file while collecting it, and no hook says so
    project.makeini("[pytest]\n")  # with the cache provider, which --lf needs
    monkeypatch.setenv("FEATVIZ_C", "fail")
    project.runpytest().assert_outcomes(passed=2, failed=1)
    monkeypatch.delenv("FEATVIZ_C")
    result = project.runpytest("--lf", "--featviz-prune")
    result.assert_outcomes(passed=1)
    assert "stale golden snapshot" not in result.stdout.str()
    result.stdout.fnmatch_lines(["--featviz-prune judged no golden: --lf leaves tests out unseen*"])
    assert _snapshots(project.path) == ALL
    # a conftest that filters the items itself, without pytest_deselected, in a wrapper around every other hook
    project.makeconftest(
        "import pytest\n\n\n@pytest.hookimpl(wrapper=True)\ndef pytest_collection_modifyitems(items):\n"
        "    result = yield\n    items[:] = [i for i in items if i.name != 'test_c']\n    return result\n"
    )
    result = project.runpytest("--featviz-prune")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["1 stale golden snapshot(s) deleted*", f"  {OTHER_STALE}"])
    assert _snapshots(project.path) == [s for s in ALL if s != OTHER_STALE]


REPEATED = """
import pytest
from featviz_models import make_input, make_model


@pytest.mark.parametrize("run", ["1-2", "2-2"])  # what pytest-repeat's --count=2 makes of test_a
def test_a(feature_snapshot, run):
    feature_snapshot(make_model(), make_input(), layers=["0"])


class TestC:
    @pytest.mark.parametrize("run", ["u-1-2"])  # of TestC.test_q[u]
    def test_q(self, feature_snapshot, run):
        feature_snapshot(make_model(), make_input(), layers=["0"])
"""

REPEATED_BEFORE = (
    BEFORE.replace("test_b", "test_x")
    + """

import pytest


class TestC:
    @pytest.mark.parametrize("run", ["u"])
    def test_q(self, feature_snapshot, run):
        feature_snapshot(make_model(), make_input(), layers=["0"])
"""
)


def test_a_failing_variant_of_a_test_function_keeps_the_functions_goldens(featviz_pytester: pytest.Pytester) -> None:
    featviz_pytester.makepyfile(featviz_models=MODELS, test_rep=REPEATED_BEFORE)
    featviz_pytester.runpytest("--featviz-update", "test_rep.py").assert_outcomes(passed=4)
    featviz_pytester.makepyfile(test_rep=REPEATED)
    result = featviz_pytester.runpytest("--featviz-prune", "test_rep.py")
    result.assert_outcomes(failed=3)  # no golden for test_a[1-2], test_a[2-2] and TestC.test_q[u-1-2]
    # test_x and test_c: no such function now, but a test of their file misses its goldens, which may be theirs
    result.stdout.fnmatch_lines(
        ["0 stale golden snapshot(s) deleted*", "2 stale golden snapshot(s) kept: a renamed or moved test may*"]
    )
    assert _snapshots(featviz_pytester.path / "golden") == [
        "test_rep/TestC.test_q[u]/0",
        "test_rep/test_a/drop",
        "test_rep/test_a/keep",
        "test_rep/test_c/0",
        "test_rep/test_x/0",
    ]


IN_TEARDOWN = """
import pytest
from featviz_models import make_input, make_model


@pytest.fixture
def checked(feature_snapshot):
    feature_snapshot(make_model(), make_input(), layers=["0"], name="in-setup")
    yield
    feature_snapshot(make_model(), make_input(), layers=["0"], name="in-teardown")


def test_uses_fixture(checked):
    pass
"""


def test_a_snapshot_in_a_fixture_teardown_is_counted_and_not_stale(featviz_pytester: pytest.Pytester) -> None:
    featviz_pytester.makepyfile(featviz_models=MODELS, test_fx=IN_TEARDOWN)
    result = featviz_pytester.runpytest("--featviz-update", "--featviz-prune")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["goldens: 2 created, 0 updated, 0 unchanged*"])
    assert "stale golden" not in result.stdout.str()
    result = featviz_pytester.runpytest("--featviz-prune")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["2 snapshot(s) checked: 2 matched*"])
    assert "stale golden" not in result.stdout.str()
    assert _snapshots(featviz_pytester.path) == [
        "golden/test_fx/test_uses_fixture/in-setup",
        "golden/test_fx/test_uses_fixture/in-teardown",
    ]


def test_a_pruned_snapshot_directory_with_a_file_of_someone_elses_stays(project: pytest.Pytester) -> None:
    (project.path / "golden" / "test_st" / "test_b" / "0" / ".DS_Store").write_bytes(b"finder")
    # a folder named like a picture: prune failed on it ("Is a directory") after deleting the pictures, and left the
    # sidecar, so the golden read as damaged
    (project.path / "golden" / "test_st" / "test_b" / "0" / "x.png").mkdir()
    # a picture renamed by hand is one of its pictures, as an update takes it: prune left it as someone else's
    (project.path / "golden" / "test_st" / "test_b" / "0" / "renamed.PNG").write_bytes(b"\x89PNG\r\n\x1a\n")
    result = project.runpytest("--featviz-prune")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        [
            "3 stale golden snapshot(s) deleted*",
            "left the directory for files pytest-featviz did not write: *test_b/0: .DS_Store, x.png",
        ]
    )
    leftover = project.path / "golden" / "test_st" / "test_b" / "0"
    assert sorted(p.name for p in leftover.iterdir()) == [".DS_Store", "x.png"]

    project.makepyfile(test_other=OTHER_BEFORE)
    project.runpytest("--featviz-update", "test_other.py").assert_outcomes(passed=1)
    for index in range(6):
        (project.path / OTHER_STALE / f"note{index}.txt").write_text("mine")
    project.makepyfile(test_other=OTHER_AFTER)
    result = project.runpytest("--featviz-prune", "test_other.py")
    result.stdout.fnmatch_lines(
        ["left the directory for files pytest-featviz did not write: *test_o/0: note0.txt, *, note4.txt and 1 more"]
    )


def test_prune_removes_what_killed_writes_left_beside_a_stale_snapshot(project: pytest.Pytester) -> None:
    leftover = project.path / "golden" / "test_st" / "test_b" / ".0.featviz-old-ab12cd34"  # from a killed update
    leftover.mkdir()
    (leftover / "0.png").write_bytes(b"the previous golden")
    project.runpytest("--featviz-prune").assert_outcomes(passed=3)
    assert not (project.path / "golden" / "test_st" / "test_b").exists()


def test_an_update_that_writes_nothing_still_removes_what_a_killed_write_left(project: pytest.Pytester) -> None:
    leftover = project.path / "golden" / "test_st" / "test_c" / ".0.featviz-new-zz99zz99"
    leftover.mkdir()
    (leftover / "0.png").write_bytes(b"half")
    project.runpytest("-k", "test_c").assert_outcomes(passed=1, deselected=2)
    assert leftover.is_dir()  # a check writes nothing, removes nothing
    result = project.runpytest("--featviz-update", "-k", "test_c")
    result.assert_outcomes(passed=1, deselected=2)
    result.stdout.fnmatch_lines(["goldens: 0 created, 0 updated, 1 unchanged*"])
    assert sorted(p.name for p in leftover.parent.iterdir()) == ["0"]


# -- goldens of test files that no longer exist or hold no test --


def test_goldens_of_a_deleted_or_renamed_test_file_are_stale(project: pytest.Pytester) -> None:
    # test_other.py renamed: its goldens name a file that is gone from a directory this run collected from
    (project.path / "test_other.py").rename(project.path / "test_renamed.py")
    result = project.runpytest()
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        [
            "3 stale golden snapshot(s) that no executed test used"
            " (1 test file(s) with goldens that ran completely and 1 deleted or renamed test file(s) checked):",
            f"  {STALE[0]}",
            f"  {STALE[1]}",
            f"  {OTHER_STALE}",
        ]
    )
    result = project.runpytest("--featviz-prune")
    result.stdout.fnmatch_lines(["3 stale golden snapshot(s) deleted*"])
    assert _snapshots(project.path) == ["golden/test_st/test_a/keep", "golden/test_st/test_c/0"]
    assert not (project.path / "golden" / "test_other").exists()


def test_goldens_whose_directory_is_not_on_disk_are_never_judged(featviz_pytester: pytest.Pytester) -> None:
    # A test directory deleted whole, a second golden directory kept inside this one and a copy of it, goldens
    # written under another rootdir: a golden path whose directories are not on disk cannot be told apart from one
    # another, so none is judged.
    featviz_pytester.makepyfile(featviz_models=MODELS)
    old = featviz_pytester.mkpydir("old")
    (old / "test_gone.py").write_text(OTHER_BEFORE)
    (featviz_pytester.path / "test_here.py").write_text(OTHER_BEFORE)
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=2)
    featviz_pytester.runpytest("--featviz-update", "--featviz-golden-dir", "golden/gpu").assert_outcomes(passed=2)
    shutil.copytree(featviz_pytester.path / "golden" / "gpu", featviz_pytester.path / "golden" / "gpu backup")
    shutil.rmtree(old)
    snapshots = _snapshots(featviz_pytester.path)
    assert "golden/old/test_gone/test_o/0" in snapshots and "golden/gpu/test_here/test_o/0" in snapshots
    result = featviz_pytester.runpytest("--featviz-prune")
    result.assert_outcomes(passed=1)
    assert "stale golden" not in result.stdout.str()
    assert _snapshots(featviz_pytester.path) == snapshots
    # goldens written under the rootdir above (tests/test_a.py) seen from a run whose rootdir is tests/
    project = featviz_pytester.mkdir("project")
    (project / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\nfeatviz_golden_dir = tests/golden\n")
    (project / "tests").mkdir()
    (project / "tests" / "featviz_models.py").write_text(MODELS)
    (project / "tests" / "test_a.py").write_text(OTHER_BEFORE)
    featviz_pytester.chdir()
    featviz_pytester.runpytest("--featviz-update", "project").assert_outcomes(passed=1)
    result = featviz_pytester.runpytest("--featviz-prune", "--rootdir", "project/tests", "project/tests")
    result.assert_outcomes(failed=1)  # its golden is looked for as tests/golden/test_a
    _judged_nothing(result)
    assert (project / "tests" / "golden" / "tests" / "test_a" / "test_o" / "0" / "snapshot.json").is_file()


def test_a_deleted_test_file_is_judged_only_where_the_run_collected(featviz_pytester: pytest.Pytester) -> None:
    featviz_pytester.makepyfile(featviz_models=MODELS, test_top=OTHER_BEFORE, test_keep=OTHER_BEFORE)
    sub = featviz_pytester.mkpydir("sub")
    (sub / "test_sub.py").write_text(OTHER_BEFORE)
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=3)
    (featviz_pytester.path / "test_top.py").unlink()
    # a run of sub/ collected no test file from the rootdir itself: test_top.py's goldens are not judged
    result = featviz_pytester.runpytest("--featviz-prune", "sub")
    result.assert_outcomes(passed=1)
    assert "stale golden" not in result.stdout.str()
    assert "golden/test_top/test_o/0" in _snapshots(featviz_pytester.path)
    # nor by runs that execute no test body
    for args in (["--collect-only"], ["--setup-plan"]):
        result = featviz_pytester.runpytest("--featviz-prune", *args)
        assert "stale golden snapshot" not in result.stdout.str()
        result.stdout.fnmatch_lines([f"--featviz-prune judged no golden: {args[0]} runs no test body*"])
    assert "golden/test_top/test_o/0" in _snapshots(featviz_pytester.path)
    # a run of one file of the rootdir collected from it: the goldens of its deleted neighbour are judged; a prune
    # run of that file alone would keep them (it leaves tests out), so the command is that of a run of every test
    result = featviz_pytester.runpytest("test_keep.py")
    result.stdout.fnmatch_lines(
        [
            "1 stale golden snapshot(s) that no executed test used*",
            "  golden/test_top/test_o/0",
            "delete them with:  pytest --featviz-prune",
            "  (a prune run deletes the goldens of deleted or renamed test files only when it runs every test: this"
            " run left tests out by paths, a folder below the rootdir, -k, -m, --deselect, --ignore, -x, a conftest or"
            " a module skipped at import; leave those out, from addopts too)",
        ],
        consecutive=True,
    )
    # that command drops what left tests out (--ignore, -x) and keeps the rest of what decides the collection
    result = featviz_pytester.runpytest("-x", "--ignore", "sub", "-W", "ignore::DeprecationWarning")
    result.stdout.fnmatch_lines(["delete them with:  pytest --featviz-prune -W ignore::DeprecationWarning"])
    # the command it gives keeps the options that locate the goldens
    featviz_pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\nfeatviz_golden_dir = elsewhere\n")
    result = featviz_pytester.runpytest("--featviz-golden-dir", "golden")
    result.stdout.fnmatch_lines(["delete them with:  pytest --featviz-prune --featviz-golden-dir=golden"])
    result = featviz_pytester.runpytest("--featviz-prune", "--featviz-golden-dir", "golden")
    result.stdout.fnmatch_lines(["1 stale golden snapshot(s) deleted*", "  golden/test_top/test_o/0"])


def test_the_prune_command_of_every_test_replaces_a_selection_addopts_give_and_testpaths_leave_nothing_out(
    featviz_pytester: pytest.Pytester,
) -> None:
    tests = featviz_pytester.mkdir("tests")
    (tests / "test_gone.py").write_text(OTHER_BEFORE)
    (tests / "test_keep.py").write_text(
        "import pytest\n" + OTHER_BEFORE + "\n\n@pytest.mark.slow\ndef test_slow():\n    pass\n"
    )
    (tests / "featviz_models.py").write_text(MODELS)
    featviz_pytester.makeini(
        "[pytest]\naddopts = -p no:cacheprovider -m 'not slow'\ntestpaths = tests\nmarkers = slow\n"
    )
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=2, deselected=1)
    (tests / "test_gone.py").unlink()
    # -m in addopts applies to the pasted command again: the command of every test gives an empty one after it
    result = featviz_pytester.runpytest()
    result.stdout.fnmatch_lines(
        ["  golden/tests/test_gone/test_o/0", "delete them with:  pytest --featviz-prune -m ''"]
    )
    featviz_pytester.runpytest("--featviz-prune", "-m", "").stdout.fnmatch_lines(
        ["1 stale golden snapshot(s) deleted*"]
    )
    assert not (featviz_pytester.path / "golden" / "tests" / "test_gone").exists()
    # the testpaths named on the command line leave nothing out: a prune run of them deletes a deleted file's goldens
    featviz_pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\ntestpaths = tests\n")
    (tests / "test_gone.py").write_text(OTHER_BEFORE)
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=3)
    (tests / "test_gone.py").unlink()
    result = featviz_pytester.runpytest("tests")
    result.stdout.fnmatch_lines(["delete them with:  pytest --featviz-prune tests"])
    assert "leaves tests out" not in result.stdout.str() and "only when it runs every" not in result.stdout.str()
    featviz_pytester.runpytest("--featviz-prune", "tests").stdout.fnmatch_lines(["1 stale golden snapshot(s) deleted*"])


def test_a_prune_run_from_a_folder_below_the_rootdir_or_stopped_early_keeps_a_moved_file_s_goldens(
    featviz_pytester: pytest.Pytester,
) -> None:
    """A test file moved to another folder: a prune run of its old folder alone (``cd tests && pytest .``, or no
    arguments there), or one that stopped at -x before the moved test ran, deleted its goldens, which nothing paired
    with the moved test's missing ones."""
    featviz_pytester.makepyfile(featviz_models=MODELS)
    tests, unit = featviz_pytester.mkdir("tests"), featviz_pytester.mkdir("unit")
    for folder, name in ((tests, "test_keep.py"), (tests, "test_old.py"), (unit, "test_u.py")):
        (folder / name).write_text(OTHER_BEFORE)
    featviz_pytester.syspathinsert()
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=3)
    (tests / "test_old.py").rename(unit / "test_new.py")
    old = featviz_pytester.path / "golden" / "tests" / "test_old" / "test_o" / "0"
    with contextlib.chdir(tests):
        for args in ([], ["."]):
            result = featviz_pytester.runpytest("--featviz-prune", *args)
            result.stdout.fnmatch_lines(["1 stale golden snapshot(s) of deleted or renamed test files kept: *"])
            assert old.is_dir()
    (tests / "test_fail.py").write_text("def test_f():\n    assert False\n")
    result = featviz_pytester.runpytest("-x", "--featviz-prune", "-p", "no:randomly")
    result.stdout.fnmatch_lines(["*stale golden snapshot(s) of deleted or renamed test files kept: *"])
    assert old.is_dir()
    (tests / "test_fail.py").unlink()
    result = featviz_pytester.runpytest()  # the whole run pairs the move
    result.stdout.fnmatch_lines(["  git mv golden/tests/test_old golden/unit/test_new"])


def test_the_prune_command_for_a_golden_dir_outside_the_project_runs_as_pasted(
    featviz_pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The command said ``--featviz-golden-dir /abs/goldens``: pytest finds the rootdir and ini file before it knows
    plugin options and took that existing directory for a test path, so the pasted command ran with another rootdir,
    without the project's ini, failed every test as missing its golden and deleted nothing."""
    outside = tmp_path_factory.mktemp("goldens")
    featviz_pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\nfeatviz_golden_dir = elsewhere\n")
    featviz_pytester.makepyfile(featviz_models=MODELS, test_st=BEFORE)
    featviz_pytester.runpytest("--featviz-update", f"--featviz-golden-dir={outside}").assert_outcomes(passed=3)
    featviz_pytester.makepyfile(test_st=AFTER)
    result = featviz_pytester.runpytest(f"--featviz-golden-dir={outside}")
    command = next(line for line in result.outlines if line.startswith("delete them with:  "))
    assert command == f"delete them with:  pytest --featviz-prune --featviz-golden-dir={outside}"
    pasted = featviz_pytester.runpytest(*shlex.split(command.removeprefix("delete them with:  "))[1:])
    pasted.assert_outcomes(passed=2)
    pasted.stdout.fnmatch_lines(["2 stale golden snapshot(s) deleted*"])
    assert sorted(p.parent.relative_to(outside).as_posix() for p in outside.rglob("snapshot.json")) == [
        "test_st/test_a/keep",
        "test_st/test_c/0",
    ]


def test_goldens_of_existing_uncollected_files_and_of_unknown_names_are_never_judged(
    featviz_pytester: pytest.Pytester,
) -> None:
    featviz_pytester.makepyfile(featviz_models=MODELS, test_plain=OTHER_BEFORE)
    featviz_pytester.syspathinsert()  # featviz_models, for the test files in "odd dir"
    (featviz_pytester.path / "test_odd name.py").write_text(OTHER_BEFORE)
    odd_dir = featviz_pytester.mkdir("odd dir")
    (odd_dir / "test_inner_a.py").write_text(OTHER_BEFORE)
    (odd_dir / "test_inner_b.py").write_text(OTHER_BEFORE)
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=4)
    snapshots = _snapshots(featviz_pytester.path)
    odd = next(s for s in snapshots if s.startswith("golden/test_odd_name-"))
    # files that exist but were not collected (an odd name found again through sanitize_name)
    result = featviz_pytester.runpytest("--featviz-prune", "--ignore", "test_odd name.py", "--ignore", "odd dir")
    result.assert_outcomes(passed=1)
    assert "stale golden" not in result.stdout.str()
    assert _snapshots(featviz_pytester.path) == snapshots
    # a deleted file whose name sanitize_name changed: the golden's name cannot say which file it was; a deleted
    # file in a directory whose name it changed is found through the directory on disk
    (featviz_pytester.path / "test_odd name.py").unlink()
    (odd_dir / "test_inner_b.py").unlink()
    result = featviz_pytester.runpytest("--featviz-prune")
    result.assert_outcomes(passed=2)
    inner_b = next(s for s in snapshots if s.endswith("/test_inner_b/test_o/0"))
    result.stdout.fnmatch_lines(["1 stale golden snapshot(s) deleted*", f"  {inner_b}"])
    assert odd in _snapshots(featviz_pytester.path)
    assert inner_b not in _snapshots(featviz_pytester.path)


def test_a_test_file_renamed_in_letter_case_leaves_its_old_goldens_stale(featviz_pytester: pytest.Pytester) -> None:
    # the case-collision failure says to prune the old golden directory: prune must find it
    featviz_pytester.makepyfile(featviz_models=MODELS, test_twice=OTHER_BEFORE)
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=1)
    (featviz_pytester.path / "test_twice.py").rename(featviz_pytester.path / "test_TWICE.py")
    result = featviz_pytester.runpytest("--featviz-prune")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*differs only in letter case*", "1 stale golden snapshot(s) deleted*"])
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=1)
    assert _snapshots(featviz_pytester.path) == ["golden/test_TWICE/test_o/0"]


def test_a_directory_differing_in_case_from_a_golden_s_is_not_taken_for_it(featviz_pytester: pytest.Pytester) -> None:
    featviz_pytester.makepyfile(featviz_models=MODELS)
    featviz_pytester.syspathinsert()
    (featviz_pytester.path / "tests").mkdir()
    (featviz_pytester.path / "tests" / "test_low.py").write_text(OTHER_BEFORE)
    (featviz_pytester.path / "Tests").mkdir()
    (featviz_pytester.path / "Tests" / "test_up.py").write_text(OTHER_AFTER)
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=2)
    snapshots = _snapshots(featviz_pytester.path)
    assert snapshots == ["golden/tests/test_low/test_o/0"]
    result = featviz_pytester.runpytest("--featviz-prune", "Tests")
    result.assert_outcomes(passed=1)
    _judged_nothing(result)
    assert _snapshots(featviz_pytester.path) == snapshots


def test_a_golden_root_outside_the_rootdir_is_never_judged_for_deleted_files(
    featviz_pytester: pytest.Pytester,
) -> None:
    # a golden directory beside the project may be shared with another one, whose files another rootdir names
    project = featviz_pytester.mkdir("project")
    (project / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\nfeatviz_golden_dir = ../shared\n")
    (project / "featviz_models.py").write_text(MODELS)
    (project / "test_a.py").write_text(OTHER_BEFORE)
    (project / "test_b.py").write_text(OTHER_BEFORE)
    featviz_pytester.chdir()
    featviz_pytester.runpytest("--featviz-update", "project").assert_outcomes(passed=2)
    (project / "test_b.py").unlink()
    result = featviz_pytester.runpytest("--featviz-prune", "project")
    result.assert_outcomes(passed=1)
    assert "stale golden" not in result.stdout.str()
    assert (featviz_pytester.path / "shared" / "test_b" / "test_o" / "0" / "snapshot.json").is_file()


def test_a_test_file_that_collects_no_test_keeps_its_goldens(project: pytest.Pytester) -> None:
    # no test left (the snapshot tests moved elsewhere), switched off (__test__ = False), skipped while importing,
    # or a test class pytest cannot collect (a PytestCollectionWarning): the file is not judged
    for body in (
        "HELPER = 1\n",
        "__test__ = False\n" + OTHER_BEFORE,
        "import pytest\npytest.importorskip('no_such_module_anywhere')\n",
    ):
        project.makepyfile(test_other=body)
        result = project.runpytest()
        result.stdout.fnmatch_lines(["2 stale golden snapshot(s) that no executed test used (1 test file(s)*"])
        assert OTHER_STALE not in result.stdout.str()
    project.makepyfile(
        test_other="""
        from featviz_models import make_input, make_model


        def test_plain():
            pass


        class TestO:
            def __init__(self):
                pass

            def test_o(self, feature_snapshot):
                feature_snapshot(make_model(), make_input(), layers=["0"])
        """
    )
    result = project.runpytest("--featviz-prune")
    result.assert_outcomes(passed=3, warnings=1)
    result.stdout.fnmatch_lines(["2 stale golden snapshot(s) deleted*", f"  {STALE[0]}", f"  {STALE[1]}"])
    assert OTHER_STALE in _snapshots(project.path)


def test_deleted_files_under_xdist(project: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    (project.path / "test_other.py").unlink()
    project.makepyfile(test_empty="HELPER = 1\n")
    result = project.runpytest("-n", "2", "--featviz-prune")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "3 stale golden snapshot(s) deleted, no executed test used them"
            " (1 test file(s) with goldens that ran completely and 1 deleted or renamed test file(s) checked):",
        ]
    )
    assert _snapshots(project.path) == ["golden/test_st/test_a/keep", "golden/test_st/test_c/0"]


def test_a_file_only_a_doctest_or_lint_collector_reached_is_not_judged(featviz_pytester: pytest.Pytester) -> None:
    # bench/bench_model.py is outside python_files, run by naming it; --doctest-modules and a lint plugin reach it
    featviz_pytester.makepyfile(featviz_models=MODELS, test_plain=OTHER_BEFORE)
    featviz_pytester.syspathinsert()
    (featviz_pytester.path / "bench").mkdir()
    (featviz_pytester.path / "bench" / "bench_model.py").write_text(OTHER_BEFORE)
    featviz_pytester.runpytest("--featviz-update", "bench/bench_model.py").assert_outcomes(passed=1)
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=1)
    snapshots = _snapshots(featviz_pytester.path)
    result = featviz_pytester.runpytest("--featviz-prune", "--doctest-modules")
    result.assert_outcomes(passed=1)
    assert "stale golden" not in result.stdout.str()
    featviz_pytester.makeconftest(
        """
        import pytest


        class Lint(pytest.Item):
            def runtest(self):
                pass


        class LintFile(pytest.File):
            def collect(self):
                yield Lint.from_parent(self, name="lint")


        def pytest_collect_file(file_path, parent):
            if file_path.suffix == ".py" and file_path.name != "conftest.py":
                return LintFile.from_parent(parent, path=file_path)
        """
    )
    result = featviz_pytester.runpytest("--featviz-prune")
    result.assert_outcomes(passed=4)  # test_plain's test and three lint items
    assert "stale golden" not in result.stdout.str()
    assert _snapshots(featviz_pytester.path) == snapshots


def test_a_test_parametrized_with_an_empty_list_keeps_the_goldens_of_its_parameters(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    featviz_pytester.makepyfile(
        featviz_models=MODELS,
        test_devices="""
        import os
        import pytest
        from featviz_models import make_input, make_model


        @pytest.mark.parametrize("device", os.environ.get("DEVICES", "").split())
        def test_p(feature_snapshot, device):
            feature_snapshot(make_model(), make_input(), layers=["0"])
        """,
    )
    monkeypatch.setenv("DEVICES", "cuda0 cuda1")
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=2)
    snapshots = _snapshots(featviz_pytester.path)
    monkeypatch.delenv("DEVICES")
    result = featviz_pytester.runpytest("--featviz-prune")
    result.assert_outcomes(skipped=1)  # test_p[NOTSET]
    assert "stale golden" not in result.stdout.str()
    assert _snapshots(featviz_pytester.path) == snapshots


def test_a_directory_named_like_a_sidecar_is_no_snapshot(project: pytest.Pytester) -> None:
    (project.path / "test_other.py").unlink()
    (project.path / "golden" / "test_other" / "test_o" / "odd" / "snapshot.json").mkdir(parents=True)
    result = project.runpytest("--featviz-prune")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["3 stale golden snapshot(s) deleted*"])
    assert "could not delete" not in result.stdout.str()


def test_an_argument_that_is_a_symbolic_link_loop_is_pytest_s_error_not_a_crash(project: pytest.Pytester) -> None:
    (project.path / "loop").symlink_to("loop")
    for arg in ("loop", "loop::test_x"):
        result = project.runpytest("--featviz-prune", arg)
        assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
        result.stderr.fnmatch_lines([f"ERROR: file or directory not found: {arg}"])
    assert _snapshots(project.path) == ALL


def test_goldens_of_a_nested_golden_directory_named_like_a_project_directory_are_kept(
    featviz_pytester: pytest.Pytester,
) -> None:
    # golden/cuda/ holds a second golden directory (--featviz-golden-dir golden/cuda) beside golden/cuda/ of the
    # project's own cuda/ tests: the directory names a file that is not there, the sidecar's record names one that is
    featviz_pytester.makepyfile(featviz_models=MODELS, test_top=OTHER_BEFORE)
    featviz_pytester.syspathinsert()
    (featviz_pytester.path / "cuda").mkdir()
    (featviz_pytester.path / "cuda" / "test_kernels.py").write_text(OTHER_BEFORE)
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=2)
    featviz_pytester.runpytest("--featviz-update", "--featviz-golden-dir", "golden/cuda").assert_outcomes(passed=2)
    snapshots = _snapshots(featviz_pytester.path)
    assert "golden/cuda/test_top/test_o/0" in snapshots and "golden/cuda/test_kernels/test_o/0" in snapshots
    for args in ([], ["--featviz-golden-dir", "golden/cuda"]):
        result = featviz_pytester.runpytest("--featviz-prune", *args)
        result.assert_outcomes(passed=2)
        assert "stale golden" not in result.stdout.str()
        assert _snapshots(featviz_pytester.path) == snapshots
    # a golden written before the test file was recorded is never judged
    (featviz_pytester.path / "test_top.py").rename(featviz_pytester.path / "test_renamed.py")
    sidecar = featviz_pytester.path / "golden" / "test_top" / "test_o" / "0" / "snapshot.json"
    text = sidecar.read_text()
    assert '  "test": {"file": "../../../../test_top.py"},\n' in text
    sidecar.write_text(text.replace('  "test": {"file": "../../../../test_top.py"},\n', ""))
    result = featviz_pytester.runpytest("--featviz-prune")
    result.assert_outcomes(passed=1, failed=1)  # test_renamed.py has no golden yet
    assert "stale golden" not in result.stdout.str()
    assert "golden/test_top/test_o/0" in _snapshots(featviz_pytester.path)
    # the nested directory's golden of test_top.py records it: read from golden/ the two readings name two files
    # (cuda/test_top.py, test_top.py) and it is not judged; read from its own root they agree, and it is stale
    assert "golden/cuda/test_top/test_o/0" in _snapshots(featviz_pytester.path)
    result = featviz_pytester.runpytest("--featviz-golden-dir", "golden/cuda")
    result.stdout.fnmatch_lines(
        ["1 stale golden snapshot(s) that no executed test used*", "  golden/cuda/test_top/test_o/0"]
    )


def test_a_file_reached_by_a_plugin_s_module_class_is_not_judged(featviz_pytester: pytest.Pytester) -> None:
    # xdoctest's module class subclasses pytest.Module and reaches files outside python_files
    featviz_pytester.makepyfile(featviz_models=MODELS, test_plain=OTHER_BEFORE, check_x=OTHER_BEFORE)
    featviz_pytester.runpytest("--featviz-update", "check_x.py").assert_outcomes(passed=1)
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=1)
    featviz_pytester.makeconftest(
        """
        import pytest


        class Doc(pytest.Item):
            def runtest(self):
                pass


        class PluginModule(pytest.Module):
            def collect(self):  # like xdoctest: the file's doctests, not its tests
                yield Doc.from_parent(self, name="doc")


        def pytest_collect_file(file_path, parent):
            if file_path.name == "check_x.py":
                return PluginModule.from_parent(parent, path=file_path)
        """
    )
    result = featviz_pytester.runpytest("--featviz-prune")
    result.assert_outcomes(passed=2)  # test_plain's test_o and check_x's doc item
    assert "stale golden" not in result.stdout.str()
    assert "golden/check_x/test_o/0" in _snapshots(featviz_pytester.path)


def test_a_link_in_the_golden_directory_that_leads_out_of_it_is_no_crash(project: pytest.Pytester) -> None:
    outside = project.path / "elsewhere"
    shutil.move(project.path / "golden" / "test_other", outside)
    (project.path / "golden" / "test_other").symlink_to(outside, target_is_directory=True)
    for args in ([], ["-k", "nomatch"]):
        result = project.runpytest("--featviz-prune", *args)
        assert "Traceback" not in result.stdout.str() + result.stderr.str()
        assert result.ret in (0, 5)
    assert (outside / "test_o" / "0" / "snapshot.json").is_file()


def test_a_golden_directory_reached_through_a_link_or_moved_is_not_judged(featviz_pytester: pytest.Pytester) -> None:
    # the record is joined as text: through a link, or from a moved golden directory, it names another file than
    # the directory reading, and nothing is judged
    featviz_pytester.makepyfile(featviz_models=MODELS)
    featviz_pytester.syspathinsert()
    for folder in ("tests", "cuda/tests"):
        (featviz_pytester.path / folder).mkdir(parents=True)
    (featviz_pytester.path / "tests" / "test_m.py").write_text(OTHER_BEFORE)
    (featviz_pytester.path / "cuda" / "tests" / "test_k.py").write_text(OTHER_AFTER)
    (featviz_pytester.path / "store").mkdir()
    (featviz_pytester.path / "golden").symlink_to(featviz_pytester.path / "store", target_is_directory=True)
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=2)
    featviz_pytester.runpytest("--featviz-update", "--featviz-golden-dir", "golden/cuda", "tests").assert_outcomes(
        passed=1
    )
    snapshots = _snapshots(featviz_pytester.path / "store")
    assert snapshots == ["cuda/tests/test_m/test_o/0", "tests/test_m/test_o/0"]
    result = featviz_pytester.runpytest("--featviz-prune")
    result.assert_outcomes(passed=2)
    assert "stale golden" not in result.stdout.str()
    # moved one level down
    (featviz_pytester.path / "golden").unlink()
    (featviz_pytester.path / "ci").mkdir()
    (featviz_pytester.path / "store").rename(featviz_pytester.path / "ci" / "golden")
    featviz_pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\nfeatviz_golden_dir = ci/golden\n")
    result = featviz_pytester.runpytest("--featviz-prune")
    result.assert_outcomes(passed=2)
    assert "stale golden" not in result.stdout.str()
    assert _snapshots(featviz_pytester.path / "ci" / "golden") == snapshots


@pytest.mark.parametrize(
    "record",
    ['"/abs/test_gone.py"', '"../../../../test_gone.py\\u0000x"', '"\\ud800"', '"' + "../" * 3000 + 'x"', "3"],
    ids=["absolute", "nul", "surrogate", "huge", "number"],
)
def test_a_damaged_test_record_is_no_record(project: pytest.Pytester, record: str) -> None:
    (project.path / "test_other.py").unlink()
    sidecar = project.path / "golden" / "test_other" / "test_o" / "0" / "snapshot.json"
    text = sidecar.read_text()
    assert '  "test": {"file": "../../../../test_other.py"},\n' in text
    sidecar.write_text(text.replace('"../../../../test_other.py"', record))
    result = project.runpytest("--featviz-prune")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["2 stale golden snapshot(s) deleted*"])
    assert OTHER_STALE in _snapshots(project.path)


def test_a_sidecar_nested_too_deep_is_no_crash(project: pytest.Pytester) -> None:
    (project.path / "test_other.py").unlink()
    (project.path / "golden" / "test_other" / "test_o" / "0" / "snapshot.json").write_text("[" * 200000 + "]" * 200000)
    result = project.runpytest("--featviz-prune")
    result.assert_outcomes(passed=2)
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    assert OTHER_STALE in _snapshots(project.path)


@pytest.mark.skipif(
    tuple(int(part) for part in pytest.__version__.split(".")[:2]) < (8, 2), reason="@file arguments: pytest >= 8.2"
)
def test_the_prune_command_repeats_the_selection_and_nothing_else(project: pytest.Pytester) -> None:
    (project.path / "args.txt").write_text("--featviz-update\ntest_other.py\n")
    result = project.runpytest("@args.txt", "--junitxml=out.xml")
    result.stdout.fnmatch_lines(["1 stale golden snapshot(s) that no executed test used*", f"  {OTHER_STALE}"])
    result.stdout.fnmatch_lines(["delete them with:  pytest --featviz-prune test_other.py"])
    result = project.runpytest("-k", "test_a or test_plain", "-o", "junit_family=xunit2")
    result.stdout.fnmatch_lines(["delete them with:  pytest --featviz-prune -k 'test_a or test_plain'"])
    assert _snapshots(project.path) == ALL


def _stale_section(result: pytest.RunResult) -> tuple[list[str], str]:
    """The snapshots a run's stale goldens section lists (or deleted), and the command it prints to delete them."""
    lines = result.stdout.lines
    start = next((i for i, line in enumerate(lines) if "featviz stale goldens" in line), len(lines))
    listed: list[str] = []
    for line in lines[start + 1 :]:
        if line.startswith("delete them with:  "):
            return listed, line.split(":  ", 1)[1]
        if line.startswith("  "):
            listed.append(line.strip())
        elif listed:
            break
    return listed, ""


def _prune_as_printed(pytester: pytest.Pytester, args: list[str], printed: str, listed: list[str]) -> None:
    """A run with ``args`` lists ``listed`` and prints ``printed``; that command, pasted where the run ran, deletes
    exactly what it listed."""
    before = _snapshots(pytester.path)
    section = _stale_section(pytester.runpytest(*args))
    assert (sorted(section[0]), section[1]) == (sorted(listed), f"pytest --featviz-prune {printed}")
    assert _snapshots(pytester.path) == before
    result = pytester.runpytest(*shlex.split(section[1])[1:])
    assert sorted(_stale_section(result)[0]) == sorted(listed), result.stdout.str()
    assert _snapshots(pytester.path) == [snapshot for snapshot in before if snapshot not in listed]


SKIP_ST = """
def pytest_ignore_collect(collection_path, config):
    return True if collection_path.name == "test_st.py" else None
"""

WARN_IN_ST = """
import warnings

import pytest


@pytest.fixture(autouse=True)
def old_api(request):
    if request.node.path.name == "test_st.py":
        warnings.warn(UserWarning("old api"))
"""

AT_FILE = pytest.mark.skipif(
    tuple(int(part) for part in pytest.__version__.split(".")[:2]) < (8, 2), reason="@file arguments: pytest >= 8.2"
)


@pytest.mark.parametrize(
    ("args", "files", "printed", "listed"),
    [
        (["--ignore=test_st.py"], {}, "--ignore test_st.py", [OTHER_STALE]),
        (["--ignore-glob", "*_st.py"], {}, "--ignore-glob '*_st.py'", [OTHER_STALE]),
        (["--pyargs", "test_other"], {}, "--pyargs test_other", [OTHER_STALE]),
        (["-p", "skip_st"], {"skip_st.py": SKIP_ST}, "-p skip_st", [OTHER_STALE]),
        (["-o", "python_files=test_other.py"], {}, "-o python_files=test_other.py", [OTHER_STALE]),
        (["-x"], {"test_p.py": "def test_fails():\n    assert False\n"}, "-x", [OTHER_STALE]),
        (["-W", "error::UserWarning"], {"conftest.py": WARN_IN_ST}, "-W error::UserWarning", [OTHER_STALE, STALE[1]]),
        # the replaced addopts and the @file may hold --featviz-update: only what decides the collection is repeated
        (["-o", "addopts=--featviz-update --ignore=test_st.py"], {}, "-o addopts= --ignore test_st.py", [OTHER_STALE]),
        pytest.param(
            ["@args.txt"],
            {"args.txt": "--featviz-update\n--ignore=test_st.py\n-W\nignore::UserWarning\n"},
            "--ignore test_st.py -W ignore::UserWarning",
            [OTHER_STALE],
            marks=AT_FILE,
        ),
    ],
    ids=["--ignore", "--ignore-glob", "--pyargs", "-p", "-o python_files", "-x", "-W", "-o addopts", "@file"],
)
def test_the_prune_command_leaves_out_what_the_run_left_out(
    project: pytest.Pytester, args: list[str], files: dict[str, str], printed: str, listed: list[str]
) -> None:
    # Without these options, the printed command would collect and run more and delete more than the run listed
    # (with --pyargs, it would fail to find its module).
    project.syspathinsert()  # test_other and skip_st as modules
    for name, text in files.items():
        (project.path / name).write_text(text)
    _prune_as_printed(project, args, printed, listed)


def _conftest_ignoring_st(pytester: pytest.Pytester) -> None:
    pytester.makeconftest('collect_ignore = ["test_st.py"]\n')
    pytester.mkdir("sub")


def _plugin_ignoring_st(pytester: pytest.Pytester) -> None:
    (pytester.path / "skip_st.py").write_text(SKIP_ST)
    pytester.makeconftest('pytest_plugins = ["skip_st"]\n')


def _broken_test_file(pytester: pytest.Pytester) -> None:
    (pytester.path / "test_broken.py").write_text("def broken(:\n")


def _two_test_files_of_one_name(pytester: pytest.Pytester) -> None:
    """a/test_x.py and b/test_x.py: one name, no __init__.py; only --import-mode importlib imports both."""
    for name in ("a", "b"):
        pytester.mkdir(name).joinpath("test_x.py").write_text("def test_x():\n    pass\n")


def _deleted_test_file_beside_doctests(pytester: pytest.Pytester) -> None:
    """lib/test_gone.py had a golden and is gone; lib/ holds a module and a text file with doctests."""
    lib = pytester.mkdir("lib")
    (lib / "test_gone.py").write_text(OTHER_BEFORE)
    pytester.runpytest("--featviz-update", "lib").assert_outcomes(passed=1)
    (lib / "test_gone.py").unlink()
    (lib / "helper.py").write_text('def double(x):\n    """\n    >>> double(2)\n    4\n    """\n    return 2 * x\n')
    (lib / "notes.txt").write_text(">>> 1 + 1\n2\n")


def _stale_golden_in_a_virtualenv(pytester: pytest.Pytester) -> None:
    """env/ looks like a virtualenv (to pytest 9 by pyvenv.cfg, to 7 and 8 by bin/activate); its test file no longer
    uses its golden."""
    env = pytester.mkdir("env")
    (env / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (env / "bin").mkdir()
    (env / "bin" / "activate").write_text("")
    (env / "test_v.py").write_text(OTHER_BEFORE)
    pytester.runpytest("--featviz-update", "env", "--collect-in-virtualenv").assert_outcomes(passed=1)
    (env / "test_v.py").write_text(OTHER_AFTER)


@pytest.mark.parametrize(
    ("args", "setup", "printed", "extra"),
    [
        (["--noconftest"], _conftest_ignoring_st, "--noconftest", []),
        (["--confcutdir", "sub"], _conftest_ignoring_st, "--confcutdir sub", []),
        (["-p", "no:skip_st"], _plugin_ignoring_st, "-p no:skip_st", []),
        (["--continue-on-collection-errors"], _broken_test_file, "--continue-on-collection-errors", []),
        (["--import-mode", "importlib"], _two_test_files_of_one_name, "--import-mode importlib", []),
        (
            ["--doctest-modules"],
            _deleted_test_file_beside_doctests,
            "--doctest-modules",
            ["golden/lib/test_gone/test_o/0"],
        ),
        (
            ["--doctest-glob", "*.txt"],
            _deleted_test_file_beside_doctests,
            "--doctest-glob '*.txt'",
            ["golden/lib/test_gone/test_o/0"],
        ),
        (
            ["--collect-in-virtualenv"],
            _stale_golden_in_a_virtualenv,
            "--collect-in-virtualenv",
            ["golden/env/test_v/test_o/0"],
        ),
    ],
    ids=[
        "--noconftest",
        "--confcutdir",
        "-p no:",
        "--continue-on-collection-errors",
        "--import-mode",
        "--doctest-modules",
        "--doctest-glob",
        "--collect-in-virtualenv",
    ],
)
def test_the_prune_command_collects_what_the_run_collected(
    project: pytest.Pytester,
    args: list[str],
    setup: Callable[[pytest.Pytester], None],
    printed: str,
    extra: list[str],
) -> None:
    # Without these options, the printed command would collect less than the run did and delete less than it listed,
    # or stop at a collection error and delete nothing.
    project.syspathinsert()  # featviz_models for test files below the rootdir, skip_st as a plugin
    setup(project)
    _prune_as_printed(project, args, printed, [OTHER_STALE, *STALE, *extra])


def test_the_prune_command_repeats_what_the_command_line_gave_and_not_what_addopts_give(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # addopts and PYTEST_ADDOPTS apply to the pasted command again; a value the command line gave over theirs, the
    # collection ini keys it overrode and its -W are repeated, -o junit_family and --runxfail are not
    project.makeini("[pytest]\naddopts = -p no:cacheprovider -x --ignore=test_gone.py -o python_functions=test_*\n")
    monkeypatch.setenv("PYTEST_ADDOPTS", "-W ignore::DeprecationWarning --deselect test_gone.py::test_g")
    args = ["--maxfail", "2", "-o", "python_classes=Check", "-o", "norecursedirs=build", "-o", "junit_family=xunit2"]
    args += ["-W", "default", "--doctest-ignore-import-errors", "--runxfail"]
    printed = "-o python_classes=Check -o norecursedirs=build --doctest-ignore-import-errors -W default --maxfail 2"
    _prune_as_printed(project, args, printed, [OTHER_STALE, *STALE])


def test_nothing_behind_a_link_in_the_golden_directory_is_judged_or_deleted(project: pytest.Pytester) -> None:
    golden_dir = project.path / "golden"
    # a test file renamed, its golden directory kept through a link under the new name
    (project.path / "test_other.py").rename(project.path / "test_moved.py")
    (project.path / "test_moved.py").write_text(OTHER_BEFORE)
    (golden_dir / "test_moved").symlink_to("test_other", target_is_directory=True)
    # a test-level and a snapshot-level alias: what they lead to stands under another name, so it is kept
    (golden_dir / "test_st" / "test_old").symlink_to("test_a", target_is_directory=True)
    (golden_dir / "test_st" / "test_c" / "alias").symlink_to("0", target_is_directory=True)
    result = project.runpytest()
    result.stdout.fnmatch_lines(["1 stale golden snapshot(s) that no executed test used*", f"  {STALE[1]}"])
    assert "test_old" not in result.stdout.str() and "alias" not in result.stdout.str()
    result = project.runpytest("--featviz-prune")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["1 stale golden snapshot(s) deleted*", f"  {STALE[1]}"])
    assert "could not delete" not in result.stdout.str()
    assert _snapshots(project.path) == [
        "golden/test_other/test_o/0",
        "golden/test_st/test_a/drop",
        "golden/test_st/test_a/keep",
        "golden/test_st/test_c/0",
    ]
    project.runpytest().assert_outcomes(passed=3)


def test_a_renamed_test_s_goldens_kept_through_a_link_stay_whatever_its_outcome(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = """
        import os
        from featviz_models import make_input, make_model


        def test_{name}(feature_snapshot):
            if os.environ.get("FEATVIZ_BREAK"):
                raise RuntimeError("broke before its snapshot")
            feature_snapshot(make_model(), make_input(), layers=["0"])
        """
    featviz_pytester.makepyfile(featviz_models=MODELS, test_old=body.format(name="a"), test_keep=OTHER_BEFORE)
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=2)
    golden_dir = featviz_pytester.path / "golden"
    # the file renamed, its goldens kept under the new name through a link; the test renamed likewise
    (featviz_pytester.path / "test_old.py").rename(featviz_pytester.path / "test_new.py")
    (golden_dir / "test_new").symlink_to("test_old", target_is_directory=True)
    (featviz_pytester.path / "test_keep.py").write_text(OTHER_BEFORE.replace("def test_o(", "def test_renamed("))
    (golden_dir / "test_keep" / "test_renamed").symlink_to("test_o", target_is_directory=True)
    featviz_pytester.runpytest().assert_outcomes(passed=2)
    monkeypatch.setenv("FEATVIZ_BREAK", "1")
    result = featviz_pytester.runpytest("--featviz-prune")
    result.assert_outcomes(passed=1, failed=1)
    assert "stale golden" not in result.stdout.str()
    assert _snapshots(featviz_pytester.path) == ["golden/test_keep/test_o/0", "golden/test_old/test_a/0"]


def test_a_test_class_pytest_cannot_collect_keeps_its_goldens_with_its_warning_filtered(
    featviz_pytester: pytest.Pytester,
) -> None:
    featviz_pytester.makeini(
        "[pytest]\naddopts = -p no:cacheprovider\nfilterwarnings = ignore::pytest.PytestCollectionWarning\n"
    )
    body = """
        from featviz_models import make_input, make_model


        def test_plain(feature_snapshot):
            feature_snapshot(make_model(), make_input(), layers=["0"])


        class TestC:
            {init}
            def test_b(self, feature_snapshot):
                feature_snapshot(make_model(), make_input(), layers=["0"])
        """
    featviz_pytester.makepyfile(featviz_models=MODELS, test_cls=body.format(init=""))
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=2)
    featviz_pytester.makepyfile(test_cls=body.format(init="def __init__(self):\n                pass\n"))
    result = featviz_pytester.runpytest("--featviz-prune")
    result.assert_outcomes(passed=1)
    _judged_nothing(result)
    assert "golden/test_cls/TestC.test_b/0" in _snapshots(featviz_pytester.path)


def test_a_failing_variant_of_a_test_whose_name_sanitizing_changed_keeps_its_goldens(
    featviz_pytester: pytest.Pytester,
) -> None:
    plain = """
        from featviz_models import make_input, make_model


        def test_café(feature_snapshot):
            feature_snapshot(make_model(), make_input(), layers=["0"])
        """
    featviz_pytester.makepyfile(featviz_models=MODELS, test_u=plain)
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=1)
    snapshots = _snapshots(featviz_pytester.path)
    assert len(snapshots) == 1 and snapshots[0].startswith("golden/test_u/test_caf_-")
    # now parametrized, and failing before its snapshot: test_café[1] stands for test_café
    featviz_pytester.makepyfile(
        test_u="""
        import pytest


        @pytest.mark.parametrize("x", [1])
        def test_café(feature_snapshot, x):
            raise RuntimeError("broke before its snapshot")
        """
    )
    result = featviz_pytester.runpytest("--featviz-prune")
    result.assert_outcomes(failed=1)
    assert "stale golden" not in result.stdout.str()
    assert _snapshots(featviz_pytester.path) == snapshots


def test_a_test_function_pytest_cannot_collect_keeps_its_goldens(featviz_pytester: pytest.Pytester) -> None:
    # a decorator object from another module (no functools.wraps): pytest warns "not a function", naming that module
    featviz_pytester.makeini(
        "[pytest]\naddopts = -p no:cacheprovider\nfilterwarnings = ignore::pytest.PytestCollectionWarning\n"
    )
    body = """
        {imports}
        from featviz_models import make_input, make_model


        def test_plain():
            pass


        {decorator}
        def test_f(feature_snapshot):
            feature_snapshot(make_model(), make_input(), layers=["0"])
        """
    featviz_pytester.makepyfile(
        featviz_models=MODELS,
        helpers="class retry:\n    def __init__(self, f):\n        self.f = f\n\n    def __call__(self, *a, **k):\n"
        "        return self.f(*a, **k)\n",
        test_m=body.format(imports="", decorator=""),
    )
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=2)
    featviz_pytester.makepyfile(test_m=body.format(imports="from helpers import retry", decorator="@retry"))
    result = featviz_pytester.runpytest("--featviz-prune")
    result.assert_outcomes(passed=1)
    _judged_nothing(result)
    assert _snapshots(featviz_pytester.path) == ["golden/test_m/test_f/0"]


def test_an_empty_parameter_list_keeps_the_goldens_of_a_long_test_name_s_parameters(
    featviz_pytester: pytest.Pytester,
) -> None:
    body = """
        import pytest
        from featviz_models import make_input, make_model


        class TestAVeryLongDescriptiveClassNameForRegressions:
            @pytest.mark.parametrize("p", {params})
            def test_resnet_block_feature_maps(self, feature_snapshot, p):
                feature_snapshot(make_model(), make_input(), layers=["0"])
        """
    featviz_pytester.makepyfile(featviz_models=MODELS, test_long=body.format(params="[1, 2]"))
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=2)
    snapshots = _snapshots(featviz_pytester.path)
    assert len(snapshots) == 2 and all(len(s.split("/")[2]) == 80 for s in snapshots)  # cut, with a digest
    featviz_pytester.makepyfile(test_long=body.format(params="[]"))
    result = featviz_pytester.runpytest("--featviz-prune")
    result.assert_outcomes(skipped=1)
    assert "stale golden" not in result.stdout.str()
    assert _snapshots(featviz_pytester.path) == snapshots


TWO_NETS = """
from featviz_models import make_input, make_model


def test_net(feature_snapshot):
    feature_snapshot(make_model({seed}), make_input(), layers=["0"])
"""


def test_goldens_that_two_renamed_files_may_need_are_kept_not_pruned(featviz_pytester: pytest.Pytester) -> None:
    # test_a.py and test_b.py renamed at once, both holding a test_net: no one move pairs the old goldens with the
    # new tests, and prune deleted both, which could then only be made anew, never compared
    featviz_pytester.makepyfile(featviz_models=MODELS, test_keep=OTHER_BEFORE)
    featviz_pytester.makepyfile(test_a=TWO_NETS.format(seed=1), test_b=TWO_NETS.format(seed=2))
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=3)
    path = featviz_pytester.path
    (path / "test_a.py").rename(path / "test_a2.py")
    (path / "test_b.py").rename(path / "test_b2.py")
    result = featviz_pytester.runpytest("--featviz-prune")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(
        [
            "0 stale golden snapshot(s) deleted*",
            "2 stale golden snapshot(s) kept: a renamed or moved test may still need them*",
            "  golden/test_a/test_net/0",
            "  golden/test_b/test_net/0",
        ]
    )
    assert "golden/test_a/test_net/0" in _snapshots(path) and "golden/test_b/test_net/0" in _snapshots(path)


SKIPPED_HERE = """
import os

import pytest
from featviz_models import make_input, make_model


@pytest.mark.skipif(not os.environ.get("FEATVIZ_HAVE_GPU"), reason="needs the GPU")
def test_big(feature_snapshot):
    feature_snapshot(make_model(), make_input(), layers=["0"])
"""


def _made_on_the_gpu_machine(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, passed: int, **files: str
) -> None:
    """The goldens of ``files`` (SKIPPED_HERE's test among them) made where that test runs, ``passed`` tests passing;
    later runs skip it."""
    pytester.makepyfile(featviz_models=MODELS, **files)
    with monkeypatch.context() as gpu:
        gpu.setenv("FEATVIZ_HAVE_GPU", "1")
        pytester.runpytest("--featviz-update").assert_outcomes(passed=passed)


def test_a_renamed_file_whose_test_is_skipped_keeps_its_old_goldens(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # skipped, the renamed test reached no snapshot call to miss its goldens: nothing paired the old ones, and
    # prune deleted them, so the machine that runs it found none
    _made_on_the_gpu_machine(featviz_pytester, monkeypatch, 2, test_keep=OTHER_BEFORE, test_gpu=SKIPPED_HERE)
    (featviz_pytester.path / "test_gpu.py").rename(featviz_pytester.path / "test_gpu_big.py")
    result = featviz_pytester.runpytest("--featviz-prune")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(
        ["*1 stale golden snapshot(s) kept: a renamed or moved test may*", "  golden/test_gpu/test_big/0"]
    )
    assert "golden/test_gpu/test_big/0" in _snapshots(featviz_pytester.path)
    (featviz_pytester.path / "test_gpu_big.py").unlink()  # gone for good: its goldens are pruned
    result = featviz_pytester.runpytest("--featviz-prune")
    result.stdout.fnmatch_lines(["1 stale golden snapshot(s) deleted*", "  golden/test_gpu/test_big/0"])


DOCTESTED = '''
def render_demo():
    """
    >>> import torch
    >>> from featviz_models import make_input, make_model
    >>> _ = getfixture("feature_snapshot")(make_model(), make_input(), layers=["0"])
    """


def test_o(feature_snapshot):
    from featviz_models import make_input, make_model

    feature_snapshot(make_model(), make_input(), layers=["0"])
'''


def test_a_doctest_s_goldens_stay_in_a_run_that_collects_no_doctest(featviz_pytester: pytest.Pytester) -> None:
    featviz_pytester.makepyfile(featviz_models=MODELS, test_d=DOCTESTED)
    featviz_pytester.runpytest("--featviz-update", "--doctest-modules").assert_outcomes(passed=2)
    assert "golden/test_d/test_d.render_demo/0" in _snapshots(featviz_pytester.path)
    result = featviz_pytester.runpytest("--featviz-prune")  # without --doctest-modules: test_o only
    result.assert_outcomes(passed=1)
    assert "stale golden" not in result.stdout.str()
    assert "golden/test_d/test_d.render_demo/0" in _snapshots(featviz_pytester.path)


def test_a_full_prune_run_with_nothing_to_judge_says_nothing(featviz_pytester: pytest.Pytester) -> None:
    (featviz_pytester.path / "golden").mkdir()
    featviz_pytester.makepyfile(test_plain="def test_it():\n    pass\n")
    result = featviz_pytester.runpytest("--featviz-prune")
    result.assert_outcomes(passed=1)
    assert "featviz" not in result.stdout.str().split("collected", 1)[1]  # "judged no golden" was said of a full run


def test_a_test_renamed_in_its_file_and_skipped_keeps_its_old_goldens(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _made_on_the_gpu_machine(featviz_pytester, monkeypatch, 2, test_gpu=SKIPPED_HERE + OTHER_BEFORE.split("\n", 2)[2])
    path = featviz_pytester.path / "test_gpu.py"
    path.write_text(path.read_text().replace("def test_big(", "def test_large("))
    result = featviz_pytester.runpytest("--featviz-prune")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(
        ["*1 stale golden snapshot(s) kept: a renamed or moved test may*", "  golden/test_gpu/test_big/0"]
    )
    assert "golden/test_gpu/test_big/0" in _snapshots(featviz_pytester.path)


def test_a_renamed_file_skipped_at_import_keeps_its_old_goldens(featviz_pytester: pytest.Pytester) -> None:
    featviz_pytester.makepyfile(featviz_models=MODELS, test_keep=OTHER_BEFORE, test_gpu=OTHER_BEFORE)
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=2)
    (featviz_pytester.path / "test_gpu.py").unlink()
    featviz_pytester.makepyfile(
        test_gpu_big='import pytest\npytest.importorskip("no_such_module_here")\n' + OTHER_BEFORE
    )
    result = featviz_pytester.runpytest("--featviz-prune")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*1 stale golden snapshot(s) of deleted or renamed test files kept: this run left*"])
    assert "golden/test_gpu/test_o/0" in _snapshots(featviz_pytester.path)


def test_a_renamed_file_s_doctest_goldens_stay_in_a_run_of_no_doctest(featviz_pytester: pytest.Pytester) -> None:
    featviz_pytester.makepyfile(featviz_models=MODELS, test_d=DOCTESTED, test_keep=OTHER_BEFORE)
    featviz_pytester.runpytest("--featviz-update", "--doctest-modules").assert_outcomes(passed=3)
    (featviz_pytester.path / "test_d.py").rename(featviz_pytester.path / "test_d2.py")
    featviz_pytester.runpytest("--featviz-prune")
    assert "golden/test_d/test_d.render_demo/0" in _snapshots(featviz_pytester.path)
    # with doctests, the renamed file's doctest is offered its golden like any test
    result = featviz_pytester.runpytest("--doctest-modules")
    result.stdout.fnmatch_lines(["*git mv golden/test_d golden/test_d2*"])


def test_a_skipped_test_with_goldens_of_its_own_keeps_no_deleted_file_s_goldens(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a test_forward skipped for good kept every deleted file's test_forward goldens: it waits for none
    featviz_pytester.makepyfile(featviz_models=MODELS, test_a=TWO_NETS.format(seed=1), test_b=TWO_NETS.format(seed=2))
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=2)
    path = featviz_pytester.path / "test_b.py"
    path.write_text("import pytest\n" + path.read_text().replace("def test_net(", "@pytest.mark.skip\ndef test_net("))
    (featviz_pytester.path / "test_a.py").unlink()
    result = featviz_pytester.runpytest("--featviz-prune")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["1 stale golden snapshot(s) deleted*", "  golden/test_a/test_net/0"])


def test_a_create_and_prune_run_lists_a_kept_golden_once(featviz_pytester: pytest.Pytester) -> None:
    featviz_pytester.makepyfile(featviz_models=MODELS, test_keep=OTHER_BEFORE)
    featviz_pytester.makepyfile(test_a=TWO_NETS.format(seed=1), test_b=TWO_NETS.format(seed=2))
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=3)
    (featviz_pytester.path / "test_a.py").rename(featviz_pytester.path / "test_a2.py")
    result = featviz_pytester.runpytest("--featviz-create", "--featviz-prune")
    assert (
        result.stdout.str().count("  golden/test_a/test_net/0")
        + result.stdout.str().count("git mv golden/test_a/test_net/0")
        == 1
    )


def test_a_skipped_test_of_another_file_with_the_old_name_does_not_undo_the_keep(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _made_on_the_gpu_machine(featviz_pytester, monkeypatch, 1, test_b=SKIPPED_HERE)
    path = featviz_pytester.path / "test_b.py"
    path.write_text(path.read_text().replace("def test_big(", "def test_large("))
    featviz_pytester.makepyfile(test_a=SKIPPED_HERE)  # skipped too, no goldens of its own, named like the old test
    result = featviz_pytester.runpytest("--featviz-prune")
    result.assert_outcomes(skipped=2)
    assert "golden/test_b/test_big/0" in _snapshots(featviz_pytester.path)


def test_a_file_renamed_in_letter_case_whose_test_is_skipped_keeps_its_goldens(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # its test never ran into the case-collision failure, which asks to prune: prune deleted them unasked
    _made_on_the_gpu_machine(featviz_pytester, monkeypatch, 2, test_keep=OTHER_BEFORE, test_GPU=SKIPPED_HERE)
    (featviz_pytester.path / "test_GPU.py").rename(featviz_pytester.path / "test_gpu.py")
    result = featviz_pytester.runpytest("--featviz-prune")
    result.assert_outcomes(passed=1, skipped=1)
    assert "golden/test_GPU/test_big/0" in _snapshots(featviz_pytester.path)


MANY = """
import pytest
from featviz_models import make_input, make_model


@pytest.mark.parametrize("case", range(int("{count}")))
def test_many(feature_snapshot, case):
    feature_snapshot(make_model(), make_input(), layers=["0"])
"""


def test_a_long_stale_list_is_cut_at_twenty_unless_verbose_and_a_prune_names_all(
    featviz_pytester: pytest.Pytester,
) -> None:
    # a prune that deleted 70 goldens named 20 of them, with -vv too
    featviz_pytester.makepyfile(featviz_models=MODELS, test_many=MANY.replace("{count}", "23"))
    featviz_pytester.runpytest("--featviz-update").assert_outcomes(passed=23)
    featviz_pytester.makepyfile(test_many=MANY.replace("{count}", "1"))
    result = featviz_pytester.runpytest()
    result.stdout.fnmatch_lines(["22 stale golden snapshot(s)*", "  ... and 2 more (a more verbose run, -v, *)"])
    result = featviz_pytester.runpytest("-v")
    result.stdout.fnmatch_lines(["22 stale golden snapshot(s)*", "  golden/test_many/test_many[9]/0"])
    result.stdout.no_fnmatch_line("*... and * more*")
    result = featviz_pytester.runpytest("--featviz-prune")  # what it deletes, whole: no run can list it again
    result.stdout.fnmatch_lines(["22 stale golden snapshot(s) deleted*", "  golden/test_many/test_many[9]/0"])
    result.stdout.no_fnmatch_line("*... and * more*")
    assert _snapshots(featviz_pytester.path) == ["golden/test_many/test_many[0]/0"]
