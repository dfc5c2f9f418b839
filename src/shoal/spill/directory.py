"""The driver's spill folders: made at init, removed at shutdown, and
claimed by a lock so that whoever finds one whose runtime died removes it.

A runtime's folder in a spilling directory D is D/shoal-spill-<pid>-<session>,
mode 0700. Its driver holds an exclusive flock on D/.../lock for as long as
it lives; the kernel drops the lock whatever kills the driver. So a
runtime starting on D removes every shoal-spill-* folder of this user whose
lock it can take: what dead runtimes left behind. (The fork server removes
its driver's folders at once when the driver dies; this sweep is for the
cases where nothing was left to do it.)

A folder is made under a temporary name, locked, then renamed, so a sweep
never sees a live folder unlocked.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil

from shoal.spill.files import folder_name

LOCK_NAME = "lock"
PREFIX = "shoal-spill-"


class SpillFolders:
    """The folders of one runtime, locked while they exist."""

    def __init__(self, directories: list[str], session: str):
        self.paths: list[str] = []
        self._locks: list[int] = []
        try:
            for d in directories:
                path, lock = _make_folder(d, session)
                self.paths.append(path)
                self._locks.append(lock)
        except BaseException:
            self.remove()
            raise

    def remove(self) -> None:
        """Delete the folders and everything in them. Idempotent."""
        for path in self.paths:
            shutil.rmtree(path, ignore_errors=True)
        for fd in self._locks:
            os.close(fd)
        self.paths, self._locks = [], []


def _make_folder(directory: str, session: str) -> tuple[str, int]:
    import tempfile

    os.makedirs(directory, mode=0o700, exist_ok=True)
    remove_dead(directory)
    tmp = tempfile.mkdtemp(prefix=".shoal-spill-new-", dir=directory)  # mode 0700
    try:
        lock = os.open(os.path.join(tmp, LOCK_NAME), os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        path = os.path.join(directory, folder_name(session))
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path, lock


def remove_dead(directory: str) -> list[str]:
    """Remove the spill folders in `directory` that this user's dead
    runtimes left; returns their paths."""
    removed = []
    uid = os.getuid()
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(PREFIX):
            continue
        try:
            if not entry.is_dir(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_uid != uid:
                continue
        except OSError:
            continue
        if _is_dead(entry.path):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.path)
    return removed


def _is_dead(path: str) -> bool:
    """True if no process holds the folder's lock (its runtime is gone)."""
    try:
        fd = os.open(os.path.join(path, LOCK_NAME), os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return True  # no lock was ever taken: a folder half made, long ago
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    return True
