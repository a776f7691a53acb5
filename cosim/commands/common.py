"""What the command modules share: messages on stderr, the ``--config`` help, ``--set``, output checks."""

from __future__ import annotations

import sys
from pathlib import Path

from cosim.config import parse_override
from cosim.io import check_output_dir, check_output_file
from cosim.units import si

__all__ = [
    "CONFIG_HELP",
    "add_cluster_arguments",
    "add_set_argument",
    "check_out_dir",
    "check_out_file",
    "overrides",
    "say",
]

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


def add_cluster_arguments(parser, job: str) -> None:
    """``--scheduler ADDRESS`` and ``--workers N``: where ``job`` runs (:class:`cosim.cluster.Cluster`)."""
    parser.add_argument(
        "--scheduler", default=None, metavar="ADDRESS",
        help=f"address of an existing Dask scheduler to run {job} on (tcp://HOST:PORT)",
    )  # fmt: skip
    parser.add_argument(
        "--workers", type=int, default=1,
        help=f"Dask LocalCluster worker processes for {job}, one ngspice process each (1: no cluster, "
        "ngspice in this process's [solver] workers)",
    )  # fmt: skip


def overrides(args) -> list[tuple[str, object]]:
    """The ``--set`` overrides of ``args`` as ``(KEY, value)``."""
    return [parse_override(text) for text in args.set]


def operating_point_lines(name: str, op: dict, indent: str = "  ") -> list[str]:
    """An :func:`analog.operating_point.operating_point` summary as text lines (warnings last)."""
    layers = ", ".join(f"L{x['layer']} {100 * x['diodes_conducting_fraction']:.1f}%" for x in op["layers"])
    lo = min(x["node_min_V"] for x in op["layers"])
    hi = max(x["node_max_V"] for x in op["layers"])
    lines = [
        f"{indent}{name}: {100 * op['diodes_conducting_fraction']:.1f}% of diodes conducting ({layers}); "
        f"nodes [{lo:.3g}, {hi:.3g}] V, output swing {op['output_swing_V']:.3g} V",
        f"{indent}  peak currents: driver {si(op['max_driver_current_A'], 'A')}"
        + (
            f", crossbar row {si(op['max_row_current_A'], 'A')}, column {si(op['max_column_current_A'], 'A')}"
            if "max_row_current_A" in op  # a conv block's report has no line currents
            else ""
        )
        + f"; KCL residual {op['max_kcl_residual_A']:.1e} A",
    ]
    lines += [f"{indent}  warning: {w}" for w in op.get("warnings", [])]
    return lines
