"""What the command modules share: messages on stderr and the ``--config`` help text."""

from __future__ import annotations

import sys
from pathlib import Path

from cosim.io import check_output_dir, check_output_file

__all__ = ["CONFIG_HELP", "check_out_dir", "check_out_file", "say"]

CONFIG_HELP = "TOML file or preset name (see cosim/configs/, e.g. digits-demo)"


def say(message: str, quiet: bool = False) -> None:
    """Progress and results for a person, on stderr (stdout stays clean for ``--json``)."""
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def check_out_dir(path: str | Path, flag: str = "--out") -> Path:
    """``path`` as an output folder that can be created or written, checked before any work is
    done (so a long computation does not fail at its end); creates nothing."""
    return check_output_dir(path, flag)


def check_out_file(path: str | Path, flag: str) -> Path:
    """``path`` as an output file in a folder that exists and can be written; creates nothing."""
    return check_output_file(path, flag)
