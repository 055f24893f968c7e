"""Stale goldens: snapshots that no executed test used, found at session end, reported and (on request) pruned;
those that a ``git mv`` pairs with a renamed or moved test's missing goldens (:func:`renames`) are offered as that
move, and kept by a prune.

A golden snapshot is stale when its test file ran completely (every collected test of it ran its body, or was
skipped or failed in setup, and reached its teardown, which never happens under ``--setup-only`` or
``--setup-plan``; nothing of it was deselected or dropped, nothing failed during collection, and the run was no
``--lf`` run) and either no collected test of that file owns it (the test was removed or renamed) or its test passed
without using it (the snapshot call was removed). Goldens of a test that failed or was skipped are kept: it may not
have reached its snapshot call. So are the goldens a failed or skipped variant of a test stands for: ``test_a``'s
while pytest-repeat's ``test_a[1-2]`` or a newly parametrized ``test_a[x]`` fails, ``test_q[u]``'s while
``test_q[u-1-2]`` fails, every ``test_p[...]``'s while ``test_p[NOTSET]`` (parametrized with an empty list) is
skipped. A test collected but not run, however it was dropped (``-k``, a conftest's ``items[:] = [...]`` in any hook
order), and an ``--lf`` run (which leaves out the passing tests of a file as it collects it, with no hook that says
so) make the file incomplete, and so does a class or function pytest could not collect (:func:`_left_out`, or a
``PytestCollectionWarning``). What a symbolic link in the golden directory leads to is kept while the link exists,
and nothing is judged or deleted through one. Only files a plain Python test module collected count (not a doctest
module's, nor a lint plugin's items); a file that collects no test is not judged. Goldens of test files that were
not collected are looked at only when their test file no longer exists (deleted, renamed or moved): both the path
the golden directory names under this rootdir, in a directory this run collected a test file from, and the path the
sidecar records (``"test": {"file": ...}``, relative to the snapshot's directory; goldens written before it was
recorded are never judged) must be gone (:meth:`StaleGoldens.find_orphans`). A run that executes no test body
(``--collect-only``, ``--setup-only``, ``--setup-plan``), an ``--lf`` run and an interrupted one judge nothing
stale. Under pytest-xdist the workers send what they collected in ``workeroutput`` and the controller, which
receives every test report, decides. This module imports nothing heavy at pytest start-up; the golden layout is
imported only at session end, when a golden directory exists.
"""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_featviz.orphans import covers, key as _key
from pytest_featviz.outcomes import display_path, shown_below
from pytest_featviz.ownership import Owners, empty_parameters, left_out, link_targets

WORKER_OUTPUT_KEY = "featviz_collection"
LISTED = 20  # stale snapshots named in the terminal summary; the rest are counted

Location = Callable[[pytest.Item], "tuple[str, str]"]
ModuleFile = Callable[[pytest.Module], str]


def shared_key(path: str | Path, keyed: bool) -> str:
    """``_key`` of the shared snapshot directory when goldens are keyed by device (``featviz_golden_key = device``):
    an environment-keyed golden ``0@cuda`` counts as used with ``0`` (and ``0`` with ``0@cuda``), since a run on one
    device uses only one of them. The same mapping (``goldenpath.shared_dir``) serves the used snapshots and the ones on
    disk. Without keys a directory is only itself: a snapshot the test named ``enc@cpu`` never hides a stale
    ``enc``, and keyed goldens left from when keys were on are stale like any other unused golden."""
    if not keyed:
        return _key(path)
    from pytest_featviz.goldenpath import shared_dir  # numpy (through golden): only once a snapshot has run

    return _key(shared_dir(Path(path)))


class StaleGoldens:
    """Session plugin: tracks collection and outcomes, finds stale golden snapshots, prunes them if asked; registered
    only for a run that can judge them (:func:`pytest_featviz.plugin.judges_stale`)."""

    def __init__(
        self,
        config: pytest.Config,
        golden_root: Path,
        location: Location,
        module_file: ModuleFile,
        keyed: bool = False,
        options: Callable[[], Sequence[str]] = tuple,
    ) -> None:
        self.golden_root = golden_root
        self.rootdir = config.rootpath
        self.keyed = keyed  # featviz_golden_key = device
        self.location = location
        self.module_file = module_file
        self.config, self.options = config, options  # for the prune command, made when it is printed
        self.prune = bool(config.getoption("featviz_prune", False))
        self.worker_output: dict[str, Any] | None = getattr(config, "workeroutput", None)
        self.tests: dict[str, tuple[str, str]] = {}  # node id -> (test file, test name)
        self.collected: dict[str, str] = {}  # node id -> test file, of every item collected, before any filter
        self.incomplete: set[str] = set()  # test files with a deselected test
        self.collect_errors: set[str] = set()  # node ids of collectors that failed, or skipped (importorskip)
        self.modules: dict[str, str] = {}  # node id -> test file, of every plain Python test module collected
        # node id -> (test file, collector) of every plain test module and its test classes, until collected
        self.collecting: dict[str, tuple[str, pytest.Collector]] = {}
        self.seen_files: set[str] = set()  # test files of every item and module collected: their goldens have an owner
        self.ran: set[str] = set()  # node ids whose body ran, or whose setup failed or skipped
        self.finished: set[str] = set()  # node ids that ran and whose teardown reported
        self.not_passed: set[str] = set()  # node ids with a failed or skipped phase
        self.reached: set[str] = set()  # node ids with a snapshot record: they reached a snapshot call
        self.failed: set[str] = set()  # node ids with a failed phase
        self.used: set[str] = set()  # golden snapshot directories a record names
        self.missing: list[Path] = []  # golden snapshot directories of missing goldens: where a renamed test looks
        self.moves: list[str] = []  # the git mv commands the stale section gives (renames), once stale was judged
        self.kept_moves: list[Path] = []  # stale snapshots prune left in place: a move pairs them with missing ones
        self.created: list[Path] = []  # golden snapshot directories this run created (--featviz-create / -update)
        self.kept_orphans: list[Path] = []  # goldens of deleted test files prune left: this run left tests out
        self.left_orphans: list[Path] = []  # goldens of deleted test files a prune run like this one would keep
        self.kept_created: list[tuple[Path, Path]] = []  # (stale snapshot prune kept, the one created in its place)
        self.stale: list[Path] = []
        self.pruned: list[Path] = []
        self.prune_errors: list[str] = []
        self.kept_files: list[str] = []  # pruned snapshot directories left in place for files that are not ours
        self.files_checked = 0
        self.unpaired: list[Path] = []  # stale snapshots a renamed test may still need, that no move pairs
        self.moved: set[str] = set()  # the stale snapshots a move pairs (keys)
        self.partial = False  # whether the run left tests out (then a deleted file's goldens are kept)
        self.judged = False  # whether the session's end judged the goldens (a golden directory, not interrupted)
        self.files_gone = 0  # test files that no longer exist, whose goldens are all stale
        self.link_targets: list[str] | None = None  # where the links in the golden directory lead, once looked for

    # -- what was collected (in the main process, or on each xdist worker) --

    def pytest_deselected(self, items: Iterable[pytest.Item]) -> None:
        for item in items:
            self.incomplete.add(self.location(item)[0])

    def pytest_itemcollected(self, item: pytest.Item) -> None:
        self.collected[item.nodeid] = self.location(item)[0]
        self.seen_files.add(self.collected[item.nodeid])

    def pytest_collectstart(self, collector: pytest.Collector) -> None:
        # Only a plain Python test module stands for a file's tests: a doctest module (--doctest-modules, --xdoctest)
        # or a plugin's own module class may reach a file whose tests python_files leaves out, and a Package is a
        # Module before pytest 8 but no test file.
        if type(collector) is pytest.Module:
            test_file = self.module_file(collector)
            self.seen_files.add(test_file)
            self.collecting[collector.nodeid] = (test_file, collector)
        elif isinstance(collector, pytest.Class):
            module = collector.getparent(pytest.Module)
            if module is not None and type(module) is pytest.Module:
                self.collecting[collector.nodeid] = (self.module_file(module), collector)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        # A file named with a node id (``test_m.py::test_x``) was collected only in part: the tests left out are
        # unknown here, so the file does not count as run completely. Under --lf, pytest leaves the passing tests of
        # a file out while collecting it, and no hook tells which: no file counts as run completely.
        base = session.config.invocation_params.dir
        # realpath, not resolve: an argument that is a symbolic link loop (pytest says "not found") raises there
        named = {os.path.realpath(Path(base, arg.split("::", 1)[0])) for arg in session.config.args if "::" in arg}
        last_failed = bool(session.config.getoption("lf", False))
        for item in session.items:
            test_file, test_name = self.location(item)
            if empty_parameters(item):  # pytest 7 names it test_p[d0], pytest 8 test_p[NOTSET]: one name for both
                test_name = test_name.split("[", 1)[0] + "[NOTSET]"
            self.tests[item.nodeid] = (test_file, test_name)
            if last_failed or (named and os.path.realpath(item.path) in named):
                self.incomplete.add(self.tests[item.nodeid][0])
        # A test collected but not run, whatever dropped it (-k, a conftest's ``items[:] = [...]`` in any hook
        # order), leaves its file run in part.
        for node_id, test_file in self.collected.items():
            if node_id not in self.tests:
                self.incomplete.add(test_file)

    def pytest_warning_recorded(self, warning_message: Any, when: str, nodeid: str, location: Any) -> None:
        # a test class or function pytest could not collect (a class with __init__): its goldens have no owner
        category = getattr(warning_message, "category", None)
        if when == "collect" and isinstance(category, type) and issubclass(category, pytest.PytestCollectionWarning):
            path = Path(str(getattr(warning_message, "filename", "") or ""))
            if path.is_absolute():
                with contextlib.suppress(ValueError):  # another drive on Windows
                    self.incomplete.add(os.path.relpath(path, self.rootdir).replace(os.sep, "/"))

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if not report.passed:  # failed, or skipped while importing (importorskip)
            self.collect_errors.add(report.nodeid)
        elif report.nodeid in self.collecting:  # a module whose collection an interrupt stopped is not here
            test_file, collector = self.collecting.pop(report.nodeid)
            if type(collector) is pytest.Module:
                self.modules[report.nodeid] = test_file
            if left_out(collector, report.result):
                self.incomplete.add(test_file)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """xdist controller: merge what a worker collected (every worker collects the same tests)."""
        collected = getattr(node, "workeroutput", {}).get(WORKER_OUTPUT_KEY)
        if not collected:
            return
        for node_id, (test_file, test_name) in collected["tests"].items():
            self.tests[node_id] = (test_file, test_name)
        self.incomplete.update(collected["incomplete"])
        self.collect_errors.update(collected["collect_errors"])
        self.modules.update(collected["modules"])
        self.seen_files.update(collected["seen_files"])

    # -- what ran (reports reach the controller under xdist) --

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.failed or report.skipped:
            self.not_passed.add(report.nodeid)
        if report.failed:
            self.failed.add(report.nodeid)
        if getattr(report, "featviz", None):
            self.reached.add(report.nodeid)  # it reached a snapshot call
        for record in getattr(report, "featviz", None) or ():  # any phase: a fixture may snapshot in its teardown
            # as named and as it really is: a golden directory used through a link is used behind it too
            self.used.update(shared_key(path, self.keyed) for path in _named_and_real(record["golden_dir"]))
            if record.get("outcome") == "missing":
                self.missing.append(Path(record["golden_dir"]))
            elif record.get("outcome") == "created" and not record.get("update_dir"):
                self.created.append(Path(record["golden_dir"]))
        # --setup-only and --setup-plan report setup and teardown of every test, and no call: no body ran
        if report.when == "call" or (report.when == "setup" and not report.passed):
            self.ran.add(report.nodeid)
        if report.when == "teardown" and report.nodeid in self.ran:
            self.finished.add(report.nodeid)

    # -- session end --

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.worker_output is not None:
            self.worker_output[WORKER_OUTPUT_KEY] = {
                "tests": {node_id: list(location) for node_id, location in self.tests.items()},
                "incomplete": sorted(self.incomplete),
                "collect_errors": sorted(self.collect_errors),
                "modules": self.modules,
                "seen_files": sorted(self.seen_files),
            }
            return
        if not self.golden_root.is_dir() or exitstatus == pytest.ExitCode.INTERRUPTED:
            return
        self.judged = True
        orphans = self.find_orphans()
        self.stale = self.find_stale() + orphans
        # before anything is deleted: a renamed test's goldens, created anew and pruned, would be re-made from the
        # code as it is now and never compared with the old ones; prune keeps what a move pairs with a missing golden
        moves = renames(self.stale, self.missing) if self.stale else []
        self.moves = [move.command for move in moves]
        moved = self.moved = {_key(snapshot) for move in moves for snapshot in move.snapshots}
        # a create or update run made new goldens where a renamed test looked for them, uncompared with the old
        # ones: those are kept too (prune), for the comparison the rename would have given
        replaced = {_key(old): new for old, new in matching(self.stale, self.created).items()}
        self.unpaired = self._unpaired(orphans, moved | set(replaced))
        # the goldens of deleted test files that a prune run leaving tests out keeps, unless a move pairs them: one
        # that stopped early (-x, --maxfail) left out the tests after the stop, a renamed file's among them
        maxfail = int(self.config.getoption("maxfail", 0) or 0)
        stopped = bool(session.shouldstop or session.shouldfail) or 0 < maxfail <= session.testsfailed
        # a module skipped or failing at import (importorskip) may be a renamed test file's: its tests are left out
        partial = self.partial = bool(self.incomplete or self.collect_errors) or self.narrowed() or stopped
        self.left_orphans = [d for d in orphans if _key(d) not in moved] if partial else []
        if self.prune:
            self.kept_moves = [directory for directory in self.stale if _key(directory) in moved]
            self.kept_created = [(d, replaced[_key(d)]) for d in self.stale if _key(d) in replaced]
            # a deleted test file's goldens may be a renamed one's whose tests this run left out (-k, a node id):
            # nothing pairs them, and deleted they could only be created anew
            kept = moved | set(replaced) | {_key(d) for d in self.unpaired}
            if partial:
                self.kept_orphans = [d for d in orphans if _key(d) not in kept]
                kept |= {_key(d) for d in self.kept_orphans}
            for directory in self.stale:
                if _key(directory) not in kept:
                    self._delete(directory)
            if self.prune_errors and session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED  # a prune job in CI must not pass having failed

    def _unpaired(self, orphans: list[Path], paired: set[str]) -> list[Path]:
        """The stale snapshots a renamed test may still need where no move (nor a golden this run created) pairs
        them: one that a missing golden, or one this run created, could be (two renamed files whose tests share a
        name: no one move), and one that a test which skipped or failed before any snapshot call, and has no goldens
        of its own, could own: a test of the same name (a renamed file's) or any test of its file (a test renamed
        in it). Not the folder of a test or test file renamed in letter case only whose test failed: its old goldens
        are what the case-collision failure is about, and it asks to prune them (a skipped one keeps them)."""
        from pytest_featviz.goldenpath import sanitize_name

        unreached: dict[str, dict[str, list[str]]] = {}  # test file -> test name -> node ids
        for node_id in self.not_passed - self.reached:
            if node_id in self.tests:
                test_file, test_name = self.tests[node_id]
                unreached.setdefault(test_file, {}).setdefault(test_name, []).append(node_id)
        waiting: dict[str, list[str]] = {}  # test name -> node ids of the tests that may own stale goldens
        files: set[str] = set()  # the golden folders of their files
        collided: set[str] = set()  # casefolded: the file folders and test folders of those that failed
        for test_file, tests in unreached.items():
            folder = self._file_dir(test_file)
            if folder is None:
                continue
            owners = Owners(tests)
            own = {node_id for d in subdirectories(folder) for node_id in owners.of(d.name)}
            for test_name, ids in tests.items():
                if not own & set(ids):  # with goldens of its own it is no renamed test waiting for them
                    waiting.setdefault(test_name, []).extend(ids)
                    files.add(_key(folder))
                    if any(node_id in self.failed for node_id in ids):
                        collided |= {str(folder).casefold(), str(folder / sanitize_name(test_name)).casefold()}
        named = Owners(waiting)
        candidates = [*self.missing, *self.created]

        def twin(path: Path) -> bool:
            """Whether ``path`` differs in letter case only from a failed waiting test's file or test folder (not
            its own: a waiting test has none, and a deleted file's folder is no existing file's)."""
            return str(path).casefold() in collided

        def may_need(directory: Path) -> bool:
            if any(_same_snapshot(directory, wanted) for wanted in candidates):
                return True
            if directory in orphans and named.of(directory.parent.name):
                return not twin(directory.parent.parent)
            return _key(directory.parent.parent) in files and not twin(directory.parent)

        return [directory for directory in self.stale if _key(directory) not in paired and may_need(directory)]

    def narrowed(self) -> bool:
        """Whether this run left test files of the project out: paths or node ids named other than those pytest
        takes without any from the rootdir (testpaths', or the rootdir), a run from a folder below the rootdir (its
        tests only), ``--ignore``, ``--ignore-glob`` or ``--deselect``."""
        config = self.config
        source = getattr(config, "args_source", None)
        if source == pytest.Config.ArgsSource.ARGS and not _default_paths(config):
            return True
        if source == pytest.Config.ArgsSource.INVOCATION_DIR and Path(config.invocation_params.dir) != config.rootpath:
            return True
        return any(config.getoption(name, None) for name in ("ignore", "ignore_glob", "deselect"))

    def complete_files(self) -> dict[str, dict[str, list[str]]]:
        """Test files that ran completely: file -> test name -> node ids.

        Only files a plain Python test module collected: a file that only a lint plugin's collector (one item per
        ``.py`` file) or a doctest module reached may hold tests this run never collected.
        """
        modules = set(self.modules.values())
        files: dict[str, dict[str, list[str]]] = {}
        for node_id, (test_file, test_name) in self.tests.items():
            if test_file in modules:
                files.setdefault(test_file, {}).setdefault(test_name, []).append(node_id)
        return {
            test_file: tests
            for test_file, tests in files.items()
            if test_file not in self.incomplete
            and not any(covers(error, test_file) for error in self.collect_errors)
            and all(node_id in self.finished for ids in tests.values() for node_id in ids)
        }

    def find_stale(self) -> list[Path]:
        """Golden snapshot directories of completely run test files that no executed test used."""
        from pytest_featviz.golden import SIDECAR

        # An environment-keyed golden (<snapshot>@cuda) and its shared one are used or stale together: a run on one
        # device uses only one of them, and must not prune the other device's golden (shared_key on both sides).
        stale: list[Path] = []
        for test_file, tests in sorted(self.complete_files().items()):
            file_dir = self._file_dir(test_file)
            if file_dir is None or not file_dir.is_dir() or self._through_link(file_dir):
                continue
            self.files_checked += 1
            owners = Owners(tests)
            # a doctest's goldens (``test_m.helper`` in test_m.py): a run without --doctest-modules collects none
            doctest = Path(test_file).stem + "."
            doctests = any(name.startswith(doctest) for name in tests)
            for test_dir in subdirectories(file_dir):
                ids = owners.of(test_dir.name)
                if not ids and not doctests and test_dir.name.startswith(doctest):
                    continue
                if any(node_id in self.not_passed for node_id in ids):
                    continue  # a failed or skipped test may not have reached its snapshot call
                for snapshot in subdirectories(test_dir):
                    if (snapshot / SIDECAR).is_file() and not self._kept(snapshot):
                        stale.append(snapshot)
        return stale

    def find_orphans(self) -> list[Path]:
        """Golden snapshot directories whose test file no longer exists (:func:`orphans.find_orphans`)."""
        from pytest_featviz.orphans import find_orphans

        found = find_orphans(
            self.golden_root, self.rootdir, self.seen_files, self.collect_errors, self._kept, self._file_dir
        )
        if not self.config.getoption("doctestmodules", False):  # a doctest's goldens: a run of no doctest
            found = [snapshot for snapshot in found if _test_name(snapshot.parent) == snapshot.parent.name]
        self.files_gone = len({snapshot.parent.parent for snapshot in found})
        return found

    def _kept(self, snapshot: Path) -> bool:
        """Whether ``snapshot`` is out of judgement: a record of this run names it (or its keyed twin), directly or
        through a link, or it is behind a symbolic link in
        the golden directory, which stands for it under another name (a renamed test's golden kept through a link)
        whatever that test's outcome."""
        paths = _named_and_real(snapshot)
        if any(shared_key(path, self.keyed) in self.used for path in paths):
            return True
        if self.link_targets is None:
            self.link_targets = link_targets(self.golden_root)
        real = _key(paths[-1])
        return any(real == target or real.startswith(target + os.sep) for target in self.link_targets)

    def _through_link(self, path: Path) -> bool:
        """Whether ``path`` or a directory between it and the golden root is a symbolic link: what lies behind one
        may be another snapshot's, so it is never judged nor deleted through it."""
        root = _key(self.golden_root) + os.sep
        while _key(path).startswith(root):
            if path.is_symlink():
                return True
            path = path.parent
        return False

    def _file_dir(self, test_file: str) -> Path | None:
        """The golden directory of ``test_file``'s goldens; None when it cannot be used (a link in the golden
        directory that leads out of it, or loops)."""
        from pytest_featviz.golden import GoldenError
        from pytest_featviz.goldenpath import snapshot_dir

        try:
            return snapshot_dir(self.golden_root, test_file, "-", "-").parent.parent
        except (GoldenError, OSError, RuntimeError):
            return None

    def _delete(self, directory: Path) -> None:
        """Delete the files this plugin writes in a snapshot directory, then the directories left empty."""
        from pytest_featviz.durable import remove_leftovers
        from pytest_featviz.golden import SIDECAR
        from pytest_featviz.goldenwrite import own_pictures

        if self._through_link(directory):  # never reached: nothing behind a link is judged (belt and braces)
            self.prune_errors.append(f"{directory}: reached through a symbolic link; left alone")
            return
        remove_leftovers(directory)  # hidden copies killed writes left beside it would keep its parents alive
        try:
            # .PNG too, as an update drops them: a folder named x.png (or a link to one) is someone else's, it stays
            for picture in own_pictures(directory):
                picture.unlink()
            (directory / SIDECAR).unlink()
        except OSError as exc:
            self.prune_errors.append(f"{directory}: {exc}")
            return
        self.pruned.append(directory)
        try:
            directory.rmdir()
        except OSError as exc:  # it holds files of someone else's (a .DS_Store): they stay, and so does the directory
            others = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
            more = f" and {len(others) - 5} more" if len(others) > 5 else ""
            if others:
                self.kept_files.append(f"{directory}: {', '.join(others[:5])}{more}")
            else:  # emptied, but the directory itself could not go (a read-only or immutable parent)
                self.prune_errors.append(f"the emptied directory {directory}: {exc}")
            return
        root = _key(self.golden_root)
        parent = directory.parent
        while _key(parent) != root and _key(parent).startswith(root + os.sep):
            try:
                parent.rmdir()
            except OSError:  # not empty: other goldens live there
                break
            parent = parent.parent

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.worker_output is not None:
            return
        if not (self.stale or self.prune_errors):
            if self.prune and self.judged and self.partial and not (self.files_checked or self.files_gone):
                # asked to prune, it could judge nothing: silence would read as "nothing stale"
                terminalreporter.write_sep("=", "featviz stale goldens")
                terminalreporter.write_line(
                    "--featviz-prune judged no golden: no test file with goldens ran completely (-k, -m, --lf,"
                    " node ids or a stop at -x leave tests of a file out, and an unused golden may be theirs); prune"
                    " in a run of every test"
                )
            return
        terminalreporter.write_sep("=", "featviz stale goldens")
        shown = self.pruned if self.prune else self.stale
        if self.prune:
            terminalreporter.write_line(
                f"{len(self.pruned)} stale golden snapshot(s) deleted, no executed test used them"
                f" ({self.files_checked_text()} checked)" + (":" if shown else "")
            )
        else:
            terminalreporter.write_line(
                f"{len(self.stale)} stale golden snapshot(s) that no executed test used"
                f" ({self.files_checked_text()} checked):"
            )
        # what a prune deleted is named whole: once deleted, no run can list it again
        _write_listed(terminalreporter, [display_path(directory) for directory in shown], every=self.prune)
        for error in self.prune_errors:
            terminalreporter.write_line(f"could not delete {shown_below(error, self.golden_root, None)}")
        if self.prune_errors:
            terminalreporter.write_line(
                "  (the run fails for it: a prune that deleted less than it found must not pass)"
            )
        for kept in self.kept_files:
            terminalreporter.write_line(
                "left the directory for files pytest-featviz did not write:"
                f" {shown_below(kept, self.golden_root, None)}"
            )
        if self.moves:  # created anew, the goldens of a renamed test would never be compared with its old ones
            if self.prune:
                terminalreporter.write_line(
                    f"{len(self.kept_moves)} stale golden snapshot(s) kept: they look like the goldens of a renamed"
                    " or moved test whose goldens are now missing; move them rather than create new ones, so that"
                    " they are compared (then run again):"
                )
            else:
                terminalreporter.write_line(
                    "some look like the goldens of a renamed or moved test whose goldens are now missing: move them"
                    " rather than create new ones, so that they are compared (then run again):"
                )
            _write_listed(terminalreporter, self.moves)
        if self.unpaired:
            kept = "kept" if self.prune else "that a prune keeps"
            terminalreporter.write_line(
                f"{len(self.unpaired)} stale golden snapshot(s) {kept}: a renamed or moved test may still need them (a"
                " test whose goldens are missing could take more than one of them, or a test of the same name, or of"
                " their file, was skipped or failed before its snapshot call); move the right ones by hand, or prune"
                " again once those tests have their goldens:"
            )
            _write_listed(terminalreporter, [display_path(directory) for directory in self.unpaired])
        if self.kept_orphans:
            terminalreporter.write_line(
                f"{len(self.kept_orphans)} stale golden snapshot(s) of deleted or renamed test files kept: this run"
                " left tests out (paths or node ids, a folder below the rootdir, -k, -m, --deselect, --ignore, a"
                " stop at -x, a module skipped or failing at import), and a renamed test among them would lose its"
                " goldens; prune in a run of every test (no paths) to delete them"
            )
        if self.kept_created:
            terminalreporter.write_line(
                f"{len(self.kept_created)} stale golden snapshot(s) kept: they look like the goldens of a renamed or"
                " moved test, for which this run created new goldens without comparing them with these; to compare,"
                " put each in place of the new one (then run again without creating goldens):"
            )
            _write_listed(terminalreporter, [_replace(old, new) for old, new in self.kept_created])
        if not self.prune:
            from pytest_featviz.prunecommand import prune_command

            left = self.left_orphans
            keeps = self.moved | {_key(d) for d in self.unpaired}
            if all(_key(d) in keeps for d in self.stale):  # its command would delete none of them
                terminalreporter.write_line("a prune deletes none of them now: each is kept for the reason above")
                return
            whole = prune_command(self.config, self.options(), every_test=True)
            if left and len(left) == len(self.stale):
                terminalreporter.write_line(f"delete them with:  {whole}")
                terminalreporter.write_line(
                    "  (a prune run deletes the goldens of deleted or renamed test files only when it runs every"
                    " test: this run left tests out by paths, a folder below the rootdir, -k, -m, --deselect,"
                    " --ignore, -x, a conftest or a module skipped at import; leave those out, from addopts too)"
                )
                return
            terminalreporter.write_line(f"delete them with:  {prune_command(self.config, self.options())}")
            if left:
                terminalreporter.write_line(
                    f"  (it keeps the {len(left)} golden snapshot(s) of deleted or renamed test files, since it"
                    f" leaves tests out as this run did; a prune run of every test deletes them too:  {whole})"
                )
            if self.moves:
                terminalreporter.write_line(
                    "  (it keeps the ones the git mv above moves, and deletes the others: move them first, then run"
                    " again)"
                )

    def files_checked_text(self) -> str:
        gone = f" and {self.files_gone} deleted or renamed test file(s)" if self.files_gone else ""
        return f"{self.files_checked} test file(s) with goldens that ran completely{gone}"


def _default_paths(config: pytest.Config) -> bool:
    """Whether the paths the command line gave are those pytest takes when given none (``pytest tests`` where
    ``testpaths = tests``, ``pytest .``) in a run from the rootdir: it then left no test file out by them. From a
    folder below the rootdir, pytest takes that folder's tests only, which leaves the others out."""
    here = config.invocation_params.dir
    if Path(here) != config.rootpath or any("::" in str(arg) for arg in config.args):
        return False
    given = {os.path.realpath(os.path.join(here, str(arg))) for arg in config.args}
    default = [str(here)]
    testpaths = [str(path) for path in config.getini("testpaths") or ()]
    if testpaths:
        found = [p for path in testpaths for p in sorted(glob.iglob(path, root_dir=here, recursive=True))]
        default = [os.path.join(here, path) for path in found] or default
    return given == {os.path.realpath(path) for path in default}


def _write_listed(terminalreporter: Any, lines: Sequence[str], every: bool = False) -> None:
    """``lines``, indented: the first ``LISTED`` of them and how many more there are, or all of them under ``-v`` or
    with ``every`` (a prune that deleted 70 goldens named 20 of them, however verbose the run)."""
    shown = len(lines) if every or terminalreporter.config.get_verbosity() > 0 else LISTED
    for line in lines[:shown]:
        terminalreporter.write_line(f"  {line}")
    if len(lines) > shown:
        terminalreporter.write_line(f"  ... and {len(lines) - shown} more (a more verbose run, -v, lists them all)")


@dataclass(frozen=True, slots=True)
class Move:
    """A ``git mv`` that :func:`renames` gives, and the stale snapshots it moves (which prune keeps)."""

    command: str
    snapshots: tuple[Path, ...]


def _same_snapshot(old: Path, wanted: Path) -> bool:
    """Whether the stale snapshot ``old`` may be the one a renamed or moved test looks for at ``wanted``: the same
    snapshot name, and the same test name (the test file was renamed or moved) or test file (the test was renamed),
    in another test folder."""
    same_test = _test_name(old.parent) == _test_name(wanted.parent) or _key(old.parent.parent) == _key(
        wanted.parent.parent
    )
    return old.name == wanted.name and same_test and _key(old.parent) != _key(wanted.parent)


def _test_name(folder: Path) -> str:
    """A test folder's test name as a renamed file keeps it: a doctest's without its module (``test_m.helper`` of
    the file folder ``test_m`` is ``helper``, which a renamed file's doctest shares)."""
    module = folder.parent.name + "."
    return folder.name[len(module) :] if folder.name.startswith(module) else folder.name


def matching(stale: Sequence[Path], created: Sequence[Path]) -> dict[Path, Path]:
    """The stale snapshots that match (:func:`_same_snapshot`) exactly one snapshot this run created, and that one
    alone: a renamed test whose goldens a create or update run made anew."""
    found: dict[Path, list[Path]] = {}
    for new in created:
        for old in stale:
            if _same_snapshot(old, new):
                found.setdefault(old, []).append(new)
    claimed = [_key(new) for news in found.values() for new in news]
    return {old: news[0] for old, news in found.items() if len(news) == 1 and claimed.count(_key(news[0])) == 1}


def _replace(old: Path, new: Path) -> str:
    """The shell command that puts the stale snapshot ``old`` in place of ``new``, created in its stead."""
    import shlex

    target = shlex.quote(display_path(new))  # rm, not git rm: the new golden may be untracked, staged or committed
    return f"rm -rf {target} && git mv {shlex.quote(display_path(old))} {target}"


def renames(stale: Sequence[Path], missing: Sequence[Path]) -> list[Move]:
    """The moves of stale goldens to where a renamed or moved test now looks for its missing ones.

    A missing snapshot and a stale one match when their snapshot names agree and so do their tests' names (the test
    file was renamed or moved) or their test files (the test was renamed); where several match, the one with the
    same parameter ids (a renamed parametrized test). A missing test's folder that one stale test folder alone
    matches is moved there (``git mv``); into a test folder that exists already, its snapshots one by one; a renamed
    test file's folder whole, when every test folder in it moves to one new file folder that no other file's tests
    move into (two files merged into one move test by test). Most snapshots first."""
    found = {_key(path): path for path in stale}
    pairs: dict[str, set[str]] = {}  # missing test folder -> stale test folders that match it
    for wanted in missing:
        for old in found.values():
            if _same_snapshot(old, wanted):
                pairs.setdefault(_key(wanted.parent), set()).add(_key(old.parent))
    for folder, olds in pairs.items():  # a renamed parametrized test: each parameter set's folder to its own
        same_id = {old for old in olds if _parameters(old) == _parameters(folder)}
        if len(olds) > 1 and len(same_id) == 1:
            pairs[folder] = same_id
    claimed = [old for olds in pairs.values() for old in olds]
    moves = {  # old test folder -> new one, where the rename reads one way only
        Path(next(iter(olds))): Path(new) for new, olds in pairs.items() if len(olds) == 1 and claimed.count(*olds) == 1
    }

    def under(folder: Path) -> tuple[Path, ...]:
        return tuple(s for s in found.values() if _key(s).startswith(_key(folder) + os.sep))

    files: dict[tuple[Path, Path], int] = {}  # (old file folder, new one that does not exist) -> test folders moved
    for old, new in moves.items():
        if not new.parent.exists():
            files[(old.parent, new.parent)] = files.get((old.parent, new.parent), 0) + 1
    # A file folder moves whole only into a new one that no other folder's tests move into (two test files merged
    # into one: the second whole move would put its folder inside the first).
    targets = [new for _, new in files]
    whole = {
        pair for pair, moved in files.items() if moved == len(subdirectories(pair[0])) and targets.count(pair[1]) == 1
    }
    commands = [Move(_move(old, new, make=not new.parent.is_dir()), under(old)) for old, new in whole]
    for old, new in moves.items():
        if (old.parent, new.parent) in whole:
            continue
        if new.exists():  # the test has goldens there already: the matching snapshots move into it
            snapshots = [s for s in found.values() if _key(s.parent) == _key(old) and not (new / s.name).exists()]
            commands += [Move(_move(snapshot, new / snapshot.name), (snapshot,)) for snapshot in snapshots]
        else:
            commands.append(Move(_move(old, new, make=not new.parent.is_dir()), under(old)))
    return sorted(commands, key=lambda move: (-len(move.snapshots), move.command))


def _parameters(folder: str) -> str:
    """The parameter ids of a test folder's name (``[x-1]`` of ``test_p[x-1]``), "" for a test without."""
    name = os.path.basename(folder)
    return name[name.index("[") :] if "[" in name else ""


def _move(source: Path, target: Path, make: bool = False) -> str:
    """``git mv SOURCE TARGET``, with ``mkdir -p`` of the target's folder first when ``make`` (git mv makes none)."""
    import shlex

    move = shlex.join(["git", "mv", display_path(source), display_path(target)])
    return f"mkdir -p {shlex.quote(display_path(target.parent))} && {move}" if make else move


def _named_and_real(path: str | Path) -> list[str]:
    """``path`` as named and, when a link lies on the way, as it really is (the real one last)."""
    named, real = os.path.abspath(path), os.path.realpath(path)
    return [named] if _key(named) == _key(real) else [named, real]


def subdirectories(directory: Path) -> list[Path]:
    """Subdirectories, without the hidden ones an interrupted write may leave, nor links (what lies behind one may
    be another snapshot's)."""
    try:
        return sorted(
            p for p in directory.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")
        )
    except OSError:
        return []
