"""Energy of one EP training step against the hidden width of one analog block (64-W-10).

    python benchmarks/energy_widths.py [--widths 16,32,64,128,256] [--samples 4] [--plot FILE] [--json]

For each width: a seeded random circuit (conductances log-uniform over the device range, inputs
driven hard enough that diodes conduct), random inputs and random upstream gradients; the free,
+beta and -beta phases are solved and simulated as RC transients (free from rest, each nudged
phase from the previous one) with the default capacitances, converter and MAC energies of
``[energy]`` (:class:`cosim.config.EnergyConfig`). Energies are per sample; the training step is
64 samples (``train.batch_size``'s default).
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
from cosim.config import EnergyConfig, TrainConfig
from cosim.costs import CostModel, block_counts
from cosim.energy import simulate_block
from cosim.gradients import EquilibriumPropagation


def make_case(width: int, samples: int, seed: int = 0):
    spec = CircuitSpec((64, width, 10), input_gain_V=2.0)
    gen = torch.Generator().manual_seed(seed)
    lo, hi = spec.conductance.g_min_S, spec.conductance.g_max_S

    def draw(shape):
        return (lo * (hi / lo) ** torch.rand(shape, generator=gen, dtype=torch.float64)).clamp(lo, hi)

    circuit = Circuit(spec, [draw(s) for s in spec.weight_shapes()], [draw(s) for s in spec.bias_shapes()])
    x = torch.rand(samples, 64, generator=gen, dtype=torch.float64)
    grad = torch.randn(samples, 10, generator=gen, dtype=torch.float64)
    return circuit, spec.source_voltages(x), grad


def measure(width: int, samples: int, cfg: EnergyConfig, beta: float, batch: int) -> dict:
    circuit, source_V, grad = make_case(width, samples)
    method = EquilibriumPropagation(beta=beta)
    phases = [("free", None)] + [
        (name, method.nudge(circuit, grad, sign)[0]) for name, sign in (("+beta", 1.0), ("-beta", -1.0))
    ]
    costs, caps = CostModel.from_config(cfg), cfg.capacitances()
    start = time.perf_counter()
    results = simulate_block(circuit, source_V, phases, caps, cfg.transient_options())
    seconds = time.perf_counter() - start
    counts = block_counts(circuit, n_nudged=2, n_measured=2, needs_input_grad=False)
    analog = sum(float(r.transient.supply_J.mean()) for r in results)
    lines = float((caps.input_line_F(circuit) * source_V**2).sum(1).mean())
    converters = counts["dac_training"] * costs.dac_J + counts["adc_training"] * costs.adc_J
    update = counts["ep_update_macs"] * costs.mac_J
    total = analog + lines + converters + update
    return {
        "width": width,
        "devices": counts["devices"],
        "free_power_W": float(results[0].power.delivered_W.mean()),
        "settle_free_s": float(results[0].transient.settle_time_s.mean()),
        "settle_nudged_s": float(sum(r.transient.settle_time_s.mean() for r in results[1:]) / 2),
        "analog_J": analog,
        "input_lines_J": lines,
        "converters_J": converters,
        "ep_update_J": update,
        "per_sample_J": total,
        "per_step_J": total * batch,
        "seconds": seconds,
    }


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    widths = [r["width"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for key, label in (
        ("per_sample_J", "total"),
        ("analog_J", "analog phases (free, +beta, -beta)"),
        ("converters_J", "DAC + ADC"),
        ("ep_update_J", "EP update MACs"),
        ("input_lines_J", "input lines"),
    ):
        ax.loglog(widths, [r[key] for r in rows], marker="o", label=label)
    ax.set_xlabel("hidden width W (64-W-10 analog block)")
    ax.set_ylabel("energy per training sample (J)")
    ax.set_title("EP training energy vs width")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", default="16,32,64,128,256")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--plot", type=Path, default=Path("energy_widths.png"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    widths = [int(w) for w in args.widths.split(",")]
    if len(widths) < 1 or any(w < 1 for w in widths):
        parser.error("--widths: positive integers, e.g. 16,32,64,128")
    cfg, train = EnergyConfig(), TrainConfig()
    rows = [measure(w, args.samples, cfg, train.beta, train.batch_size) for w in widths]
    plot(rows, args.plot)
    if args.json:
        print(json.dumps(rows))
        return 0
    print(
        f"{'W':>5s} {'devices':>8s} {'P free':>9s} {'t free':>9s} {'t nudged':>9s} {'analog':>9s} "
        f"{'conv.':>9s} {'EP upd.':>9s} {'sample':>9s} {'step(64)':>9s} {'wall':>6s}"
    )
    for r in rows:
        print(
            f"{r['width']:5d} {r['devices']:8d} {r['free_power_W']:9.3e} {r['settle_free_s']:9.3e} "
            f"{r['settle_nudged_s']:9.3e} {r['analog_J']:9.3e} {r['converters_J']:9.3e} {r['ep_update_J']:9.3e} "
            f"{r['per_sample_J']:9.3e} {r['per_step_J']:9.3e} {r['seconds']:6.1f}"
        )
    print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
