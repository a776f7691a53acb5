"""Conv analog blocks: the layer-wise conv solver against its floor (the input convolution of the same
batch), the EP gradient (free + two nudged phases + estimates) and the exact implicit gradient
(the adjoint by conjugate gradients), measured side by side in one run.

    python benchmarks/conv.py [--json] [--repeats N]

Cases: ``3x32x32 -> 16`` (one crossbar) and ``3x32x32 -> 16 -> 16`` (a dual-rail hidden layer), 3x3
kernels, B = 16, conductances uniform in the device range, inputs in [-1, 1] at 20 V (a fraction of
the nodes past a diode knee, printed as ``conducting``). One thread, this thread's CPU time,
medians over repeats, interleaved.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analog.conv_circuit import ConvCircuit, ConvCircuitSpec
from analog.solvers.conv_layerwise import ConvLayerwiseSolver
from cosim.conv_gradients import conv_gradients
from cosim.gradients import EquilibriumPropagation, ImplicitDifferentiation

CASES = {"3x32x32-16": (3, 16), "3x32x32-16-16": (3, 16, 16)}
BATCH = 16


def _cpu(fn) -> float:
    start = time.thread_time()
    fn()
    return time.thread_time() - start


def _case(channels: tuple[int, ...], repeats: int) -> dict:
    solver = ConvLayerwiseSolver()
    spec = ConvCircuitSpec(channels=channels, side=(32, 32), input_gain_V=20.0)
    circuit = ConvCircuit.random(spec, seed=0)
    gen = torch.Generator().manual_seed(1)
    x = 2 * torch.rand(BATCH, *spec.grid(0), generator=gen, dtype=torch.float64) - 1
    source_V = spec.source_voltages(x)
    rows = spec.source_rows(source_V)
    free = solver.solve(circuit, source_V)
    grad = torch.randn(BATCH, spec.n_outputs, generator=gen, dtype=torch.float64)
    ep, exact = EquilibriumPropagation(beta=0.1), ImplicitDifferentiation()
    tasks = {
        "input_conv": lambda: F.conv2d(rows, circuit.kernels[0], padding=1),
        "solve": lambda: solver.solve(circuit, source_V),
        "ep_step": lambda: conv_gradients(ep, solver, circuit, source_V, solver.solve(circuit, source_V), grad),
        "implicit": lambda: conv_gradients(exact, solver, circuit, source_V, free, grad),
    }
    times = {k: [] for k in tasks}
    for _ in range(repeats):
        for k, fn in tasks.items():
            times[k].append(_cpu(fn))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "batch": BATCH,
        "free_nodes": sum(spec.layer_sizes[1:]),
        "sweeps": free.iterations,
        "residual_A": float(free.residual_A.max()),
        "conducting": float((free.all_voltages().abs() > 0.5).double().mean()),
        **{f"{k}_s": v for k, v in med.items()},
        "ratio_solve_over_input_conv": med["solve"] / med["input_conv"],
    }


def run(repeats: int) -> dict:
    torch.set_num_threads(1)
    return {name: _case(channels, repeats) for name, channels in CASES.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    result = run(args.repeats)
    if args.json:
        print(json.dumps(result))
        return
    for name, r in result.items():
        print(
            f"{name:16s} B={r['batch']} nodes={r['free_nodes']} sweeps={r['sweeps']} residual={r['residual_A']:.1e} A "
            f"conducting={r['conducting']:.0%}: input conv {1e3 * r['input_conv_s']:.1f} ms, solve "
            f"{1e3 * r['solve_s']:.1f} ms ({r['ratio_solve_over_input_conv']:.1f}x), "
            f"EP step {1e3 * r['ep_step_s']:.1f} ms, implicit {1e3 * r['implicit_s']:.1f} ms"
        )


if __name__ == "__main__":
    main()
