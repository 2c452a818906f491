"""Atomic, durable file writes: a file or directory is either its old self or completely new, never half there.

Every write goes to a temporary sibling (same folder, so the rename cannot cross file systems), is flushed and
``fsync``-ed, renamed over the target with ``os.replace`` (atomic on POSIX), and then the folder itself is
``fsync``-ed so that the rename survives a power cut (ext4/xfs data=ordered semantics; see LWN "Ensuring data
reaches disk", 2011). On any error the temporary is removed and the target is untouched. A full disk surfaces as
the ``OSError`` (errno ENOSPC) of the write, with the target's name in the message.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def fsync_dir(folder: str | os.PathLike) -> None:
    """``fsync`` a directory so that renames into it are durable (a no-op where the OS cannot open folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _no_space(err: OSError, path: Path) -> OSError:
    if err.errno == errno.ENOSPC:
        return OSError(errno.ENOSPC, f"no space left on device while writing {path}")
    return err


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and durably (see the module docstring); creates the folder.

    Raises:
        OSError: the write failed (ENOSPC says "no space left on device while writing PATH"); ``path`` unchanged.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise _no_space(err, path) from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """:func:`write_bytes_atomic` of UTF-8 ``text``."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, data: Any, indent: int | None = 2, sort_keys: bool = False) -> Path:
    """Write ``data`` as JSON (a trailing newline; non-JSON values via ``str``) atomically and durably."""
    text = json.dumps(data, indent=indent, sort_keys=sort_keys, default=str) + "\n"
    return write_text_atomic(path, text)


def fsync_tree(folder: str | os.PathLike) -> None:
    """``fsync`` every file below ``folder`` and every folder, deepest first (before renaming it into place)."""
    for root, _dirs, files in os.walk(folder, topdown=False):
        for name in files:
            file = os.path.join(root, name)
            if os.path.islink(file):
                continue
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
        fsync_dir(root)


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary sibling folder; when the block succeeds its files are fsync-ed and it replaces
    ``target`` (an existing ``target`` is moved aside first and deleted after); when the block raises, the
    temporary is deleted and ``target`` is untouched.

    Raises:
        OSError: from the block or the rename (ENOSPC as "no space left on device while writing TARGET").
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        yield tmp
        fsync_tree(tmp)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _no_space(err, target) from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, old)
    os.replace(tmp, target)
    fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def replace_symlink(link: str | os.PathLike, points_to: str) -> None:
    """Make ``link`` a symlink to ``points_to`` (relative or absolute) atomically: a temporary link renamed over
    it, then the folder fsync-ed."""
    link = Path(link)
    tmp = link.with_name(f".{link.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    os.symlink(points_to, tmp)
    os.replace(tmp, link)
    fsync_dir(link.parent)
