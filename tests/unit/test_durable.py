"""durable: files and directories replaced so that a reader never sees half of them (one file through a rename;
the files of a directory written side by side, every writer ended before an error is raised, each forked process
with writers of its own). Whole-snapshot switches, concurrent writers and leftovers are tested through the golden
writes in test_golden_faults.py."""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import pytest

from pytest_featviz import durable
from pytest_featviz.durable import write_atomic


def test_write_atomic_failure_keeps_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "layer.png"
    assert write_atomic(target, b"old") is True
    before = target.stat().st_mtime_ns
    assert write_atomic(target, b"old") is False  # same bytes: not written
    assert target.stat().st_mtime_ns == before

    def broken_replace(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layer.png"]


def test_a_failed_write_is_raised_only_after_every_other_writer_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The files of a snapshot are written side by side; the caller removes the staging folder on error, so no writer
    # may still be filling it when the error arrives.

    real = durable._write_file
    started = threading.Barrier(2, timeout=5)

    def write(path: Path, data: bytes) -> None:
        if path.name == "slow.png":
            started.wait()
            time.sleep(0.2)
            real(path, data)
        elif path.name == "bad.png":
            started.wait()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        else:
            real(path, data)

    monkeypatch.setattr(durable, "_write_file", write)
    with pytest.raises(OSError, match="No space left"):
        durable._write_together(tmp_path, {"bad.png": b"1", "slow.png": b"2", "fast.png": b"3"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fast.png", "slow.png"]


def _write_in_child(folder: str) -> None:
    durable._write_together(Path(folder), {"child.png": b"2"})


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")  # Python >= 3.12
def test_a_forked_child_writes_goldens_with_its_own_writers(tmp_path: Path) -> None:
    # A child forked after a write inherits the writer pool but not its threads (a DataLoader worker, a test that
    # forks); its writes must not wait forever on threads that do not exist in it.
    import multiprocessing

    durable._write_together(tmp_path, {"parent.png": b"1"})
    child = multiprocessing.get_context("fork").Process(target=_write_in_child, args=(str(tmp_path),))
    child.start()
    child.join(timeout=20)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child's golden write never finished")
    assert child.exitcode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["child.png", "parent.png"]


REFUSED_COPY = """
import os, sys
from pathlib import Path
from pytest_featviz import durable

snapshot = Path(sys.argv[1]) / "0"
(snapshot / "notes").mkdir(parents=True)
(snapshot / "notes" / "n.txt").write_text("a user's note")
os.chmod(snapshot / "notes", 0o555)
(snapshot / "secret.txt").write_text("unreadable")
os.chmod(snapshot / "secret.txt", 0)
try:
    durable.switch_directory(snapshot, {"0.png": b"new"}, carried=[snapshot / "notes", snapshot / "secret.txt"])
except PermissionError as error:
    print("refused", error.filename)
print(sorted(path.name for path in snapshot.parent.iterdir()))
"""


def test_a_failed_switch_leaves_no_staging_directory_even_with_read_only_folders_in_it(
    tmp_path: Path, without_root_powers: list[str]
) -> None:
    """A user's read-only folder, copied into the new snapshot before an unreadable file stopped the copy, kept its
    mode there: the cleanup could not empty it and left a hidden ``.0.featviz-new-*`` folder that ``git add -A``
    would pick up."""
    import subprocess
    import sys

    command = [*without_root_powers, sys.executable, "-c", REFUSED_COPY, str(tmp_path)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    finally:
        for path in (tmp_path / "0" / "notes", tmp_path / "0" / "secret.txt"):
            path.chmod(0o755)
    assert result.stdout.splitlines() == [f"refused {tmp_path / '0' / 'secret.txt'}", "['0']"], result.stderr
    assert (tmp_path / "0" / "notes" / "n.txt").read_text() == "a user's note"
