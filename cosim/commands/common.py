"""What the command modules share: messages on stderr, the ``--config`` help, ``--set``, output checks."""

from __future__ import annotations

import sys
from pathlib import Path

from cosim.config import parse_override
from cosim.io import check_output_dir, check_output_file

__all__ = ["CONFIG_HELP", "add_set_argument", "check_out_dir", "check_out_file", "overrides", "say"]

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


def add_set_argument(parser) -> None:
    """``--set KEY=VALUE`` (repeatable): a configuration key overridden on the command line."""
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a configuration key, e.g. train.epochs=5 or model.blocks[0].temperature_C=85 (repeatable)",
    )


def overrides(args) -> list[tuple[str, object]]:
    """The ``--set`` overrides of ``args`` as ``(KEY, value)``."""
    return [parse_override(text) for text in args.set]
