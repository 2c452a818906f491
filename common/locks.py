"""One run at a time per run folder: an exclusive ``fcntl.flock`` on ``FOLDER/.lock``, held for the whole run.

The lock file records its holder (PID, host, start time, command) so that a second run fails at once with one
line naming it. The kernel releases a flock when its process dies however it dies (SIGKILL included), so a lock
file left behind by a killed run is simply taken over by the next one: there is no stale lock to clean up by
hand. POSIX only (Linux, macOS); on a file system without flock support the lock is an error, never ignored.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import shlex
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

LOCK_FILE = ".lock"


class RunLockedError(RuntimeError):
    """Another process holds the run folder's lock; the message names its PID and start time."""


class RunLock:
    """``with RunLock(folder, "vla bench"):`` -- exclusive use of ``folder`` (created if missing).

    Raises (on enter):
        RunLockedError: another live process holds the lock.
        NotADirectoryError: ``folder`` exists and is not a folder.
    """

    def __init__(self, folder: str | os.PathLike, what: str) -> None:
        self.folder = Path(folder)
        self.what = what
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        return self.folder / LOCK_FILE

    def acquire(self) -> RunLock:
        """Take the lock (see the class docstring); returns self."""
        if self.folder.exists() and not self.folder.is_dir():
            raise NotADirectoryError(f"{self.folder} exists and is not a folder")
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _wait_for_holder(fd)
            os.close(fd)
            raise RunLockedError(
                f"{self.folder} is in use by {holder.get('what', 'another run')} (PID {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')}, started {holder.get('started', '?')}): wait for it to finish or stop it"
            ) from None
        holder = {
            "what": self.what,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": shlex.join(sys.argv),
        }
        data = (json.dumps(holder) + "\n").encode()
        os.pwrite(fd, data, 0)  # write first, then cut: a reader never sees an empty file while we hold it
        os.ftruncate(fd, len(data))
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (the file stays; the next run takes it over)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def _read_holder(fd: int) -> dict:
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _alive(pid: object) -> bool:
    """Whether ``pid`` names a running process (signal 0 probes without sending anything)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        pass
    return True


def _wait_for_holder(fd: int, timeout_s: float = 2.0) -> dict:
    """The holder's record, waiting up to ``timeout_s`` for a holder that has just taken the lock to write it.

    Between the winner's ``flock`` and its write, the file is empty or still names the previous (dead) holder;
    we poll until it names a live process, else return what is there (``{}`` when unreadable).
    """
    deadline = time.monotonic() + timeout_s
    holder = _read_holder(fd)
    while not _alive(holder.get("pid")) and time.monotonic() < deadline:
        time.sleep(0.02)
        holder = _read_holder(fd)
    return holder


class RunFolder:
    """``with RunFolder(path, "vla train") as folder:`` -- create ``path`` if needed and hold its :class:`RunLock`.

    When this call created the folder and the block raises an error (an ``Exception``; not Ctrl-C) before
    ``keep_partial()`` was called, the folder is removed again, so a run that fails on its inputs leaves nothing
    behind; a folder that existed before is never removed.

    Raises:
        NotADirectoryError: ``path`` exists and is a file. RunLockedError: another run holds the folder.
    """

    def __init__(self, path: str | os.PathLike, what: str) -> None:
        self.path = Path(path)
        self.what = what
        self._created = False
        self._keep = False
        self._lock: RunLock | None = None

    def keep_partial(self) -> None:
        """From now on the folder holds results worth keeping even if the run fails (a checkpoint, records)."""
        self._keep = True

    def __enter__(self) -> RunFolder:
        if self.path.exists() and not self.path.is_dir():
            raise NotADirectoryError(f"{self.path} exists and is not a folder (choose another output folder)")
        self._created = not self.path.exists()
        self._lock = RunLock(self.path, self.what).acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        assert self._lock is not None
        self._lock.release()
        if kind is not None and issubclass(kind, Exception) and self._created and not self._keep:
            import shutil

            shutil.rmtree(self.path, ignore_errors=True)
