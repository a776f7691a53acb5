"""The ``cosim`` command line: ``main`` parses the arguments and runs one command of
:mod:`cosim.commands`.

Exit codes: 0 success; 2 bad input (configuration, data, files), with a one-paragraph message and
no traceback; 3 a solver that failed on valid input; 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import version

from analog.solvers.base import SolverError
from cosim.commands import COMMANDS
from cosim.config import ConfigError
from cosim.io import OutputPathError

__all__ = ["build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own exit code is already 2; keep its message short
        self.print_usage(sys.stderr)
        self.exit(2, f"cosim: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cosim", description="Circuit-level co-simulation of ff-EBMs trained with EP.")
    parser.add_argument("--version", action="version", version=f"cosim {version('ffebm-cosim')}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, OutputPathError) as exc:
        print(f"cosim {args.command}: {exc}", file=sys.stderr)
        return 2
    except SolverError as exc:
        print(f"cosim {args.command}: solver failed: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"cosim {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
