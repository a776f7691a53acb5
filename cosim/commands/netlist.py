"""``cosim netlist``: every analog block of a trained checkpoint as a self-contained SPICE netlist."""

from __future__ import annotations

from pathlib import Path

from cosim.export import export_netlists

__all__ = ["register", "run"]


def run(args) -> int:
    for path in export_netlists(args.checkpoint, args.out, args.sample):
        print(path)
    return 0


def register(sub) -> None:
    p = sub.add_parser("netlist", help="export every analog block of a checkpoint as a SPICE netlist")
    p.add_argument("--checkpoint", required=True, type=Path, help="checkpoint.pt of a `cosim train` run")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--sample", type=int, default=None, help="fill the input parameters with this test sample")
    p.set_defaults(func=run)
