"""Cost of resistive wires (IR drop) in the fast solver, next to the same block with ideal wires.

    python benchmarks/wires.py [--sizes 32x32x10,64x32x10,64x256x10] [--batch 64] [--wire-ohm 10] [--json]

For each block ``n_in x hidden x n_out`` (a seeded random circuit, inputs driven so that diodes
conduct): the exact reduction of its crossbars to their terminals (one sparse factorisation and
one solve per terminal, :class:`analog.wires.CrossbarWires`), the free phase of a batch with the
wired and the ideal circuit, and the voltages across every device (what EP measures). Times are
measured side by side in one run with one thread; the ratios are what to read.
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


def measure(sizes: tuple[int, ...], batch: int, wire_ohm: float, repeats: int) -> dict:
    ideal_spec = CircuitSpec(sizes, input_gain_V=3.0)
    wired_spec = CircuitSpec(sizes, input_gain_V=3.0, wire_ohm=wire_ohm)
    ideal = Circuit.random(ideal_spec, seed=1)
    gen = torch.Generator().manual_seed(2)
    source_V = ideal_spec.source_voltages(torch.rand(batch, sizes[0], generator=gen, dtype=torch.float64))
    solver = FastSolver()

    def wired_circuit():
        return Circuit(wired_spec, ideal.weights, ideal.biases)

    reduce_s = best_of(lambda: wired_circuit().crossbar_wires(), repeats)
    wired = wired_circuit()
    wired.crossbar_wires()
    ideal_solve_s = best_of(lambda: solver.solve(ideal, source_V), repeats)
    wired_solve_s = best_of(lambda: solver.solve(wired, source_V), repeats)
    state = solver.solve(wired, source_V)
    layers = [source_V, *state.voltages]
    n_rows = [w.shape[0] for w in wired.weights]
    terminals = [
        torch.cat([layers[l][:, : n_rows[l]], wired.spec.bias_voltages().expand(batch, -1), layers[l + 1]], dim=1)
        for l in range(len(n_rows))
    ]
    wires = wired.crossbar_wires()
    drops_s = best_of(lambda: [w.device_voltages(t) for w, t in zip(wires, terminals, strict=True)], repeats)
    crossbars = [f"{w.rows}x{w.cols}" for w in wires]
    return {
        "sizes": list(sizes),
        "crossbars": crossbars,
        "batch": batch,
        "wire_ohm": wire_ohm,
        "reduce_s": reduce_s,
        "ideal_solve_s": ideal_solve_s,
        "wired_solve_s": wired_solve_s,
        "device_drops_s": drops_s,
        "reduce_over_ideal_solve": reduce_s / ideal_solve_s,
        "wired_over_ideal_solve": wired_solve_s / ideal_solve_s,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="32x32x10,64x32x10,64x256x10")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--wire-ohm", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [
        measure(tuple(int(n) for n in text.split("x")), args.batch, args.wire_ohm, args.repeats)
        for text in args.sizes.split(",")
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"wire segments of {args.wire_ohm:g} Ohm, batch {args.batch}, one thread, best of {args.repeats}")
    print(
        f"{'block':>12} {'crossbars':>16} {'reduce s':>9} {'ideal solve s':>14} {'wired solve s':>14} "
        f"{'drops s':>8}  ratios"
    )
    for r in rows:
        print(
            f"{'x'.join(map(str, r['sizes'])):>12} {','.join(r['crossbars']):>16} {r['reduce_s']:9.3f} "
            f"{r['ideal_solve_s']:14.4f} {r['wired_solve_s']:14.4f} {r['device_drops_s']:8.3f}  "
            f"reduction {r['reduce_over_ideal_solve']:.0f}x an ideal solve, "
            f"wired solve {r['wired_over_ideal_solve']:.1f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
