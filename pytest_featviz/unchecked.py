"""The goldens the failing tests did not check: a test stops at its first drifted, missing or unreadable snapshot, so
the snapshots it would have checked after that one have no record of this run, and neither ``featviz promote`` nor
the report covers them. The terminal summary names them (the device's own golden where goldens are keyed by device),
so that the whole change of a test is accepted, not only its first part. One snapshot is what it is for stale goldens
(:func:`pytest_featviz.stale.shared_key`). This module imports nothing heavy; the golden layout only when the list is
made."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pytest_featviz.records import FAILING, UNREADABLE, SnapshotResult
from pytest_featviz.stale import shared_key, subdirectories


def unreached_snapshots(results: Iterable[SnapshotResult], keyed: bool) -> list[Path]:
    """Golden snapshots of drifted, missing or unreadable tests (not ones that expected it) that the run has no
    record of: the test raised at an earlier snapshot, so ``featviz promote`` and the report cover only part of its
    change (or its call is gone). A keyed golden and its shared one count as one snapshot as for stale goldens
    (:func:`pytest_featviz.stale.shared_key`), listed once: the one the test's device would check. Sorted, so a run
    under xdist lists them as a serial run does."""
    from pytest_featviz.golden import SIDECAR  # numpy: only in a run that took snapshots
    from pytest_featviz.goldenpath import key_suffix

    by_test: dict[str, list[SnapshotResult]] = {}
    for result in results:
        by_test.setdefault(result.test_id, []).append(result)
    # checked by any record: the runs of a repeated test (pytest-repeat) share its goldens, and one that passed
    # checked what another stopped before
    seen = {key for result in results for key in _checked_keys(result, keyed)}
    found: dict[str, Path] = {}  # by shared key: the directory the test's device would check
    for records in by_test.values():
        if not any(r.outcome in FAILING and not r.expected for r in records):
            continue  # passed, or drifted as it expected (xfail, or a test that caught it): nothing to accept
        device = next((r.device for r in records if r.device is not None), None) if keyed else None
        # the name's end that marks the device's own golden ("@cuda"): two directories share a key only when one is
        # the other's keyed golden, so within a key the name tells them apart (shared_key read their sidecars)
        own = key_suffix(device) if device is not None else None
        for folder in {Path(r.golden_dir).parent for r in records}:
            for snapshot in subdirectories(folder):  # sorted: a shared golden before its keyed ones
                key = shared_key(snapshot, keyed)
                if key in seen or not (snapshot / SIDECAR).is_file():
                    continue
                # the device's own golden where it has one (``second@cuda``), else the shared one it falls back to
                if key not in found or (own is not None and snapshot.name.endswith(own)):
                    found[key] = snapshot
    return sorted(found.values())


def _checked_keys(result: SnapshotResult, keyed: bool) -> set[str]:
    """:func:`~pytest_featviz.stale.shared_key` of the golden ``result`` checked. An unreadable device golden
    (``0@cuda``) has no sidecar to say which device made it, so the record's device does: the shared golden's key
    too, since the two are one snapshot, as for a device golden that could be read."""
    path = Path(result.golden_dir)
    keys = {shared_key(path, keyed)}
    if keyed and result.outcome == UNREADABLE and result.device is not None:
        from pytest_featviz.goldenpath import key_suffix

        own = key_suffix(result.device)
        if path.name.endswith(own) and len(path.name) > len(own):
            keys.add(shared_key(path.with_name(path.name[: -len(own)]), keyed))
    return keys
