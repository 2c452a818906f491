"""common.locks: one holder per run folder, a killed holder's lock taken over, failed runs leave no folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from common.locks import LOCK_FILE, RunFolder, RunLock, RunLockedError

REPO = Path(__file__).resolve().parents[2]
HOLD = (
    "import sys, time; from common.locks import RunLock; RunLock(sys.argv[1], 'vla bench').acquire(); "
    "print('held', flush=True); time.sleep(600)"
)


def _holder(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_live_holder_is_named_and_a_killed_one_is_taken_over(tmp_path: Path) -> None:
    proc = _holder(tmp_path / "run")
    try:
        with pytest.raises(RunLockedError, match=rf"in use by vla bench \(PID {proc.pid} on .*started 20"):
            RunLock(tmp_path / "run", "vla train").acquire()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert json.loads((tmp_path / "run" / LOCK_FILE).read_text())["pid"] == proc.pid, "a stale lock file stays"
    with RunLock(tmp_path / "run", "vla train"):
        holder = json.loads((tmp_path / "run" / LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid() and holder["what"] == "vla train"
        with pytest.raises(RunLockedError, match=f"PID {os.getpid()}"):
            RunLock(tmp_path / "run", "vla bench").acquire()  # a second open file description: also refused
    with RunLock(tmp_path / "run", "again"):
        pass


SLOW_WRITER = (
    "import fcntl, json, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
    "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(0.4); "
    "data = json.dumps({'what': 'vla train', 'pid': os.getpid()}).encode(); os.pwrite(fd, data, 0); "
    "os.ftruncate(fd, len(data)); time.sleep(600)"
)


def test_a_holder_caught_between_its_lock_and_its_record_is_still_named(tmp_path: Path) -> None:
    """The CI race: the loser read the lock file before the winner wrote its record and said "PID ?"."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / LOCK_FILE).write_text(json.dumps({"what": "old run", "pid": 2**22 + 12345}))  # dead PID
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITER, str(tmp_path / "run" / LOCK_FILE)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=rf"in use by vla train \(PID {proc.pid} on"):
            RunLock(tmp_path / "run", "vla bench").acquire()
    finally:
        proc.kill()
        proc.wait()


def test_run_folder_removes_what_it_created_when_the_run_fails_early(tmp_path: Path) -> None:
    with pytest.raises(ValueError), RunFolder(tmp_path / "new", "vla bench"):
        raise ValueError("bad input")
    assert not (tmp_path / "new").exists()
    with pytest.raises(ValueError), RunFolder(tmp_path / "kept", "vla bench") as folder:
        folder.keep_partial()
        raise ValueError("failed after the first record")
    assert (tmp_path / "kept").is_dir()
    (tmp_path / "old").mkdir()
    with pytest.raises(ValueError), RunFolder(tmp_path / "old", "vla bench"):
        raise ValueError("bad input")
    assert (tmp_path / "old").is_dir(), "a folder that existed before is never removed"
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="is not a folder"), RunFolder(tmp_path / "file", "vla bench"):
        pass
    with RunFolder(tmp_path / "fine", "vla bench"):
        pass
    assert (tmp_path / "fine").is_dir()
