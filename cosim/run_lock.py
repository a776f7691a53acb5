"""One writer per run directory: an advisory lock held for as long as a ``cosim train`` runs.

The lock is ``fcntl.flock`` on an open file in the run directory, so the kernel releases it when
the holder exits in any way (``kill -9`` included): a dead holder never blocks the next run. The
file also holds the holder's pid, read only to name it in the refusal. The descriptor is opened
close-on-exec, so worker processes started by the holder never keep the lock alive.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from cosim.config import ConfigError

__all__ = ["LOCK_FILE", "RunLock", "lock_run_dir"]

LOCK_FILE = "cosim.lock"
"""The lock's file in the run directory (left in place; its lock, not its existence, counts)."""


class RunLock:
    """A held run-directory lock; :meth:`release` (or the process's end) frees it."""

    def __init__(self, fd: int, path: Path):
        self._fd: int | None = fd
        self.path = path

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor of the open file drops the flock
            self._fd = None


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return text if text.isdigit() else "unknown"


def lock_run_dir(run_dir: str | Path) -> RunLock:
    """Take the lock of ``run_dir`` (which must exist) without waiting; a :class:`ConfigError`
    naming the holder's pid when another process holds it."""
    path = Path(run_dir) / LOCK_FILE
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        raise ConfigError(f"run directory {run_dir}: cannot open its lock file {path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _holder(fd)
        os.close(fd)
        raise ConfigError(
            f"run directory {run_dir} is in use by process {pid} (another `cosim train` writing it); wait for "
            f"it to finish or stop it (kill {pid}), or give another --out; the lock frees itself when that "
            "process ends"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return RunLock(fd, path)
