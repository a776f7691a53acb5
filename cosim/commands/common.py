"""What the command modules share: messages on stderr and the ``--config`` help text."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from cosim.config import ConfigError

__all__ = ["CONFIG_HELP", "check_out_dir", "say"]

CONFIG_HELP = "TOML file or preset name (see cosim/configs/, e.g. digits-demo)"


def say(message: str, quiet: bool = False) -> None:
    """Progress and results for a person, on stderr (stdout stays clean for ``--json``)."""
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def check_out_dir(path: str | Path, flag: str = "--out") -> Path:
    """``path`` as an output folder that can be created or written, checked before any work is
    done (so a long computation does not fail at its end); creates nothing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag}: {path} exists and is not a directory; give a folder")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag}: cannot write into {existing}; choose a folder you can write to")
    return path
