"""Solver speed, measured side by side in one run: ngspice one ``op`` per sample, ngspice batched
(one analysis per batch), the fast solver (float64 and float32, B = 128), and the floor of the fast
solver, the input-layer matrix product of the same batch.

    python benchmarks/solvers.py [--json] [--repeats N]

Times are medians over repeats, interleaved (GEMM, fast, GEMM, fast, ...) so that machine noise
hits both alike. The circuits are driven hard enough that a good share of the diodes conduct (the
printed ``conducting`` fraction), so the fast solver is not timed on a linear problem. The
ideal-diode limit (:class:`~analog.solvers.IdealDiodeSolver`) is timed beside it; it approximates
the circuit, the Shockley-exact solver is the one that agrees with ngspice.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analog import Circuit, CircuitSpec
from analog.solvers import FastSolver, IdealDiodeSolver

BATCH = 128


def make_case(sizes, gain, seed=0):
    spec = CircuitSpec(sizes, input_gain_V=gain)
    gen = torch.Generator().manual_seed(seed)
    lo, hi = spec.conductance.g_min_S, spec.conductance.g_max_S

    def draw(shape):
        return (lo * (hi / lo) ** torch.rand(shape, generator=gen, dtype=torch.float64)).clamp(lo, hi)

    circuit = Circuit(spec, [draw(s) for s in spec.weight_shapes()], [draw(s) for s in spec.bias_shapes()])
    x = torch.rand(BATCH, sizes[0], generator=gen, dtype=torch.float64)
    return circuit, spec.source_voltages(x)


def time_fast(circuit, source_V, repeats, solver=None):
    """Median seconds per batch of a fast solver and of ``source_V @ W0``, interleaved."""
    solver = solver or FastSolver()
    w0 = circuit.weights[0]
    eq = solver.solve(circuit, source_V)  # warm-up
    _ = source_V @ w0
    fast, gemm = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        _ = source_V @ w0
        gemm.append(time.perf_counter() - start)
        start = time.perf_counter()
        eq = solver.solve(circuit, source_V)
        fast.append(time.perf_counter() - start)
    return statistics.median(fast), statistics.median(gemm), eq


def time_ngspice(circuit, source_V, samples, per_op):
    from analog.solvers.ngspice import NgspiceSolver

    with NgspiceSolver() as solver:
        solver.solve(circuit, source_V[:1])  # start the worker and load ngspice outside the timing
        start = time.perf_counter()
        eq = (solver.solve_per_op if per_op else solver.solve)(circuit, source_V[:samples])
        return (time.perf_counter() - start) / samples, eq


def run(repeats: int, big_ngspice_samples: int, big_per_op_samples: int) -> dict:
    report: dict = {"batch": BATCH}
    cases = {"64": ((64, 32, 10), 10.0, 64, 16), "784": ((784, 256, 10), 30.0, big_ngspice_samples, big_per_op_samples)}
    for key, (sizes, gain, n_batched, n_per_op) in cases.items():
        circuit, source_V = make_case(sizes, gain)
        for dtype in (torch.float64, torch.float32):
            tag = "f64" if dtype == torch.float64 else "f32"
            c, v = circuit.to(dtype), source_V.to(dtype)
            fast, gemm, eq = time_fast(c, v, repeats)
            report[f"fast_{tag}_ms_per_sample_{key}"] = 1e3 * fast / BATCH
            report[f"input_gemm_{tag}_ms_per_sample_{key}"] = 1e3 * gemm / BATCH
            report[f"ratio_fast_over_input_gemm_{key}" + ("" if tag == "f64" else "_f32")] = fast / gemm
            report[f"fast_{tag}_iterations_{key}"] = eq.iterations
            if tag == "f64":
                report[f"conducting_fraction_{key}"] = float((eq.all_voltages().abs() > 0.5).double().mean())
                reference = eq
                ideal, gemm_i, eq_i = time_fast(c, v, repeats, IdealDiodeSolver())
                report[f"fast_ideal_ms_per_sample_{key}"] = 1e3 * ideal / BATCH
                report[f"fast_ideal_sweeps_{key}"] = eq_i.iterations
                report[f"ratio_fast_ideal_over_input_gemm_{key}"] = ideal / gemm_i
        batched, eq_b = time_ngspice(circuit, source_V, n_batched, per_op=False)
        per_op, _ = time_ngspice(circuit, source_V, n_per_op, per_op=True)
        report[f"ngspice_batched_ms_per_sample_{key}"] = 1e3 * batched
        report[f"ngspice_per_op_ms_per_sample_{key}"] = 1e3 * per_op
        report[f"ngspice_samples_{key}"] = {"batched": n_batched, "per_op": n_per_op}
        report[f"ratio_ngspice_batched_over_fast_{key}"] = batched / (report[f"fast_f64_ms_per_sample_{key}"] / 1e3)
        report[f"ratio_ngspice_per_op_over_batched_{key}"] = per_op / batched
        diff = (eq_b.all_voltages() - reference.all_voltages()[:n_batched]).abs().max().item()
        report[f"max_abs_diff_fast_vs_ngspice_V_{key}"] = diff
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--big-samples", type=int, default=64, help="ngspice batched samples on 784-256-10")
    parser.add_argument("--big-per-op-samples", type=int, default=2, help="ngspice per-op samples on 784-256-10")
    args = parser.parse_args()
    report = run(args.repeats, args.big_samples, args.big_per_op_samples)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    for key, sizes in (("64", "64-32-10"), ("784", "784-256-10")):
        print(f"== {sizes}, B = {BATCH}, {report[f'conducting_fraction_{key}']:.0%} of nodes beyond a diode knee")
        print(f"  input GEMM (f64)        {report[f'input_gemm_f64_ms_per_sample_{key}']:9.4f} ms/sample")
        print(
            f"  fast solver f64         {report[f'fast_f64_ms_per_sample_{key}']:9.4f} ms/sample "
            f"({report[f'fast_f64_iterations_{key}']} Newton iterations)"
        )
        print(f"  fast solver f32         {report[f'fast_f32_ms_per_sample_{key}']:9.4f} ms/sample")
        print(
            f"  fast, ideal diodes f64  {report[f'fast_ideal_ms_per_sample_{key}']:9.4f} ms/sample "
            f"({report[f'fast_ideal_sweeps_{key}']} layer sweeps; an approximation of the circuit)"
        )
        print(f"  ngspice batched         {report[f'ngspice_batched_ms_per_sample_{key}']:9.2f} ms/sample")
        print(f"  ngspice one op/sample   {report[f'ngspice_per_op_ms_per_sample_{key}']:9.2f} ms/sample")
        print(f"  fast / input GEMM       {report[f'ratio_fast_over_input_gemm_{key}']:9.2f} x")
        print(f"  fast ideal / input GEMM {report[f'ratio_fast_ideal_over_input_gemm_{key}']:9.2f} x")
        print(f"  ngspice batched / fast  {report[f'ratio_ngspice_batched_over_fast_{key}']:9.0f} x")
        print(f"  ngspice per-op / batched{report[f'ratio_ngspice_per_op_over_batched_{key}']:9.1f} x")
        print(f"  max |V_fast - V_ngspice| {report[f'max_abs_diff_fast_vs_ngspice_V_{key}']:.2e} V")
    return 0


if __name__ == "__main__":
    sys.exit(main())
