"""Memory of the ngspice solver over many batched solves, and batched vs per-op time, side by side.

    python benchmarks/ngspice_memory.py [--solves 1000] [--batch 64] [--max-tasks-per-child 200]

Solves a 64-32-10 network (seeded) with batches of 64 samples, ``--solves`` times, and prints the
resident memory (VmRSS) of the parent plus the live workers every 10 % of the run. The budget
is a growth below 50 MB.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from analog.circuit import Circuit, CircuitSpec
from analog.solvers.ngspice import NgspiceSolver

BUDGET_MB = 50.0


def rss_MB(pids) -> float:
    """Sum of VmRSS over ``pids``, megabytes (from /proc)."""
    total = 0.0
    for pid in pids:
        with open(f"/proc/{pid}/status") as fh:
            total += next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--solves", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--max-tasks-per-child", type=int, default=200)
    args = parser.parse_args()

    spec = CircuitSpec(layer_sizes=(64, 32, 10))
    circuit = Circuit.random(spec, seed=0)
    gen = torch.Generator().manual_seed(1)
    x = 2 * torch.rand((args.batch, spec.n_inputs), generator=gen, dtype=torch.float64) - 1
    source_V = spec.source_voltages(x)
    nudge_A = 1e-6 * torch.randn((args.batch, spec.n_outputs), generator=gen, dtype=torch.float64)

    with NgspiceSolver(max_tasks_per_child=args.max_tasks_per_child) as solver:
        solver.solve(circuit, source_V, nudge_A)  # start the worker and warm up
        start = time.perf_counter()
        batched = solver.solve(circuit, source_V, nudge_A)
        t_batch = time.perf_counter() - start
        start = time.perf_counter()
        per_op = solver.solve_per_op(circuit, source_V, nudge_A)
        t_op = time.perf_counter() - start
        gap = (batched.all_voltages() - per_op.all_voltages()).abs().max().item()
        print(
            f"64-32-10, {args.batch} samples: batched {t_batch:.3f} s ({batched.iterations} iterations), "
            f"per-op {t_op:.3f} s ({per_op.iterations} iterations), "
            f"per-op / batched = {t_op / t_batch:.1f}; max |dV| = {gap:.1e} V"
        )

        before = rss_MB([os.getpid(), *solver.worker_pids()])
        print(f"RSS parent + workers before: {before:.1f} MB")
        start = time.perf_counter()
        step = max(1, args.solves // 10)
        for k in range(1, args.solves + 1):
            solver.solve(circuit, source_V, nudge_A)
            if k % step == 0 or k == args.solves:
                now = rss_MB([os.getpid(), *solver.worker_pids()])
                print(
                    f"  after {k:5d} solves: {now:7.1f} MB ({now - before:+.1f} MB), "
                    f"{(time.perf_counter() - start) / k:.3f} s per solve"
                )
        after = rss_MB([os.getpid(), *solver.worker_pids()])
    growth = after - before
    verdict = "OK" if growth < BUDGET_MB else "OVER BUDGET"
    print(f"RSS growth over {args.solves} solves: {growth:+.1f} MB (budget {BUDGET_MB:.0f} MB): {verdict}")
    return 0 if growth < BUDGET_MB else 1


if __name__ == "__main__":
    raise SystemExit(main())
