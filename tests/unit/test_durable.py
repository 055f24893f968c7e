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
