"""The session's snapshots: every test's result records (also from xdist workers and reruns), the report written at
session end, and the ``featviz`` section of pytest's terminal summary.

:mod:`pytest_featviz.plugin` registers a :class:`SessionTracker` per session; the fixture appends each snapshot's
record to its item's stash, and the records travel to the tracker with the test's reports.
"""

from __future__ import annotations

import os
import shlex
from collections import Counter
from collections.abc import Generator, Iterable
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_featviz.config import Settings
from pytest_featviz.outcomes import CREATED, DRIFTED, MATCHED, MISSING, UNREADABLE, UPDATED, display_path

if TYPE_CHECKING:
    from pytest_featviz.records import SnapshotResult

RESULTS_KEY = pytest.StashKey[list["SnapshotResult"]]()  # records: imported once a snapshot is taken
SENT_KEY = pytest.StashKey[int]()  # how many of an item's records already travel with one of its reports
RUN_KEY = pytest.StashKey[int]()  # which run of the item this is: 1, then 2 under pytest-rerunfailures, ...


def torch_version() -> str:
    """The installed torch's version, read from its metadata: the controller of an xdist run never imports torch."""
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return "not installed"


def _run_facts(settings: Settings, stopped: bool = False) -> dict[str, Any]:
    """What ``report.json`` and the report page say about the run: torch, mode, configured tolerances, goldens (the
    report gives the golden directory relative to the rootdir, as it does every golden path), and ``stopped`` where
    the run ended before its last test (Ctrl-C, a cancelled CI job, ``-x``): a report of the tests it reached."""
    return {
        "torch": torch_version(),
        "mode": settings.mode,
        "threshold": settings.threshold,
        "stat_tolerance": settings.stat_tolerance,
        "rms_tolerance": settings.rms_tolerance,
        "normalize": settings.normalize,
        "golden_dir": str(settings.golden_dir),
        **({"stopped": True} if stopped else {}),
    }


UNREACHED_LISTED = 5


def _not_written(results: Iterable[SnapshotResult]) -> str:
    """``2 not written (1 drifted, 1 missing)``: the snapshots an update run could not write, by their verdict."""
    unwritten = [r for r in results if r.unwritten]
    verdicts = Counter(r.outcome for r in unwritten)
    return f"{len(unwritten)} not written ({', '.join(f'{n} {outcome}' for outcome, n in sorted(verdicts.items()))})"


def _listed(paths: list[str]) -> str:
    """The first ``UNREACHED_LISTED`` of ``paths``, comma-separated, with how many more there are."""
    shown = ", ".join(paths[:UNREACHED_LISTED])
    return shown + (f" and {len(paths) - UNREACHED_LISTED} more" if len(paths) > UNREACHED_LISTED else "")


# What happened to a golden in the run, the strongest first: one created, then rewritten, is counted as created.
GOLDEN_FATES = (CREATED, UPDATED, MATCHED)


def golden_fates(results: Iterable[SnapshotResult]) -> Counter[str]:
    """How many distinct goldens (golden directories) were created, updated and left unchanged, each counted once by
    the strongest of its records: pytest-repeat, pytest-flakefinder, two xdist workers or a rerun can compare one
    golden several times, and only the first of them creates or rewrites it."""
    return Counter(_fates(results).values())


def _fates(results: Iterable[SnapshotResult]) -> dict[str, str]:
    """What happened to each golden (:func:`golden_fates`), by its directory."""
    rank = {outcome: place for place, outcome in enumerate(GOLDEN_FATES)}
    fates: dict[str, str] = {}
    for result in results:
        golden, fate = result.golden_dir, result.outcome
        if fate == UPDATED and result.update_dir is not None:  # the device's own golden, new beside the shared one
            golden, fate = result.update_dir, CREATED
        held = fates.get(golden)
        if fate in rank and (held is None or rank[fate] < rank[held]):
            fates[golden] = fate
    return fates


def _rewritten(results: Iterable[SnapshotResult]) -> str:
    """What ``--featviz-update`` did with the drifted snapshots: it rewrote their goldens, except where it wrote the
    device's own golden beside the shared one it compared with (environment-keyed goldens), which it left alone."""
    updated = [result for result in results if result.outcome == UPDATED]
    keyed = sum(result.update_dir is not None for result in updated)
    if not keyed:
        return "rewritten"
    beside = (
        "written as the device's own golden, the shared golden left as it was"
        if keyed == 1
        else "written as the device's own goldens, the shared goldens left as they were"
    )
    return beside if keyed == len(updated) else f"{len(updated) - keyed} rewritten; {keyed} {beside}"


def create_missing(missing: list[SnapshotResult]) -> str | None:
    """The command that creates the goldens of all the ``missing`` snapshots, by their node ids (every one of them:
    test files or a folder would also create the goldens of tests the run deselected, a GPU-only test's on a CPU);
    ``None`` when no message holds a command. Built from each missing snapshot's own command (its options, its node
    id relative to where pytest ran). It runs ``--featviz-create``, which rewrites no golden: a test that also
    drifted, or drifts in a snapshot after its missing one, fails on that drift and shows it, where
    ``--featviz-update`` would have accepted it unseen."""
    import shlex

    from pytest_featviz.snapshot import CREATE_WITH

    commands = []
    for result in missing:
        line = next((ln for ln in result.message.splitlines() if ln.startswith(CREATE_WITH)), None)
        if line is not None:
            commands.append(shlex.split(line[len(CREATE_WITH) :]))
    if not commands:
        return None
    return shlex.join([*commands[0][:-1], *dict.fromkeys(command[-1] for command in commands)])


def _create_missing(missing: list[SnapshotResult]) -> str:
    """The summary's line with :func:`create_missing`'s command."""
    command = create_missing(missing)
    if command is None:
        return "create the missing goldens with --featviz-create and the node ids of the failing tests"
    return f"create the missing goldens with:  {command}"


def _unreadable(results: list[SnapshotResult]) -> list[str]:
    """The summary's lines on the goldens that could not be read, each once (the runs of a repeated test share
    them), with the error its test failed with: a test marked xfail hides it otherwise."""
    errors: dict[str, str] = {}
    for result in results:
        errors.setdefault(display_path(result.golden_dir), result.message.splitlines()[0] if result.message else "")
    shown = sorted(errors)[:UNREACHED_LISTED]
    lines = [
        f"{len(errors)} golden snapshot(s) could not be read (the failing test says how to fix each):",
        *(f"  {golden}: {errors[golden]}" for golden in shown),
    ]
    if len(errors) > len(shown):
        lines.append(f"  and {len(errors) - len(shown)} more")
    return lines


def _errors(error: BaseException | None) -> list[BaseException]:
    """``error`` and every error it holds: its chain of causes and contexts (re-raised, or raised again while handling
    it), the errors an ``ExceptionGroup`` collects, and the error a failed doctest example raised."""
    found: list[BaseException] = []
    seen: set[int] = set()
    waiting = [error] if error is not None else []
    while waiting:
        error = waiting.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        found.append(error)
        held = [error.__cause__, error.__context__, *getattr(error, "exceptions", ())]
        # doctest's UnexpectedException holds its exc_info; MultipleDoctestFailures a list of those
        for failure in [error, *getattr(error, "failures", ())]:
            info = getattr(failure, "exc_info", None)
            if isinstance(info, tuple) and len(info) == 3:
                held.append(info[1])
        waiting.extend(e for e in held if isinstance(e, BaseException))
    return found


def _failed_by(error: BaseException | None, failure: str, records: Iterable[SnapshotResult]) -> set[int]:
    """The ids of the drifted ``records`` that failed a test phase: whose ``FeatureDriftError`` is ``error`` or one it
    holds (:func:`_errors`), or whose message the failure repeats (``failure``: the errors' text and the report's; an
    assert on collected drift messages, a plugin of soft assertions). The others its test caught."""
    from pytest_featviz.outcomes import FeatureDriftError

    errors = _errors(error)
    found = {id(e.result) for e in errors if isinstance(e, FeatureDriftError) and e.result is not None}
    if not failure and not errors:
        return found
    text = "\n".join([failure, *map(str, errors)])
    for record in records:
        first = record.message.splitlines()[0] if record.message else ""
        if first and first in text:
            found.add(id(record))
    return found


def _run_key(item: pytest.Item) -> str:
    """Which item, in which process, a test report's records belong to: node ids need not be unique."""
    return f"{os.getpid()}:{id(item)}"


class XdistClearing:
    """On an xdist controller, removes the last report when the first worker has collected tests to run (the
    controller's own session collects none). Its hook is optional: without xdist it is never called (and xdist
    loaded as ``-p xdist.plugin`` is not the plugin named ``xdist``, so registration does not depend on it)."""

    def __init__(self, tracker: SessionTracker, config: pytest.Config) -> None:
        self.tracker, self.config = tracker, config

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        if ids:  # before any test is scheduled
            self.tracker.clear_last_report(self.config)


class SessionTracker:
    """Collects the result records of every test (also from xdist workers) and prints the summary."""

    def __init__(self, settings: Settings, html: str | None = None, setup_only: bool = False) -> None:
        self.settings = settings
        # pytest-html writes a page (--html): the test phase whose report carries the pictures to the test's row
        # (plugin.html_phase)
        self.html = html
        self.setup_only = setup_only  # --setup-only: fixtures run, test bodies never do
        self._unreached: list[Path] | None = None  # unreached(), once the session's records are all in
        # The records of each item (by a key unique per item and process), with the run of the item they are from.
        self.runs: dict[str, tuple[int, list[SnapshotResult]]] = {}
        # The records that created or rewrote a golden, of every run of every item: a run that pytest-rerunfailures
        # repeats does not count in the snapshots compared, yet the goldens it wrote are written.
        self.written: list[SnapshotResult] = []
        # The tests that ended failed or marked xfail: the goldens an update rewrote in them (in any of their runs,
        # as self.written holds them) may have held a drift the test expects (a known regression kept as xfail, a
        # pytest.raises(FeatureDriftError)), and the summary gives the way back.
        self.failed_or_xfail: set[str] = set()
        self.index: Path | None = None
        # Why the report directory could not be cleared or written (a read-only checkout, a file in its place):
        # said in the summary; the tests' own outcomes stand.
        self.report_errors: list[str] = []
        self.running: pytest.Item | None = None  # the item whose protocol started last (for an interrupted run)
        self.cleared = False  # whether the last report was removed (once per session)
        self.finished: set[str] = set()  # the tests whose teardown was reported: a run that ended early ran fewer

    # The last report is removed just before the first test runs, not at session start: a run of none
    # (--collect-only, --fixtures, --setup-plan, a -k that selects nothing, a collection error) leaves it be. The
    # controller (or a serial run) owns the report directory.

    def clear_last_report(self, config: pytest.Config) -> None:
        option = config.option
        # --setup-only still runs fixtures, and a snapshot taken in one is written: it clears like a run of tests
        if self.cleared or any(getattr(option, name, False) for name in ("collectonly", "setupplan")):
            return
        self.cleared = True
        from pytest_featviz.manifest import remove_stale

        try:
            remove_stale(self.settings.report_dir)
        except (OSError, ValueError) as exc:  # ValueError: a manifest holding a NUL byte
            where = display_path(self.settings.report_dir)
            self.report_errors.append(f"could not remove the previous report in {where}: {exc}")

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> None:
        # collection errors stop the run before its first test (unless --continue-on-collection-errors); an xdist
        # controller collects nothing itself and clears when a worker's collection arrives (XdistClearing)
        stopped = session.testsfailed and not session.config.option.continue_on_collection_errors
        distributed = session.config.pluginmanager.getplugin("dsession") is not None
        # pytest 7's xdist controller session has no items attribute at all
        items = getattr(session, "items", ())
        if items and not stopped and not distributed and not hasattr(session.config, "workerinput"):
            self.clear_last_report(session.config)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        # Each run of a test starts with no records: a rerun (pytest-rerunfailures) counts only its own snapshots.
        self.running = item
        earlier = item.stash.get(RESULTS_KEY, [])
        if earlier:  # the item runs again (pytest-rerunfailures): what its last attempt wrote goes
            from pytest_featviz.report import Reporter

            Reporter(self.settings.report_dir, self.settings.golden_dir).discard(earlier)
        item.stash[RESULTS_KEY] = []
        item.stash[SENT_KEY] = 0
        item.stash[RUN_KEY] = item.stash.get(RUN_KEY, 0) + 1
        item.user_properties[:] = [p for p in item.user_properties if not str(p[0]).startswith("featviz:")]

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
        outcome = yield
        report = outcome.get_result()
        records = item.stash.get(RESULTS_KEY, [])
        if call.when == "teardown" and records and item.config.getoption("xmlpath", None):
            from pytest_featviz.outputs import attachment_lines

            # junitxml writes captured stdout to <system-out> (junit_logging=system-out/all) from the teardown
            # report, the last one: it gets the attachments of this run's snapshots (fixture teardowns' too), and
            # only this run's (a test run again by pytest-rerunfailures has a <testcase> per run).
            attachments = attachment_lines(records)
            if attachments:
                report.sections.append(("Captured stdout call", attachments))  # "teardown" would show in the terminal
        # pytest-html shows the extras of a test's own setup, call and teardown reports, not of its subtests' (made
        # here as call reports too): every picture of the run goes with the teardown report, the last one (the call
        # report before pytest-html 4.2, which drops a passed teardown report, extras and all).
        if call.when == self.html and records:
            from pytest_featviz.outputs import html_extras

            report.extras = [*getattr(report, "extras", []), *html_extras(records)]
        sent = item.stash.get(SENT_KEY, 0)
        if len(records) <= sent:
            return
        # Each record travels once, with the first report made after its snapshot: the call report, a subtest's
        # report, or the teardown report of a snapshot taken in a fixture's teardown. A drift that is not what failed
        # this phase was caught by the test (pytest.raises(FeatureDriftError): a test that a change is detected),
        # whatever else failed after it. A test marked xfail that failed expected its drifts (the session marks them).
        new, item.stash[SENT_KEY] = records[sent:], len(records)
        if not hasattr(report, "wasxfail") or report.passed:
            failure = report.longreprtext if report.failed else ""
            raised = _failed_by(call.excinfo.value if call.excinfo is not None else None, failure, new)
            new = [
                replace(record, caught=True) if record.outcome == DRIFTED and id(record) not in raised else record
                for record in new
            ]
        # Plain JSON-able attributes travel with the report from an xdist worker to the controller. The run tells
        # the controller which run of which item the records belong to (node ids need not be unique).
        report.featviz = [record.to_dict() for record in new]
        report.featviz_run = [_run_key(item), item.stash.get(RUN_KEY, 1)]
        from pytest_featviz.outputs import junit_properties

        properties = junit_properties(new)
        item.user_properties.extend(properties)  # junitxml reads them from the teardown report, made from the item
        if call.when == "teardown":  # made already: a snapshot in a fixture's teardown
            report.user_properties.extend(properties)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int | pytest.ExitCode) -> None:
        if hasattr(session.config, "workerinput"):
            return
        if not self.results:  # no report to write (a suite without snapshots, --collect-only): not even imported
            from pytest_featviz.manifest import tidy

            tidy(self.settings.report_dir)  # the last report, cleared, leaves no folder behind
            return
        from pytest_featviz import manifest, outputs, report

        # -x and --maxfail set shouldfail at the failure that reaches the limit, also at the last test
        early = bool(session.shouldstop or session.shouldfail) and len(self.finished) < session.testscollected
        stopped = exitstatus == pytest.ExitCode.INTERRUPTED or early
        run = _run_facts(self.settings, stopped)
        root = session.config.rootpath
        unchecked = self.unreached()
        unwritten: str | None = None  # why the report could not be written
        try:
            self.index = report.write_session_report(
                self.results, self.settings.report_dir, root, self.settings.report_all, run, unchecked
            )
        except OSError as exc:
            unwritten = f"could not write the report in {display_path(self.settings.report_dir)}: {exc}"
            self.report_errors.append(unwritten)
        else:
            if self.index is None:  # a report whose every file went (a rerun passed) leaves no folder behind
                manifest.tidy(self.settings.report_dir)
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        # the job summary needs nothing from the report directory: it is written where the report could not be
        if summary and (self.index is not None or unwritten is not None):
            data = report.report_data(
                self.results, self.settings.report_dir, root, self.settings.report_all, run, unchecked
            )
            missing = create_missing([r for r in self.results if r.outcome == MISSING])
            text = outputs.step_summary(data, self.index, missing, unwritten)
            try:
                outputs.append_step_summary(Path(summary), text)
            except OSError as exc:
                self.report_errors.append(f"could not append to the GitHub step summary {summary}: {exc}")

    def unreached(self) -> list[Path]:
        """The golden snapshots of the failing tests that they did not check (:mod:`pytest_featviz.unchecked`), made
        once for the report and the summary; none under ``--setup-only``, where no test body was to run (an update
        stops only at an unreadable golden, which it does not re-create: a Git LFS pointer, a newer format, a file
        in the way)."""
        if self._unreached is None:
            self._unreached = []
            if self.results and not self.setup_only:
                from pytest_featviz.unchecked import unreached_snapshots

                self._unreached = unreached_snapshots(self.results, keyed=self.settings.golden_key == "device")
        return self._unreached

    def _accept_line(self, config: pytest.Config) -> str:
        """The summary's command that accepts every drift the report shows (``featviz promote``, with what its
        report needs told), when a test drifted other than as it expected (xfail, or a drift it caught); else
        ``""``."""
        from pytest_featviz.report import CURRENT, Reporter

        accepted = [r for r in self.results if r.outcome == DRIFTED and not r.expected and CURRENT in r.artifacts]
        drifted = {r.test_id for r in accepted}
        if not drifted:
            return ""
        # the runs of a repeated test (pytest-repeat) share its goldens: promote writes each once
        goldens = len({r.update_dir or r.golden_dir for r in accepted})
        shared = f" ({goldens} golden snapshot(s): repeated runs share theirs)" if goldens < len(drifted) else ""
        settings = self.settings
        reporter = Reporter(
            settings.report_dir,
            settings.golden_dir,
            rootdir=config.rootpath,
            invocation_dir=config.invocation_params.dir,
        )
        missing = sum(r.outcome == MISSING and CURRENT in r.artifacts for r in self.results)
        also = f" and create its {missing} missing golden(s)" if missing else ""
        return (
            f"once the report is reviewed, accept its {len(drifted)} drifted test(s){shared}{also} with:"
            f"  {reporter.promote_command()}"
        )

    @property
    def results(self) -> list[SnapshotResult]:
        """Every snapshot's record, of each item's last run, in the order the reports came."""
        return [result for _, results in self.runs.values() for result in results]

    def pytest_keyboard_interrupt(self) -> None:
        """Count the snapshots of the test that Ctrl-C stopped: no report carries them, yet under --featviz-update
        their goldens are written, and the summary would leave them out."""
        item = self.running
        if item is None or hasattr(item.config, "workerinput"):
            return
        records, sent = item.stash.get(RESULTS_KEY, []), item.stash.get(SENT_KEY, 0)
        if len(records) > sent:
            item.stash[SENT_KEY] = len(records)
            key = _run_key(item)
            run, results = self.runs.get(key, (item.stash.get(RUN_KEY, 1), []))
            self.runs[key] = (run, [*results, *records[sent:]])

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "teardown":
            self.finished.add(report.nodeid)
        records = getattr(report, "featviz", None)
        outcome = str(report.outcome)
        if self.settings.update and outcome != "rerun" and (outcome == "failed" or hasattr(report, "wasxfail")):
            self.failed_or_xfail.add(report.nodeid)
        if not records:
            return
        from pytest_featviz.records import SnapshotResult

        # pytest-rerunfailures logs the reports of a run it repeats (serially and from xdist workers): its snapshots
        # do not count, its writes do
        self.written.extend(SnapshotResult.from_dict(r) for r in records if r.get("outcome") in (CREATED, UPDATED))
        if str(report.outcome) == "rerun":
            return
        item, run = getattr(report, "featviz_run", None) or (report.nodeid, 1)
        held, results = self.runs.get(item, (run, []))
        if run > held:  # the item runs again: only its last run counts, its subtests and setup snapshots too
            results = []
        expected = str(report.outcome) == "skipped" and hasattr(report, "wasxfail")  # an xfail test that failed
        for record in map(SnapshotResult.from_dict, records):  # its drifts were expected, not its matches
            if record.outcome == DRIFTED and expected and not record.caught:
                record = replace(record, xfail=True)
            results.append(record)
        self.runs[item] = (run, results)

    def _unwritten(self) -> list[str]:
        """The golden snapshots an update or create run could not write, each once."""
        return list(dict.fromkeys(r.update_dir or r.golden_dir for r in self.results if r.unwritten))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.results and not self.report_errors:
            return
        from pytest_featviz.outputs import checked_line, unchecked_sentence
        from pytest_featviz.report import summary_counts

        counts = summary_counts(self.results)
        terminalreporter.write_sep("=", "featviz")
        if self.settings.update:  # nothing drifts or goes missing: it is rewritten or created
            recreated = [r for r in self.results if r.recreated]
            drifted = [r for r in self.results if r.outcome == UPDATED and not r.recreated]
            terminalreporter.write_line(
                f"{len(self.results)} snapshot(s) compared: {counts[MATCHED]} matched, {len(drifted)} drifted"
                + (f" ({_rewritten(drifted)})" if drifted else "")
                + (f", {len(recreated)} damaged (re-created)" if recreated else "")
                + f", {counts[CREATED]} without a golden (created)"
                + (f", {counts[UNREADABLE]} unreadable" if counts[UNREADABLE] else "")
                + (f", {_not_written(self.results)}" if self._unwritten() else "")
            )
        elif self.settings.create:  # nothing goes missing: it is created; a drift fails as in a check
            terminalreporter.write_line(
                f"{checked_line(counts, creating=True)}, {counts[CREATED]} without a golden (created)"
            )
        else:
            terminalreporter.write_line(checked_line(counts))
        fates = golden_fates([*self.written, *self.results])  # each golden once; the line above counts calls
        if self.settings.update:
            terminalreporter.write_line(
                f"goldens: {fates[CREATED]} created, {fates[UPDATED]} updated, {fates[MATCHED]} unchanged"
                f" (in {display_path(self.settings.golden_dir)})"
            )
            written = [*self.written, *self.results]
            damaged = {r.golden_dir for r in written if r.recreated}
            if damaged:  # it passes now: say what was damaged, so that the new pictures are looked at
                terminalreporter.write_line(
                    f"{len(damaged)} damaged golden snapshot(s) re-created from this run (what was damaged could not"
                    " be compared, and the rest is rewritten as it is now: review their pictures before committing):"
                    f" {_listed(sorted(map(display_path, damaged)))}"
                )
            # a drift accepted unseen (by a run meant to repair a damaged golden, say) is named too; each golden
            # once, as the goldens line counts it: one that this run created is new, not rewritten
            rewritten = [g for g, fate in _fates(written).items() if fate == UPDATED and g not in damaged]
            if rewritten:
                terminalreporter.write_line(
                    f"{len(rewritten)} drifted golden snapshot(s) rewritten (review their pictures in the diff before"
                    f" committing): {_listed(sorted(map(display_path, rewritten)))}"
                )
                # a run that pytest-rerunfailures repeats may have rewritten it, the last run finding it matching
                unexpected = {
                    r.golden_dir
                    for r in written
                    if r.outcome == UPDATED and r.update_dir is None and r.test_id in self.failed_or_xfail
                }
                back = sorted(set(rewritten) & unexpected)
                if back:
                    start = terminalreporter.config.invocation_params.dir
                    paths = " ".join(shlex.quote(display_path(g, start)) for g in back)
                    terminalreporter.write_line(
                        f"  {len(back)} of them in tests that failed or are marked xfail: if a golden held a drift"
                        " its test expects (an xfail, a pytest.raises(FeatureDriftError)), put it back:"
                        f" git checkout -- {paths}"
                    )
            # environment-keyed goldens: a drift from the shared golden writes the device's own, new to git
            beside = {r.update_dir for r in written if r.outcome == UPDATED and r.update_dir is not None}
            if beside:
                terminalreporter.write_line(
                    f"{len(beside)} device golden snapshot(s) written where the shared one drifted, which is left as"
                    " it was (review their pictures before committing):"
                    f" {_listed(sorted(map(display_path, beside)))}"
                )
        elif self.settings.create:
            kept = ""
            if counts[DRIFTED]:
                one = counts[DRIFTED] == 1
                which = "a drifted one is left as it was" if one else "drifted ones are left as they were"
                kept = f"; {which} (accept a drift with --featviz-update)"
            terminalreporter.write_line(
                f"goldens: {fates[CREATED]} created (in {display_path(self.settings.golden_dir)}){kept}"
            )
        elif counts[MISSING]:
            terminalreporter.write_line(_create_missing([r for r in self.results if r.outcome == MISSING]))
            stale = terminalreporter.config.pluginmanager.get_plugin("featviz-stale")
            if getattr(stale, "moves", None):  # printed in the stale section, above this one
                terminalreporter.write_line(
                    "  but where a test was renamed or moved, move its goldens instead (the git mv in the stale"
                    " section above), so that they are compared"
                )
        unwritten = self._unwritten()
        if unwritten:  # the drift or missing golden stays: its test failed with the OS's reason
            terminalreporter.write_line(
                f"{len(unwritten)} golden snapshot(s) could not be written and were left as they were (each test's"
                f" error says why): {_listed(sorted(map(display_path, unwritten)))}"
            )
        if counts[UNREADABLE]:
            for line in _unreadable([r for r in self.results if r.outcome == UNREADABLE]):
                terminalreporter.write_line(line)
        unreached = self.unreached()
        if unreached:
            terminalreporter.write_line(
                f"{unchecked_sentence(len(unreached))}: {_listed([display_path(path) for path in unreached])}"
            )
        if self.index is not None:
            terminalreporter.write_line(f"report: {display_path(self.index)}")
            if not self.settings.update:
                accept = self._accept_line(terminalreporter.config)
                if accept:
                    terminalreporter.write_line(accept)
        for error in self.report_errors:
            terminalreporter.write_line(f"featviz: {error}", yellow=True)
        if self.settings.calibrate:
            from pytest_featviz.calibrate import summary_lines  # imports nothing heavy: the controller has no torch

            terminalreporter.write_sep("=", "featviz calibrate")
            for line in summary_lines(self.results):
                terminalreporter.write_line(line)
