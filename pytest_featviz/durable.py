"""Durable writes: files and whole directories replaced so that a reader never sees half of them.

:func:`write_atomic` replaces one file through a temporary file and a rename. :func:`switch_directory` replaces a
directory as a whole: the new one is written beside it (each file flushed to disk, the files side by side), then
renamed into place. The hidden siblings a switch makes carry their writer (time, host, process id), so a write
removes what a killed run left (:func:`remove_leftovers`) but never the directories of a write going on in another
process, and two processes switching one directory at once both succeed, the last one's directory staying whole.
An exclusive switch puts a directory in place only where there is none; a reader waits for another process's
switch going on (:func:`wait_for_writers`); :func:`locked` serializes the writers of one folder where the OS can.
The golden directory (:mod:`pytest_featviz.goldenwrite`) and the drift report (:mod:`pytest_featviz.report`) write
through this module.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import hashlib
import os
import re
import secrets
import shutil
import socket
import stat
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def write_atomic(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``; return whether anything changed.

    An existing file with the same bytes is left alone (same mtime). The temporary file is removed on failure.
    """
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return True


def _write_file(path: Path, data: bytes) -> None:
    """Create ``path`` (it must not exist) with ``data``, flushed to disk."""
    with path.open("xb") as stream:
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())


_writers: tuple[int, concurrent.futures.ThreadPoolExecutor] | None = None  # (pid that made it, pool)


def _write_together(folder: Path, files: dict[str, bytes]) -> None:
    """Create each of ``files`` in ``folder`` with :func:`_write_file`, side by side.

    Most of a write is waiting for ``fsync``; issued together, the waits overlap and a journaling file system
    commits several files at once (a ResNet-18 snapshot's six files: 1.7-1.9 ms instead of 2.6-3.7 ms one after the
    other on this project's ext4 VM; more where ``fsync`` is slow). Returns only when every write has ended, and
    raises the first error, so that the caller never removes a folder a writer is still filling.
    """
    global _writers
    if _writers is None or _writers[0] != os.getpid():  # a forked child inherits the pool but not its threads
        _writers = os.getpid(), concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="featviz-write")
    pool = _writers[1]
    futures = [pool.submit(_write_file, folder / name, data) for name, data in files.items()]
    try:
        for future in futures:
            future.result()
    finally:
        concurrent.futures.wait(futures)


def _fsync_directory(directory: Path) -> None:
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:  # Windows cannot open a directory; its renames are durable enough
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


# Hidden siblings a write makes: ``.<name>.featviz-new-<owner>-XXXXXXXX`` (the snapshot being written) and
# ``.<name>.featviz-old-<owner>-XXXXXXXX`` (the one it replaces, for the moment between two renames). The owner,
# ``<seconds since the epoch, hex>-<host tag>-<pid>``, tells a write still going on in another pytest process
# (two --featviz-update runs at once, xdist workers) from a leftover of a run that was killed; names without it
# come from versions before the owner was recorded.
_SIBLING = r"\.featviz-(new|old)-(?:([0-9a-f]+)-([0-9a-f]{6})-([0-9]+)-)?[a-z0-9_]{8}"
# A leftover whose owner cannot be asked (another host, or a pid the OS may have reused) is abandoned after this long;
# a write takes milliseconds.
ABANDONED_AFTER_S = 3600
SWITCH_ATTEMPTS = 8  # renames lost to other writers of the same snapshot before a write gives up
WAIT_FOR_WRITERS_S = 10.0  # how long a reader waits for another process's write of the directory it reads


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:6]


def _owner() -> str:
    return f"{int(time.time()):x}-{_host_tag()}-{os.getpid()}"


def leftovers(directory: Path) -> list[Path]:
    """Hidden siblings of ``directory`` that writes made (``.<name>.featviz-new-*`` / ``-old-*``), but not those of
    a write going on in another process of this host (:func:`wait_for_writers` waits for it); the copies moved aside
    first, since one of those holds what ``directory`` held before (a run killed between the two renames of
    :func:`_put_in_place`)."""
    found = [(path, match) for path, match in _siblings(directory) if not _written_here_now(match)]
    return [path for path, match in found if match.group(1) == "old"] + [
        path for path, match in found if match.group(1) == "new"
    ]


def _siblings(directory: Path) -> list[tuple[Path, re.Match[str]]]:
    pattern = re.compile(re.escape(f".{directory.name}") + _SIBLING)
    try:
        entries = sorted(directory.parent.iterdir())
    except OSError:
        return []
    found = [(path, pattern.fullmatch(path.name)) for path in entries]
    return [(path, match) for path, match in found if match is not None and path.is_dir()]


def _abandoned(match: re.Match[str]) -> bool:
    """Whether the write that made a hidden sibling is over: it was killed, or it is this process's own."""
    stamp, host, pid = match.group(2), match.group(3), match.group(4)
    if stamp is None:
        return True  # written before owners were recorded
    if time.time() - int(stamp, 16) > ABANDONED_AFTER_S:
        return True
    if host != _host_tag():
        return False  # another machine's write on a shared drive, still recent
    return int(pid) == os.getpid() or not _process_alive(int(pid)) or _started_after(int(pid), int(stamp, 16))


# how much later than a write's owner stamp a process must have started to be another process under the same pid: the
# stamp is whole seconds, and the boot time the start is counted from is rounded to seconds
_START_SLACK_S = 2


def _started_after(pid: int, seconds: int) -> bool:
    """Whether process ``pid`` started after ``seconds`` (since the epoch), so that it is not the one that began a
    write then: the OS gave the pid of a killed writer to a new process. Linux only (``/proc``); ``False`` where
    the start is not known, leaving the leftover to :data:`ABANDONED_AFTER_S`."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        boot = next(line for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime "))
        ticks = int(status.rpartition(")")[2].split()[19])  # field 22, starttime; the name before ")" may hold spaces
        started = int(boot.split()[1]) + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, StopIteration, IndexError, ValueError):
        return False
    return started > seconds + _START_SLACK_S


def _process_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill would terminate it on Windows: rely on the age alone
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists but is another user's
        return True
    return True


def _remove_tree(path: Path) -> None:
    """Remove a directory this module made, also when its files were made read-only (a read-only golden that was
    replaced); errors are ignored: a leftover is removed by a later write."""

    def writable_and_retry(function: Any, name: str, *_: Any) -> None:
        folder = Path(os.path.dirname(name))
        if not folder.is_relative_to(path):  # never the permissions of a directory outside the one removed
            return
        with contextlib.suppress(OSError):
            os.chmod(folder, 0o700)
            function(name)

    if path.is_symlink():  # a link moved aside (never followed: what it leads to is not this module's)
        with contextlib.suppress(OSError):
            path.unlink()
        return
    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=writable_and_retry)
    else:
        shutil.rmtree(path, onerror=writable_and_retry)


def remove_leftovers(directory: Path) -> None:
    """Remove the hidden siblings of ``directory`` that killed writes left (never those of a write going on): every
    switch of the directory does, and so do ``--featviz-update`` on a snapshot that needs no write and prune."""
    for leftover, match in _siblings(directory):
        if _abandoned(match):
            _remove_tree(leftover)


def wait_for_writers(directory: Path, timeout: float = WAIT_FOR_WRITERS_S) -> bool:
    """Wait while another process of this host writes ``directory`` (a hidden sibling's owner is alive): an xdist
    worker creating or replacing the golden that a repeat of the same test reads. Gives up after ``timeout``
    seconds (a write takes milliseconds); a write of another host, on a shared drive, is not waited for. Returns
    whether it waited for one."""
    deadline = time.monotonic() + timeout
    delay = 0.002
    waited = False
    while any(_written_here_now(match) for _, match in _siblings(directory)) and time.monotonic() < deadline:
        waited = True
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    return waited


def stamp(directory: Path) -> tuple[int, int] | None:
    """What tells ``directory`` from the one a switch puts in its place (inode and change time); ``None`` when
    there is none."""
    try:
        status = os.stat(directory)
    except OSError:
        return None
    return status.st_ino, status.st_ctime_ns


def _written_here_now(match: re.Match[str]) -> bool:
    """Whether a hidden sibling belongs to a write going on in another process of this host."""
    host, pid = match.group(3), match.group(4)
    return host == _host_tag() and not _abandoned(match) and int(pid) != os.getpid()


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on the existing ``directory`` while the body runs: the body of another
    process locking it waits. Locks nothing where the OS or the file system has no ``flock`` (Windows, some network
    drives); callers must be correct without it, the lock only narrowing a race. Not re-entrant: each call opens
    the directory anew, so locking a directory again inside the body (the golden root is the parent of some
    snapshot directories) waits for ever."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # releases the lock


def switch_directory(
    directory: Path,
    files: dict[str, bytes],
    same: Iterable[str] = (),
    carried: Iterable[Path] = (),
    *,
    exclusive: bool = False,
) -> bool:
    """Replace ``directory`` as a whole by one holding ``files`` (name -> bytes); readers see the old directory or
    the new one, never a mix.

    The new directory is written beside the old one, each file flushed to disk, and renamed into place (see
    :func:`_put_in_place`). The files named in ``same`` keep the mtime of the file of that name in the old directory
    (their bytes did not change); the ``carried`` files and folders (someone else's, in the old directory) are
    copied in as they are, links as links. Raises ``OSError`` with nothing changed when the new directory cannot be
    written.

    With ``exclusive``, a directory that is there (not empty) is never replaced: the new one is put in place only
    where there is none (an empty one is taken), and ``False`` is returned, with nothing written, when another
    process put one there first. Returns ``True`` when the new directory is in place.
    """
    parent = directory.parent
    made = []  # the folders made for it, deepest first: a write that fails takes them back (a test folder of a new
    folder = parent  # golden left empty on a full disk)
    while not folder.exists() and folder != folder.parent:
        made.append(folder)
        folder = folder.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(directory)
        owner = _owner()
        staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.featviz-new-{owner}-", dir=parent))
    except BaseException:
        _remove_empty(made)
        raise
    try:
        _write_together(staging, files)
        # Each copy is best effort when another writer replaced the directory meanwhile (the bytes are in place).
        for name in same:
            with contextlib.suppress(FileNotFoundError):
                shutil.copystat(directory / name, staging / name)
        for name in files.keys() - set(same):  # a rewritten file keeps the permissions of the one it replaces
            with contextlib.suppress(FileNotFoundError):
                shutil.copymode(directory / name, staging / name)
        for other in carried:
            with contextlib.suppress(FileNotFoundError):
                if other.is_dir() and not other.is_symlink():
                    shutil.copytree(other, staging / other.name, symlinks=True)
                else:
                    shutil.copy2(other, staging / other.name, follow_symlinks=False)
        umask = os.umask(0)
        os.umask(umask)
        try:  # mkdtemp made it private: the permissions of the directory it replaces, else the umask's
            mode = stat.S_IMODE(directory.stat().st_mode)
        except OSError:
            mode = 0o777 & ~umask
        os.chmod(staging, mode)
        if exclusive:
            try:
                os.replace(staging, directory)  # POSIX takes an empty directory, never one with files in it
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST) and directory.is_dir():
                    _remove_tree(staging)
                    return False
                raise
        else:
            _put_in_place(staging, directory, owner)
    except BaseException:
        _remove_tree(staging)  # also a read-only folder copied in from the old directory, and the files in it
        _remove_empty(made)
        raise
    _fsync_directory(parent)
    return True


def _remove_empty(folders: Iterable[Path]) -> None:
    """Remove ``folders``, deepest first, as long as each is empty (another writer's files keep theirs)."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _put_in_place(staging: Path, directory: Path, owner: str) -> None:
    """Rename ``staging`` to ``directory``, moving the snapshot there aside first and deleting it after.

    Another process writing the same snapshot at the same moment can put its own directory in place between the two
    renames; then this write tries again, so the last writer wins and neither fails. Any other error restores the
    snapshot that was there, and so does an interruption in between (Ctrl-C, a timeout's exception).
    """
    for _ in range(SWITCH_ATTEMPTS):
        backup: Path | None = None  # where the snapshot that was there went
        aside = directory.with_name(f".{directory.name}.featviz-old-{owner}-{secrets.token_hex(4)}")
        try:
            if directory.exists():
                try:
                    os.replace(directory, aside)
                    backup = aside
                except FileNotFoundError:  # another writer moved it aside just now
                    pass
            os.replace(staging, directory)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST) and directory.exists():
                if backup is not None:  # superseded by the snapshot the other writer put in place
                    _remove_tree(backup)
                continue
            if backup is not None:
                os.replace(backup, directory)
            raise
        except BaseException:
            # interrupted between the renames (Ctrl-C, pytest-timeout's signal) with the process alive: the snapshot
            # that was there goes back, as after an error
            if aside.exists() and not directory.exists():
                os.replace(aside, directory)
            raise
        if backup is not None:
            _remove_tree(backup)
        return
    raise OSError(errno.EBUSY, f"other processes kept replacing it ({SWITCH_ATTEMPTS} attempts)", str(directory))
