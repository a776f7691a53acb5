"""Solver speed against its floor, measured side by side in one run: every fast solver (Newton, the
layer-wise sweeps: the default ``auto``, which compiles small batches with numba, the same with the
circuit's constants recomputed every solve (``auto-fresh``), the eager and the fused sweeps; the
ideal-diode limit) over the input-layer matrix product of the same batch,
at initialisation and at a trained state, B = 4 and B = 128; then ngspice one ``op`` per sample and
batched (one analysis per batch) against them.

    python benchmarks/solvers.py [--json] [--repeats N] [--no-ngspice] [--big-per-op-samples N]

One thread (``torch.set_num_threads(1)``); times are this thread's CPU time (other processes on a
shared machine do not inflate it), medians over repeats, interleaved (GEMM, solver 1, solver 2,
..., GEMM, ...) so that what noise remains (caches, frequency) hits all alike. The fused sweeps
are compiled in the warm-up solve of each case, outside the timing. *Initialisation*:
conductances uniform in the device range (what :class:`cosim.AnalogBlock` starts from), inputs in
[0, 1] at 20 V (the MNIST presets). *Trained*: conductances log-uniform over the range, so that
the weights are far from the symmetric average, with the input gain picked from a short list to put
about 40% of the nodes past a diode knee (``|v| > 0.5 V``; the printed ``conducting`` fraction).
The ideal-diode limit approximates the circuit; the other two solve ngspice's diode exactly.
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
from analog.solvers import AutoSolver, FastSolver, IdealDiodeSolver, LayerwiseSolver

BATCHES = (4, 128)
CASES = {"64": (64, 32, 10), "784_100": (784, 100, 10), "784": (784, 256, 10)}
DEFAULT = "auto"
"""The configuration's default solver, that of ``ratio_fast_over_input_gemm_*`` (on these blocks
it runs the layer-wise sweeps, unfused)."""
TRAINED_GAINS_V = (10.0, 20.0, 30.0, 40.0, 50.0, 65.0, 80.0)


class FreshConstants(AutoSolver):
    """``auto`` as on a circuit it has not solved before: the circuit's own constants of the
    layered KCL (conductance sums, couplings, bias currents; kept on the circuit once computed,
    so shared by the free and nudged phases of one weight update) are recomputed every solve."""

    name: str = "auto-fresh"

    def solve(self, circuit, source_V, nudge_A=None, init=None):
        circuit.__dict__.pop("_layered_constants", None)
        return super().solve(circuit, source_V, nudge_A, init)


def solvers() -> dict:
    """Newton, the default (``auto``: the layer-wise sweeps here, compiled by numba for small
    batches), the same on a fresh circuit, the eager and the fused (torch.compile) sweeps and the
    ideal-diode limit."""
    return {
        "fast": FastSolver(),
        "auto": AutoSolver(),
        "auto-fresh": FreshConstants(),
        "eager": LayerwiseSolver(compiled=False),
        "fused": LayerwiseSolver(fuse=True),
        "fast-ideal": IdealDiodeSolver(),
    }


def conducting(eq) -> float:
    return float((eq.all_voltages().abs() > 0.5).double().mean())


def init_case(sizes, batch, seed=0, **spec_keys):
    """``spec_keys``: more :class:`CircuitSpec` keys (e.g. ``hidden_pairs``, ``amplifier_gains``)."""
    spec = CircuitSpec(sizes, input_gain_V=20.0, **spec_keys)
    gen = torch.Generator().manual_seed(seed)
    circuit = Circuit.random(spec, seed=seed)
    return circuit, spec.source_voltages(torch.rand(batch, sizes[0], generator=gen, dtype=torch.float64))


def trained_case(sizes, batch, seed=0, target=0.4, **spec_keys):
    """Log-uniform conductances at the listed input gain whose conducting fraction is nearest
    ``target`` (judged on a batch of 128 so that B = 4 and B = 128 see the same circuit)."""
    best = None
    for gain in TRAINED_GAINS_V:
        spec = CircuitSpec(sizes, input_gain_V=gain, **spec_keys)
        gen = torch.Generator().manual_seed(seed)
        lo, hi = spec.conductance.g_min_S, spec.conductance.g_max_S

        def draw(shape, gen=gen, lo=lo, hi=hi):
            return (lo * (hi / lo) ** torch.rand(shape, generator=gen, dtype=torch.float64)).clamp(lo, hi)

        circuit = Circuit(spec, [draw(s) for s in spec.weight_shapes()], [draw(s) for s in spec.bias_shapes()])
        x = torch.rand(max(batch, 128), sizes[0], generator=gen, dtype=torch.float64)
        source_V = spec.source_voltages(x)
        frac = conducting(FastSolver().solve(circuit, source_V))
        if best is None or abs(frac - target) < abs(best[2] - target):
            best = (circuit, source_V[:batch], frac)
    return best[0], best[1]


def time_side_by_side(circuit, source_V, named: dict, repeats: int, nudge_A=None, init=None):
    """Median seconds of ``source_V @ W0`` and of each solver's solve, interleaved; the last
    equilibrium of each solver."""
    w0 = circuit.weights[0]
    eqs = {name: s.solve(circuit, source_V, nudge_A, init) for name, s in named.items()}  # warm-up
    times: dict[str, list[float]] = {"gemm": [], **{name: [] for name in named}}
    for _ in range(repeats):
        start = time.thread_time()
        _ = source_V @ w0
        times["gemm"].append(time.thread_time() - start)
        for name, s in named.items():
            start = time.thread_time()
            eqs[name] = s.solve(circuit, source_V, nudge_A, init)
            times[name].append(time.thread_time() - start)
    return {k: statistics.median(v) for k, v in times.items()}, eqs


def key(name: str) -> str:
    return name.replace("-", "_")


def run_fast(repeats: int) -> dict:
    report: dict = {}
    for case, sizes in CASES.items():
        for state, make in (("init", init_case), ("trained", trained_case)):
            for batch in BATCHES:
                circuit, source_V = make(sizes, batch)
                times, eqs = time_side_by_side(circuit, source_V, solvers(), repeats)
                tag = f"{case}_{state}_b{batch}"
                report[f"input_gemm_ms_{tag}"] = 1e3 * times["gemm"]
                report[f"conducting_fraction_{tag}"] = conducting(eqs["fast"])
                for name, eq in eqs.items():
                    report[f"ratio_{key(name)}_over_input_gemm_{tag}"] = times[name] / times["gemm"]
                    report[f"{key(name)}_iterations_{tag}"] = eq.iterations
                exact = eqs["fast"].all_voltages()
                for name in ("auto", "eager", "fused"):
                    report[f"max_abs_diff_{name}_vs_fast_V_{tag}"] = float(
                        (eqs[name].all_voltages() - exact).abs().max()
                    )
        # float32 at B = 128, trained: both exact solvers.
        circuit, source_V = trained_case(sizes, 128)
        named = {"fast": FastSolver(), "auto": AutoSolver(), "fused": LayerwiseSolver(fuse=True)}
        times, _ = time_side_by_side(circuit.to(torch.float32), source_V.float(), named, repeats)
        for name in named:
            report[f"ratio_{key(name)}_over_input_gemm_{case}_trained_b128_f32"] = times[name] / times["gemm"]
    for case in CASES:
        for suffix in ("", "_trained"):
            state = "trained" if suffix else "init"
            report[f"ratio_fast_over_input_gemm_{case}{suffix}"] = report[
                f"ratio_{key(DEFAULT)}_over_input_gemm_{case}_{state}_b128"
            ]
    return report


def time_ngspice(circuit, source_V, samples, per_op):
    from analog.solvers.ngspice import NgspiceSolver

    with NgspiceSolver() as solver:
        solver.solve(circuit, source_V[:1])  # start the worker and load ngspice outside the timing
        start = time.perf_counter()
        eq = (solver.solve_per_op if per_op else solver.solve)(circuit, source_V[:samples])
        return (time.perf_counter() - start) / samples, eq


def run_ngspice(report: dict, samples: dict) -> None:
    for case in ("64", "784"):
        circuit, source_V = trained_case(CASES[case], 128)
        n_batched, n_per_op = samples[case]
        batched, spice = time_ngspice(circuit, source_V, n_batched, per_op=False)
        fast_s = report[f"ratio_fast_over_input_gemm_{case}_trained"] * report[f"input_gemm_ms_{case}_trained_b128"]
        report[f"ngspice_batched_ms_per_sample_{case}"] = 1e3 * batched
        report[f"ngspice_samples_{case}"] = {"batched": n_batched, "per_op": n_per_op}
        report[f"ratio_ngspice_batched_over_fast_{case}"] = 1e3 * batched / (fast_s / 128)
        if n_per_op:  # one op per sample re-orders the sparse matrix every time: ~40 s on 784-256-10
            per_op, _ = time_ngspice(circuit, source_V, n_per_op, per_op=True)
            report[f"ngspice_per_op_ms_per_sample_{case}"] = 1e3 * per_op
            report[f"ratio_ngspice_per_op_over_batched_{case}"] = per_op / batched
        for name, solver in (("fast", FastSolver()), ("auto", AutoSolver()), ("fused", LayerwiseSolver(fuse=True))):
            eq = solver.solve(circuit, source_V[:n_batched])
            diff = float((eq.all_voltages() - spice.all_voltages()).abs().max())
            report[f"max_abs_diff_{key(name)}_vs_ngspice_V_{case}"] = diff


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--no-ngspice", action="store_true", help="time the fast solvers only")
    parser.add_argument("--big-samples", type=int, default=2, help="ngspice batched samples on 784-256-10")
    parser.add_argument(
        "--big-per-op-samples", type=int, default=0, help="ngspice per-op samples on 784-256-10 (0: not timed)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    report = run_fast(args.repeats)
    if not args.no_ngspice:
        run_ngspice(report, {"64": (32, 8), "784": (args.big_samples, args.big_per_op_samples)})
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    names = list(solvers())
    print("solver time / input GEMM (1 thread, float64; iterations: Newton steps or layer sweeps)")
    print(f"{'network':12} {'state':8} {'B':>4} {'cond.':>6} {'GEMM ms':>8} " + " ".join(f"{n:>20}" for n in names))
    for case, sizes in CASES.items():
        for state in ("init", "trained"):
            for batch in BATCHES:
                tag = f"{case}_{state}_b{batch}"
                ratios = [report[f"ratio_{key(n)}_over_input_gemm_{tag}"] for n in names]
                its = [report[f"{key(n)}_iterations_{tag}"] for n in names]
                cells = [f"{r:8.2f}x ({i:3d} it)" for r, i in zip(ratios, its, strict=True)]
                net = "-".join(map(str, sizes))
                print(
                    f"{net:12} {state:8} {batch:4d} {report[f'conducting_fraction_{tag}']:6.0%} "
                    f"{report[f'input_gemm_ms_{tag}']:8.3f} " + " ".join(f"{c:>20}" for c in cells)
                )
        f32 = [report[f"ratio_{key(n)}_over_input_gemm_{case}_trained_b128_f32"] for n in ("fast", "auto", "fused")]
        print(f"{'':12} trained  128 float32: fast {f32[0]:.2f}x, auto {f32[1]:.2f}x, fused {f32[2]:.2f}x")
    for name in ("auto", "eager", "fused"):
        worst = max(v for k, v in report.items() if k.startswith(f"max_abs_diff_{name}_vs_fast"))
        print(f"max |V_{name} - V_fast| over all cases: {worst:.1e} V")
    if not args.no_ngspice:
        for case in ("64", "784"):
            per_op = report.get(f"ratio_ngspice_per_op_over_batched_{case}")
            print(
                f"{case}: ngspice batched {report[f'ngspice_batched_ms_per_sample_{case}']:.1f} ms/sample "
                f"({report[f'ratio_ngspice_batched_over_fast_{case}']:.0f}x fast), one op per sample "
                + (f"{per_op:.1f}x batched" if per_op else "not timed")
                + "; max |V - V_ngspice|: "
                f"fast {report[f'max_abs_diff_fast_vs_ngspice_V_{case}']:.1e} V, "
                f"auto {report[f'max_abs_diff_auto_vs_ngspice_V_{case}']:.1e} V, "
                f"fused {report[f'max_abs_diff_fused_vs_ngspice_V_{case}']:.1e} V"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
