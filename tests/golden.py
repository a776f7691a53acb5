"""The fixed, seeded circuits behind the golden netlists ``netlists/golden_*.cir``.

Regenerate the golden netlists after an intentional change of :mod:`analog.netlist` (from the
repository root) with ``python -m tests.golden netlists``, and review the diff.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch

from analog.circuit import Circuit, CircuitSpec
from analog.netlist import build_operating_point, netlist_text

REGENERATE = "python -m tests.golden netlists"


def golden_circuits() -> dict[str, tuple[Circuit, torch.Tensor, torch.Tensor | None]]:
    """name -> (circuit, source_V ``[n_sources]`` V, nudge_A ``[n_out]`` A or ``None``).

    ``golden_small``: layer sizes (2, 3, 2), input pairs, bias, both diodes, nudged.
    ``golden_amp``: (2, 3, 3, 2), an amplifier of gain 4 after layer 1, no down diode, free phase.
    """
    small = CircuitSpec(layer_sizes=(2, 3, 2), diode_up_V=0.3, diode_down_V=-0.3)
    amp = CircuitSpec(
        layer_sizes=(2, 3, 3, 2),
        input_pairs=False,
        diode_up_V=0.5,
        diode_down_V=None,
        amplifier_gains=(4.0, None),
    )
    cases = {}
    for name, spec, seed, nudged in (("golden_small", small, 1, True), ("golden_amp", amp, 2, False)):
        circuit = Circuit.random(spec, seed=seed)
        gen = torch.Generator().manual_seed(seed + 100)
        x = torch.rand((1, spec.n_inputs), generator=gen, dtype=torch.float64) * 2 - 1
        source_V = spec.source_voltages(x)[0]
        nudge_A = 1e-6 * torch.randn(spec.n_outputs, generator=gen, dtype=torch.float64) if nudged else None
        cases[name] = (circuit, source_V, nudge_A)
    return cases


def golden_text(name: str) -> str:
    """The operating-point netlist the builder makes now for golden case ``name``."""
    circuit, source_V, nudge_A = golden_circuits()[name]
    return netlist_text(build_operating_point(circuit, source_V, nudge_A))


def write_golden(directory: str | Path) -> list[Path]:
    """Write every golden case as ``<directory>/<name>.cir``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in golden_circuits():
        path = directory / f"{name}.cir"
        path.write_text(golden_text(name))
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.golden", description=__doc__.splitlines()[0])
    parser.add_argument("directory", help="where to write the golden netlists (normally netlists)")
    for path in write_golden(parser.parse_args(argv).directory):
        print(path)


if __name__ == "__main__":
    main()
