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

__all__ = [
    "OutputPathError",
    "atomic_path",
    "atomic_save",
    "atomic_write_json",
    "atomic_write_text",
    "check_output_dir",
    "check_output_file",
]


class OutputPathError(ValueError):
    """An output path that cannot be written; the message says why and what to give instead."""


def _probe(folder: Path) -> bool:
    """Whether a file can be created in ``folder``: tried, not asked. ``os.access`` answers yes to
    root for a read-only folder, and knows nothing of read-only mounts or full quotas."""
    try:
        tmp = _create_temp(folder, "write-probe", "")
    except OSError:
        return False
    tmp.unlink()
    return True


def check_output_dir(path: str | Path, flag: str) -> Path:
    """``path`` as an output folder that exists or can be created, and written: checked before any
    work is done, so that a long computation does not fail at its end. Creates nothing that stays."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{flag}: {path} exists and is not a directory; give a folder")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputPathError(f"{flag}: {path} cannot be created: {existing} is a file, not a folder")
    if not _probe(existing):
        raise OutputPathError(f"{flag}: cannot write into {existing}; choose a folder you can write to")
    return path


def check_output_file(path: str | Path, flag: str) -> Path:
    """``path`` as a file to write: not a folder, in a folder that exists and can be written."""
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{flag}: {path} is a directory; give a file name such as {path / 'plot.png'}")
    parent = path.parent
    if not parent.is_dir():
        raise OutputPathError(
            f"{flag}: the folder {parent} of {path.name} does not exist; create it or give another path"
        )
    if not _probe(parent):
        raise OutputPathError(f"{flag}: cannot write into {parent}; choose a folder you can write to")
    return path


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
