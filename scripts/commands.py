"""Running the `vla` commands of a sweep: printed as the user would type them, children dying with their parent.

Shared by ``scripts.sweep`` (local variants) and ``scripts.sweep_ray`` (variants as Ray tasks).
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time

VLA = [sys.executable, "-m", "scripts.cli"]
"""How a sweep runs `vla` (this interpreter, so it works before the venv is on PATH)."""


def _die_with_parent() -> None:
    """preexec_fn: the child gets SIGKILL when this process dies (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))
    except (OSError, AttributeError):
        pass


def run_command(cmd: list[str], dry_run: bool = False, cwd: str | None = None) -> float:
    """Print ``cmd`` as the user would type it and run it (output streams through); returns its wall seconds.

    Raises:
        RuntimeError: the command failed (its own output says why; the message names it).
    """
    shown = ["vla", *cmd[len(VLA) :]] if cmd[: len(VLA)] == VLA else cmd
    print(f"\n$ {shlex.join(shown)}", flush=True)
    if dry_run:
        return 0.0
    start = time.perf_counter()
    done = subprocess.run(cmd, preexec_fn=_die_with_parent, cwd=cwd)
    if done.returncode != 0:
        raise RuntimeError(
            f"`{shlex.join(shown)}` failed (exit code {done.returncode}); fix it and rerun with --resume"
        )
    return time.perf_counter() - start
