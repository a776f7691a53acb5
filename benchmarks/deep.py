"""Deep blocks against shallow ones, measured side by side in one run: the free phase of
784-64-64-64-10 and 784-256-256-256-10 per solver over the input GEMM, and a training step's
solves (free phase, then the +beta and -beta nudged phases warm-started from it, as centered EP
runs them) of 784-64-64-64-10 over those of 784-100-10; both also as mnist-split-1's block
(dual-rail hidden layers behind amplifiers of gain 4, ``784_64x3_dual``).

    python benchmarks/deep.py [--json] [--repeats N]

One thread, float64, B = 128, interleaved medians (see :mod:`benchmarks.solvers`, whose
initialisation and trained states this reuses). Newton factorises a dense ``n_l x n_l`` Schur
complement per sample per iteration for every layer after the first, so it is timed with fewer
repeats on the wide block.
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

from benchmarks.solvers import DEFAULT, conducting, init_case, key, solvers, time_side_by_side, trained_case
from cosim import gradient_method

BATCH = 128
DEEP = {
    "784_64x3": (784, 64, 64, 64, 10),
    "784_256x3": (784, 256, 256, 256, 10),
    "784_64x3_dual": (784, 64, 64, 64, 10),
}
SHALLOW, DEEP_STEP = (784, 100, 10), (784, 64, 64, 64, 10)
DUAL = {"hidden_pairs": True, "amplifier_gains": (4.0, 4.0, 4.0)}
"""mnist-split-1's block: dual-rail hidden layers, amplifiers of gain 4."""


def spec_keys(case: str) -> dict:
    return DUAL if case.endswith("_dual") else {}


def step_solves(solver, circuit, source_V, upstream):
    """The solves of one centered-EP training step (the nudged phases as training starts them)."""
    free = solver.solve(circuit, source_V)
    gradient_method("ep-centered").solve_phases(solver, circuit, source_V, free, upstream)
    return free


def time_steps(cases: dict, repeats: int) -> dict[str, dict[str, float]]:
    """Median seconds of a training step's solves per case and solver, interleaved over both."""
    upstream = torch.randn(BATCH, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    named = solvers()
    times = {case: {name: [] for name in named} for case in cases}
    for _ in range(repeats):
        for case, (circuit, source_V) in cases.items():
            for name, solver in named.items():
                start = time.thread_time()
                step_solves(solver, circuit, source_V, upstream)
                times[case][name].append(time.thread_time() - start)
    return {case: {n: statistics.median(t) for n, t in per.items()} for case, per in times.items()}


def run(repeats: int) -> dict:
    report: dict = {"batch": BATCH}
    for case, sizes in DEEP.items():
        for state, make in (("init", init_case), ("trained", trained_case)):
            circuit, source_V = make(sizes, BATCH, **spec_keys(case))
            named = solvers()
            # Newton on the wide deep block takes seconds per solve: time it apart, with 2 repeats.
            slow = {"fast": named.pop("fast")} if sizes[1] >= 256 else {}
            times, eqs = time_side_by_side(circuit, source_V, named, repeats)
            if slow:
                t_slow, e_slow = time_side_by_side(circuit, source_V, slow, 2)
                times["fast"] = t_slow["fast"] * times["gemm"] / t_slow["gemm"]  # over its own GEMM
                eqs.update(e_slow)
            tag = f"{case}_{state}"
            report[f"input_gemm_ms_{tag}"] = 1e3 * times["gemm"]
            report[f"conducting_fraction_{tag}"] = conducting(eqs["fast"])
            for name, eq in eqs.items():
                report[f"ratio_{key(name)}_over_input_gemm_{tag}"] = times[name] / times["gemm"]
                report[f"{key(name)}_iterations_{tag}"] = eq.iterations
            report[f"max_abs_diff_auto_vs_fast_V_{tag}"] = float(
                (eqs["auto"].all_voltages() - eqs["fast"].all_voltages()).abs().max()
            )
    cases = {
        "shallow": trained_case(SHALLOW, BATCH),
        "deep": trained_case(DEEP_STEP, BATCH),
        "deep_dual": trained_case(DEEP_STEP, BATCH, **DUAL),
    }
    steps = time_steps(cases, max(3, repeats // 3))
    for name in solvers():
        report[f"step_ms_per_sample_shallow_{key(name)}"] = 1e3 * steps["shallow"][name] / BATCH
        for deep in ("deep", "deep_dual"):
            report[f"step_ms_per_sample_{deep}_{key(name)}"] = 1e3 * steps[deep][name] / BATCH
            report[f"ratio_{deep}_over_shallow_step_{key(name)}"] = steps[deep][name] / steps["shallow"][name]
    report["ratio_deep_over_shallow_step"] = report[f"ratio_deep_over_shallow_step_{key(DEFAULT)}"]
    report["ratio_deep_dual_over_shallow_step"] = report[f"ratio_deep_dual_over_shallow_step_{key(DEFAULT)}"]
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    report = run(args.repeats)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    names = list(solvers())
    print(f"free phase / input GEMM (1 thread, float64, B = {BATCH}; it: Newton steps or layer sweeps)")
    print(f"{'network':20} {'state':8} {'cond.':>6} {'GEMM ms':>8} " + " ".join(f"{n:>20}" for n in names))
    for case, sizes in DEEP.items():
        for state in ("init", "trained"):
            tag = f"{case}_{state}"
            ratios = [report[f"ratio_{key(n)}_over_input_gemm_{tag}"] for n in names]
            its = [report[f"{key(n)}_iterations_{tag}"] for n in names]
            cells = [f"{r:8.1f}x ({i:3d} it)" for r, i in zip(ratios, its, strict=True)]
            net = "-".join(map(str, sizes)) + (" dual" if case.endswith("_dual") else "")
            print(
                f"{net:20} {state:8} {report[f'conducting_fraction_{tag}']:6.0%} "
                f"{report[f'input_gemm_ms_{tag}']:8.3f} " + " ".join(f"{c:>20}" for c in cells)
            )
    print("training step's solves (free + two nudged phases), trained state, ms per sample:")
    for name in names:
        print(
            f"  {name:15} 784-100-10 {report[f'step_ms_per_sample_shallow_{key(name)}']:8.3f}  "
            f"784-64-64-64-10 {report[f'step_ms_per_sample_deep_{key(name)}']:8.3f}  "
            f"deep / shallow {report[f'ratio_deep_over_shallow_step_{key(name)}']:6.1f}x  "
            f"dual-rail, gains 4 {report[f'step_ms_per_sample_deep_dual_{key(name)}']:8.3f}  "
            f"/ shallow {report[f'ratio_deep_dual_over_shallow_step_{key(name)}']:6.1f}x"
        )
    worst = max(v for k, v in report.items() if k.startswith("max_abs_diff_auto_vs_fast"))
    print(f"max |V_auto - V_fast| over the deep cases: {worst:.1e} V")
    return 0


if __name__ == "__main__":
    sys.exit(main())
