"""Cost of resistive wires (IR drop) in the fast solver, next to the same block with ideal wires.

    python benchmarks/wires.py [--sizes 32x32x10,64x32x10,64x256x10,784x100x10:20] [--batch 64]
                               [--wire-ohm 10] [--repeats 2] [--json]

Each size is a block ``n_in x hidden x n_out`` (``CircuitSpec`` layer sizes), optionally followed
by ``:V``, its input gain in volts (default 3 V). Every input is a +/- pair of sources, so the input
crossbar has ``2 n_in`` source rows plus the bias rows: ``784x100x10:20`` is mnist-drn-xs's block,
whose input crossbar is 1570x100. For each block (a seeded random circuit, uniform random inputs):

* ``update_s``: what a weight update costs with wires: eliminating every crossbar's wires down to
  the blocks the solver uses (:meth:`analog.wires.CrossbarWires.blocks`);
* ``ideal_solve_s`` and ``wired_solve_s``: the free phase of a batch with ideal and wired crossbars;
* ``source_currents_s``: the currents the sources deliver in the wired free phase (one solve of
  the input crossbar's wires per batch);
* ``device_drops_s``: the voltage across every device of every crossbar (what EP measures).

Times are measured side by side in one run with one thread, best of ``--repeats``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analog import Circuit, CircuitSpec
from analog.solvers import FastSolver


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def parse_size(text: str) -> tuple[tuple[int, ...], float]:
    """``"784x100x10:20"`` -> ``((784, 100, 10), 20.0)``; the gain defaults to 3 V."""
    sizes, _, gain = text.partition(":")
    return tuple(int(n) for n in sizes.split("x")), float(gain) if gain else 3.0


def measure(sizes: tuple[int, ...], gain_V: float, batch: int, wire_ohm: float, repeats: int) -> dict:
    ideal_spec = CircuitSpec(sizes, input_gain_V=gain_V)
    wired_spec = CircuitSpec(sizes, input_gain_V=gain_V, wire_ohm=wire_ohm)
    ideal = Circuit.random(ideal_spec, seed=1)
    gen = torch.Generator().manual_seed(2)
    source_V = ideal_spec.source_voltages(torch.rand(batch, sizes[0], generator=gen, dtype=torch.float64))
    solver = FastSolver()
    n_rows = wired_spec.nodes_per_layer()

    def update() -> Circuit:
        """A new set of conductances: its crossbars eliminated to the blocks the solver takes."""
        wired = Circuit(wired_spec, ideal.weights, ideal.biases)
        for l, w in enumerate(wired.crossbar_wires()):
            w.blocks(n_rows[l], torch.float64, "cpu", held_rows=l == 0)
        return wired

    update_s = best_of(update, repeats)
    wired = update()
    ideal_solve_s = best_of(lambda: solver.solve(ideal, source_V), repeats)
    wired_solve_s = best_of(lambda: solver.solve(wired, source_V), repeats)
    state = solver.solve(wired, source_V)
    currents_s = best_of(lambda: solver.solve(wired, source_V).input_currents_A, repeats) - wired_solve_s
    layers = [source_V, *state.voltages]
    terminals = [
        torch.cat([layers[l][:, : n_rows[l]], wired.spec.bias_voltages().expand(batch, -1), layers[l + 1]], dim=1)
        for l in range(len(n_rows) - 1)
    ]
    wires = wired.crossbar_wires()
    drops_s = best_of(lambda: [w.device_voltages(t) for w, t in zip(wires, terminals, strict=True)], repeats)
    return {
        "sizes": list(sizes),
        "input_gain_V": gain_V,
        "crossbars": [f"{w.rows}x{w.cols}" for w in wires],
        "batch": batch,
        "wire_ohm": wire_ohm,
        "newton_iterations": state.iterations,
        "update_s": update_s,
        "ideal_solve_s": ideal_solve_s,
        "wired_solve_s": wired_solve_s,
        "source_currents_s": max(currents_s, 0.0),
        "device_drops_s": drops_s,
        "update_over_ideal_solve": update_s / ideal_solve_s,
        "wired_over_ideal_solve": wired_solve_s / ideal_solve_s,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="32x32x10,64x32x10,64x256x10,784x100x10:20")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--wire-ohm", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [measure(*parse_size(text), args.batch, args.wire_ohm, args.repeats) for text in args.sizes.split(",")]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"wire segments of {args.wire_ohm:g} Ohm, batch {args.batch}, one thread, best of {args.repeats}")
    print(
        f"{'block':>14} {'crossbars':>16} {'update s':>9} {'ideal solve s':>14} {'wired solve s':>14} "
        f"{'currents s':>11} {'drops s':>8}  ratios"
    )
    for r in rows:
        block = "x".join(map(str, r["sizes"])) + f":{r['input_gain_V']:g}"
        print(
            f"{block:>14} {','.join(r['crossbars']):>16} {r['update_s']:9.3f} {r['ideal_solve_s']:14.4f} "
            f"{r['wired_solve_s']:14.4f} {r['source_currents_s']:11.3f} {r['device_drops_s']:8.3f}  "
            f"update {r['update_over_ideal_solve']:.0f}x an ideal solve, "
            f"wired solve {r['wired_over_ideal_solve']:.1f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
