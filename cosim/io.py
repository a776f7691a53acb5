"""Atomic file writes: a reader, or a crash, never sees a half-written file.

Written files get the permissions a plain ``open(path, "w")`` would give them (``0666`` less the
umask, or the directory's default ACL), so colleagues on a shared server can read run outputs; a
file that already exists keeps its permission bits.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["atomic_path", "atomic_save", "atomic_write_json", "atomic_write_text"]


def _create_temp(folder: Path, name: str, suffix: str) -> Path:
    """A new empty file next to the target, created with mode 0666 so that the kernel applies the
    umask (or a default ACL) exactly as for ``open()``; ``mkstemp`` would force 0600."""
    for _ in range(100):
        tmp = folder / f".{name}.{secrets.token_hex(6)}.tmp{suffix}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"could not create a temporary file next to {folder / name}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it replaces ``path`` atomically,
    on error it is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp(path.parent, path.name, path.suffix)
    try:
        yield tmp
        try:
            old = os.stat(path)
        except FileNotFoundError:
            old = None
        if old is not None and stat.S_ISREG(old.st_mode):
            # Overwriting in place keeps a file's mode; a user who made an output private keeps it so.
            os.chmod(tmp, stat.S_IMODE(old.st_mode) & 0o777)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_save(path: str | Path, writer: Callable[[Path], None]) -> None:
    """``writer(tmp_path)`` writes the file; it is moved into place only if it succeeds."""
    with atomic_path(path) as tmp:
        writer(tmp)
