"""``cosim energy``: what one inference and one training step cost, and how fast each phase settles.

For a batch of test samples the model runs one training step's worth of physics: the free phase of
every analog block (the inference) and, through ``loss.backward()``, its nudged phases. Each phase
is then re-solved in float64 (static power at equilibrium, :mod:`analog.energy`) and simulated as
an RC transient from the previous phase's state (:mod:`analog.settling`): the free phase from rest
(all nodes at 0 V, sources switched on at ``t = 0``), each nudged phase from the phase before it.
A phase's energy is what its sources deliver until it has settled.

Converters and digital compute are counted from the model's structure, per sample:

* inference: a DAC per input value of every analog block (a differential DAC drives each ``+/-``
  pair), an ADC per output; the digital ``Linear``/``Conv2d`` MACs of the forward pass;
* training: the inference, plus per nudged phase a current-DAC conversion per output node, and
  per EP measurement phase (two for every variant) an ADC read of every free node voltage and,
  when a trainable block precedes the analog block, of every input-source current; the digital
  backward pass (2x the forward MACs: input and weight gradients) and the EP update (2 MACs per
  device: one squared voltage drop per measured phase, using :func:`cosim.gradients.pair_products`'s
  expansion). A training step is ``train.batch_size`` samples.

Energies per conversion: ADC ``FoM_W 2^bits`` (Walden; Murmann's survey), DAC ``2^bits C_u V^2``,
MAC from Horowitz (ISSCC 2014); see :class:`cosim.config.EnergyConfig`.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from analog.circuit import Circuit
from analog.energy import Power, equilibrium_power
from analog.ngspice import NgspiceTransient
from analog.settling import Capacitances, Transient, TransientOptions, simulate_phase
from analog.solvers.base import Equilibrium, EquilibriumSolver
from analog.solvers.newton import FastSolver
from cosim.config import ConfigError, EnergyConfig, RunConfig
from cosim.gradients import EquilibriumPropagation

__all__ = [
    "ENERGY_FILE",
    "CostModel",
    "PhaseResult",
    "add_energy_command",
    "block_counts",
    "cmd_energy",
    "digital_macs",
    "energy_report",
    "simulate_block",
]

ENERGY_FILE = "energy.json"
BREAKDOWN_PLOT = "energy_breakdown.png"
WAVEFORM_PLOT = "settling_waveforms.png"
CONVERGENCE_PLOT = "solver_convergence.png"


@dataclass(frozen=True)
class CostModel:
    """Energy per converter conversion and per digital MAC, joules."""

    adc_J: float
    dac_J: float
    mac_J: float

    @classmethod
    def from_config(cls, cfg: EnergyConfig) -> CostModel:
        return cls(
            adc_J=cfg.adc_fom_J * 2**cfg.adc_bits,
            dac_J=2**cfg.dac_bits * cfg.dac_unit_F * cfg.dac_ref_V**2,
            mac_J=cfg.mac_energy_J,
        )


def capacitances(cfg: EnergyConfig) -> Capacitances:
    return Capacitances(node_F=cfg.node_F, crosspoint_F=cfg.crosspoint_F, diode_F=cfg.diode_F)


def transient_options(cfg: EnergyConfig) -> TransientOptions:
    return TransientOptions(settle_tol=cfg.settle_tol, rtol=cfg.rtol, atol_V=cfg.atol_V, t_max_s=cfg.t_max_s)


# ------------------------------------------------------------------------------------------------
# One analog block: phases, static power, transients.


@dataclass
class PhaseResult:
    """One phase of one analog block for a batch (powers and energies per sample)."""

    name: str
    nudge_A: torch.Tensor | None
    equilibrium: Equilibrium
    """The float64 fast-solver equilibrium (with its residual history)."""
    power: Power
    transient: Transient
    start: torch.Tensor | None = None
    """Free-node voltages ``[B, N]`` the transient started from (the previous phase's)."""
    ngspice: dict = field(default_factory=dict)
    """DC iterations, power agreement and ``.tran`` waveforms/iterations when ngspice ran."""

    def row(self) -> dict:
        tr = self.transient
        power = float(self.power.delivered_W.mean())
        settle = tr.settle_time_s
        out = {
            "phase": self.name,
            "power_W": power,
            "dissipated_W": float(self.power.dissipated_W.mean()),
            "settle_time_s": float(settle.mean()),
            "settle_time_max_s": float(settle.max()),
            "energy_J": float(tr.supply_J.mean()),
            "dissipated_J": float(tr.dissipated_J.mean()),
            "charge_J": float(tr.charge_J.mean()),
            "static_x_settle_J": float((self.power.delivered_W * settle).mean()),
            "fast_newton_iterations": self.equilibrium.iterations,
            "transient_steps": tr.steps,
        }
        for key in ("dc_iterations", "power_rel_diff", "tran_iterations", "tran_points", "max_wave_diff_V"):
            if key in self.ngspice:
                out[f"ngspice_{key}"] = self.ngspice[key]
        return out


def simulate_block(
    circuit: Circuit,
    source_V: torch.Tensor,
    phases: list[tuple[str, torch.Tensor | None]],
    caps: Capacitances,
    options: TransientOptions,
    ngspice_samples: int = 0,
    ngspice_workers: int = 1,
) -> list[PhaseResult]:
    """Static power and settling of each phase of ``phases`` (name, nudging currents ``[B, n_out]``
    or ``None``), simulated in order: the first from rest, each next from the previous one's state.

    With ``ngspice_samples > 0`` ngspice also solves every phase (DC) and runs ``.tran`` on the
    first ``ngspice_samples`` samples; the fast transient is re-run on ngspice's time points to
    compare the waveforms.
    """
    circuit = circuit.detach().to(torch.float64)
    source_V = source_V.detach().to(torch.float64)
    solver = FastSolver(record_history=True)
    start = torch.zeros(source_V.shape[0], sum(circuit.spec.layer_sizes[1:]), dtype=torch.float64)
    free: Equilibrium | None = None
    results = []
    for name, nudge in phases:
        nudge = None if nudge is None else nudge.detach().to(torch.float64)
        eq = solver.solve(circuit, source_V, nudge, init=free)
        if free is None:
            free = eq  # EP starts every nudged phase from the free equilibrium
        final = eq.all_voltages()
        result = PhaseResult(
            name=name,
            nudge_A=nudge,
            equilibrium=eq,
            power=equilibrium_power(circuit, source_V, eq, nudge),
            transient=simulate_phase(circuit, caps, source_V, start, final, nudge, options),
            start=start,
        )
        results.append(result)
        start = final
    if ngspice_samples > 0:
        _ngspice_phases(circuit, source_V, results, caps, options, ngspice_samples, ngspice_workers)
    return results


def _ngspice_phases(circuit, source_V, results, caps, options, samples, workers) -> None:
    from analog.solvers.ngspice import NgspiceSolver

    k = min(samples, source_V.shape[0])
    with NgspiceSolver(workers=workers) as dc, NgspiceTransient(workers=workers) as tran:
        for result in results:
            eq = dc.solve(circuit, source_V, result.nudge_A)
            power = equilibrium_power(circuit, source_V, eq, result.nudge_A)
            rel = (power.delivered_W - result.power.delivered_W).abs() / result.power.delivered_W.abs()
            nudge = None if result.nudge_A is None else result.nudge_A[:k]
            t_stop = 1.5 * float(result.transient.settle_time_s[:k].max())
            t_stop = t_stop if t_stop > 0 else float(result.transient.times_s[-1])
            waves = tran.run(circuit, caps, source_V[:k], result.start[:k], t_stop, nudge)
            diff = 0.0
            for b, wave in enumerate(waves):
                again = simulate_phase(
                    circuit,
                    caps,
                    source_V[b : b + 1],
                    result.start[b : b + 1],
                    result.transient.final[b : b + 1],
                    None if nudge is None else nudge[b : b + 1],
                    options,
                    t_eval=wave.times_s,
                )
                on_grid = torch.isin(again.times_s, wave.times_s)
                diff = max(diff, float((again.voltages[on_grid, 0] - wave.voltages).abs().max()))
            result.ngspice = {
                "dc_iterations": int(eq.iterations),
                "power_rel_diff": float(rel.max()),
                "tran_iterations": sum(int(w.usage.get("Transient iterations", 0)) for w in waves),
                "tran_points": sum(int(w.usage.get("Accepted timepoints", 0)) for w in waves),
                "max_wave_diff_V": diff,
                "waves": waves,
            }


# ------------------------------------------------------------------------------------------------
# Counting converters and MACs.


def block_counts(circuit: Circuit, n_nudged: int, n_measured: int, needs_input_grad: bool) -> dict:
    """Conversions and EP-update MACs of one analog block per sample (see the module docstring)."""
    spec = circuit.spec
    n_free = sum(spec.layer_sizes[1:])
    devices = sum(w.numel() for w in circuit.weights) + sum(b.numel() for b in circuit.biases)
    reads = n_free + (spec.n_sources if needs_input_grad else 0)
    return {
        "devices": devices,
        "dac_inference": spec.n_inputs,
        "adc_inference": spec.n_outputs,
        "dac_training": spec.n_inputs + n_nudged * spec.n_outputs,
        "adc_training": spec.n_outputs + n_measured * reads,
        "ep_update_macs": 2 * devices,
    }


def digital_macs(model: nn.Module, x: torch.Tensor) -> tuple[int, torch.Tensor]:
    """Multiply-accumulates per sample of every ``Linear`` and ``Conv2d`` in one forward pass of
    ``x`` (the output is returned so that the pass can be the one used for training)."""
    total = [0]

    def hook(module, inputs, output):
        per_sample = output.numel() // output.shape[0]
        if isinstance(module, nn.Linear):
            total[0] += per_sample * module.in_features
        else:
            kh, kw = module.kernel_size
            total[0] += per_sample * (module.in_channels // module.groups) * kh * kw

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    try:
        out = model(x)
    finally:
        for h in handles:
            h.remove()
    return total[0], out


class _Recorder(EquilibriumSolver):
    """Passes solves through to ``inner`` and records what each phase was asked to solve."""

    def __init__(self, inner: EquilibriumSolver):
        self.inner, self.name = inner, inner.name
        self.calls: list[tuple[Circuit, torch.Tensor, torch.Tensor | None]] = []

    def solve(self, circuit, source_V, nudge_A=None, init=None):
        self.calls.append((circuit, source_V.detach(), None if nudge_A is None else nudge_A.detach()))
        return self.inner.solve(circuit, source_V, nudge_A, init)


def _phase_names(method: EquilibriumPropagation) -> list[str]:
    return ["free"] + [
        name
        for name, variant in (("+beta", "positive"), ("-beta", "negative"))
        if method.variant in ("centered", variant)
    ]


# ------------------------------------------------------------------------------------------------
# The report.


def energy_report(
    config: RunConfig, model, x: torch.Tensor, y: torch.Tensor, n_classes: int, say=print
) -> tuple[dict, dict]:
    """Simulate one training step on ``x``, ``y`` and return ``(report, details)``: the JSON-able
    report and, per analog block, its :class:`PhaseResult` list (for the plots)."""
    from cosim.block import AnalogBlock
    from cosim.losses import loss_value

    cfg = config.energy
    costs = CostModel.from_config(cfg)
    caps, options = capacitances(cfg), transient_options(cfg)
    blocks = model.analog_blocks()
    method = blocks[0].method
    if not isinstance(method, EquilibriumPropagation):
        raise ConfigError(
            "train.method: the energy of a training step needs EP's nudged phases; 'implicit' has no "
            "circuit counterpart (choose ep-centered, ep-positive or ep-negative)"
        )
    recorders = {}
    for block in blocks:
        recorders[block.name] = block.solver = _Recorder(FastSolver())
    model.train()
    macs, out = digital_macs(model, x.to(next(model.parameters()).dtype))
    loss_value(config.train.loss, out, y, n_classes).backward()
    model.zero_grad(set_to_none=True)

    names = _phase_names(method)
    trainable_before = []
    seen_trainable = False
    for module in model.blocks:
        if isinstance(module, AnalogBlock):
            trainable_before.append(seen_trainable)
        seen_trainable = seen_trainable or any(p.requires_grad for p in module.parameters())

    details, block_rows = {}, []
    totals = {
        "inference": dict.fromkeys(("analog_J", "input_lines_J", "dac_J", "adc_J", "digital_J"), 0.0),
        "training": dict.fromkeys(("analog_J", "input_lines_J", "dac_J", "adc_J", "digital_J", "ep_update_J"), 0.0),
    }
    counts_total = {"dac_inference": 0, "adc_inference": 0, "dac_training": 0, "adc_training": 0, "ep_update_macs": 0}
    for block, needs_grad in zip(blocks, trainable_before, strict=True):
        calls = recorders[block.name].calls
        if len(calls) != len(names):
            raise RuntimeError(f"{block.name}: expected {len(names)} phases, recorded {len(calls)}")
        circuit, source_V, _ = calls[0]
        say(f"energy: {block.name} {'-'.join(map(str, block.spec.layer_sizes))}: simulating {', '.join(names)}")
        start = time.perf_counter()
        results = simulate_block(
            circuit,
            source_V,
            [(name, nudge) for name, (_, _, nudge) in zip(names, calls, strict=True)],
            caps,
            options,
            ngspice_samples=cfg.ngspice_samples if cfg.ngspice else 0,
            ngspice_workers=config.solver.workers,
        )
        details[block.name] = results
        line_F = caps.input_line_F(circuit)
        input_lines_J = float((line_F * source_V.double() ** 2).sum(1).mean())
        n_measured = 2
        counts = block_counts(circuit, len(names) - 1, n_measured, needs_grad)
        for key in counts_total:
            counts_total[key] += counts[key]
        rows = [r.row() for r in results]
        block_rows.append(
            {
                "name": block.name,
                "layer_sizes": list(block.spec.layer_sizes),
                "phases": rows,
                "input_lines_J": input_lines_J,
                "counts": counts,
                "seconds": time.perf_counter() - start,
            }
        )
        totals["inference"]["analog_J"] += rows[0]["energy_J"]
        totals["training"]["analog_J"] += sum(r["energy_J"] for r in rows)
        for kind in ("inference", "training"):
            totals[kind]["input_lines_J"] += input_lines_J
            totals[kind]["dac_J"] += counts[f"dac_{kind}"] * costs.dac_J
            totals[kind]["adc_J"] += counts[f"adc_{kind}"] * costs.adc_J
        totals["training"]["ep_update_J"] += counts["ep_update_macs"] * costs.mac_J
    totals["inference"]["digital_J"] = macs * costs.mac_J
    totals["training"]["digital_J"] = 3 * macs * costs.mac_J
    for kind in ("inference", "training"):
        totals[kind]["total_J"] = sum(totals[kind].values())
    report = {
        "name": config.name,
        "samples": int(x.shape[0]),
        "method": method.name,
        "beta": method.beta,
        "batch_size": config.train.batch_size,
        "capacitances_F": {"node": caps.node_F, "crosspoint": caps.crosspoint_F, "diode": caps.diode_F},
        "settle_tol": options.settle_tol,
        "costs_J": {"adc_conversion": costs.adc_J, "dac_conversion": costs.dac_J, "mac": costs.mac_J},
        "blocks": block_rows,
        "counts_per_sample": {**counts_total, "digital_macs_inference": macs, "digital_macs_training": 3 * macs},
        "per_inference_J": totals["inference"],
        "per_training_sample_J": totals["training"],
        "per_training_step_J": totals["training"]["total_J"] * config.train.batch_size,
    }
    return report, details


def report_text(report: dict) -> str:
    """The report as fixed-width tables."""
    lines = [
        f"energy report '{report['name']}': {report['samples']} samples, {report['method']}, "
        f"beta {report['beta']}, settling tolerance {report['settle_tol']:g} of each phase's swing",
        "",
        f"{'block':10s} {'phase':6s} {'power':>11s} {'settle mean':>12s} {'settle max':>11s} "
        f"{'energy':>11s} {'dissipated':>11s} {'charge':>11s} {'ngspice':>26s}",
    ]
    for block in report["blocks"]:
        for row in block["phases"]:
            ng = ""
            if "ngspice_dc_iterations" in row:
                ng = (
                    f"{row['ngspice_dc_iterations']:4d} it, "
                    f"dP {row['ngspice_power_rel_diff']:.0e}, dV {row['ngspice_max_wave_diff_V']:.0e}"
                )
            lines.append(
                f"{block['name']:10s} {row['phase']:6s} {_si(row['power_W'], 'W'):>11s} "
                f"{_si(row['settle_time_s'], 's'):>12s} {_si(row['settle_time_max_s'], 's'):>11s} "
                f"{_si(row['energy_J'], 'J'):>11s} {_si(row['dissipated_J'], 'J'):>11s} "
                f"{_si(row['charge_J'], 'J'):>11s} {ng:>26s}"
            )
    counts = report["counts_per_sample"]
    costs = report["costs_J"]
    lines += [
        "",
        f"per conversion: ADC {_si(costs['adc_conversion'], 'J')}, DAC {_si(costs['dac_conversion'], 'J')}; "
        f"per MAC {_si(costs['mac'], 'J')}",
        f"per sample: inference {counts['dac_inference']} DAC + {counts['adc_inference']} ADC conversions, "
        f"{counts['digital_macs_inference']} MACs; training {counts['dac_training']} DAC + "
        f"{counts['adc_training']} ADC, {counts['digital_macs_training']} + {counts['ep_update_macs']} (EP) MACs",
        "",
        f"{'per sample':18s} {'inference':>11s} {'training':>11s}",
    ]
    inf, tr = report["per_inference_J"], report["per_training_sample_J"]
    for key in ("analog_J", "input_lines_J", "dac_J", "adc_J", "digital_J", "ep_update_J", "total_J"):
        lines.append(f"{key[:-2]:18s} {_si(inf.get(key, 0.0), 'J'):>11s} {_si(tr[key], 'J'):>11s}")
    lines.append(f"training step ({report['batch_size']} samples): {_si(report['per_training_step_J'], 'J')}")
    return "\n".join(lines)


def _si(value: float, unit: str) -> str:
    if value == 0 or not math.isfinite(value):
        return f"{value:.3g} {unit}"
    prefixes = {-18: "a", -15: "f", -12: "p", -9: "n", -6: "u", -3: "m", 0: "", 3: "k"}
    exp = min(max(3 * math.floor(math.log10(abs(value)) / 3), -18), 3)
    return f"{value / 10**exp:.3g} {prefixes[exp]}{unit}"


# ------------------------------------------------------------------------------------------------
# Plots.


def plot_breakdown(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = [
        ("analog_J", "analog phases"),
        ("input_lines_J", "input lines (C V^2)"),
        ("dac_J", "DAC"),
        ("adc_J", "ADC"),
        ("digital_J", "digital MACs"),
        ("ep_update_J", "EP update MACs"),
    ]
    columns = [("inference", report["per_inference_J"]), ("training sample", report["per_training_sample_J"])]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.5))
    bottom = [0.0, 0.0]
    for key, label in parts:
        values = [c.get(key, 0.0) for _, c in columns]
        ax.bar([c for c, _ in columns], values, bottom=bottom, label=label)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    for i, total in enumerate(bottom):
        ax.annotate(_si(total, "J"), (i, total), ha="center", va="bottom")
    ax.set_ylabel("energy per sample (J)")
    ax.set_title(f"{report['name']}: energy breakdown ({report['method']})")
    ax.legend(fontsize=8)
    # The same parts side by side on a log scale: the analog phases are often orders of magnitude
    # below the converters and digital compute, invisible in the stack.
    width = 0.4
    for i, (name, column) in enumerate(columns):
        values = [max(column.get(key, 0.0), 1e-30) for key, _ in parts]
        bx.bar([k + (i - 0.5) * width for k in range(len(parts))], values, width=width, label=name)
    bx.set_yscale("log")
    bx.set_ylim(bottom=min(v for _, c in columns for v in c.values() if v > 0) / 10)
    bx.set_xticks(range(len(parts)), [label for _, label in parts], rotation=25, ha="right", fontsize=8)
    bx.set_ylabel("energy per sample (J)")
    bx.set_title("per part (log scale)")
    bx.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_waveforms(details: dict, path: Path, max_nodes: int = 6) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows = len(details)
    n_cols = max(len(r) for r in details.values())
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.2 * n_cols, 3.2 * n_rows), squeeze=False)
    for i, (name, results) in enumerate(details.items()):
        for j, result in enumerate(results):
            ax = axes[i][j]
            tr = result.transient
            n = tr.voltages.shape[2]
            nodes = list(range(n - 1, max(n - 1 - max_nodes, -1), -1))  # output nodes first
            t_ns = tr.times_s * 1e9
            delta = tr.voltages[:, 0] - tr.voltages[0, 0]
            for k, node in enumerate(nodes):
                ax.plot(t_ns, delta[:, node], color=f"C{k}", lw=1)
            waves = result.ngspice.get("waves")
            if waves:
                w = waves[0]
                step = max(1, len(w.times_s) // 40)
                d = w.voltages - w.voltages[0]
                for k, node in enumerate(nodes):
                    ax.plot(w.times_s[::step] * 1e9, d[::step, node], "o", ms=2.5, color=f"C{k}", mfc="none")
            ax.axvline(float(tr.settle_time_s[0]) * 1e9, color="k", ls="--", lw=0.8)
            ax.set_title(f"{name} {result.name}" + (" (lines: fast, o: ngspice)" if waves else ""), fontsize=9)
            ax.set_xlabel("time (ns)")
            ax.set_ylabel("v(t) - v(0) (V)")
        for j in range(len(results), n_cols):
            axes[i][j].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_convergence(details: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    labels, dc, tran = [], [], []
    for name, results in details.items():
        for result in results:
            history = result.equilibrium.history.get("residual_A", [])
            worst = [max(max(step), 1e-30) for step in history]
            ax.semilogy(range(len(worst)), worst, marker="o", ms=3, label=f"{name} {result.name}")
            labels.append(f"{name}\n{result.name}")
            dc.append(result.ngspice.get("dc_iterations", 0))
            tran.append(result.ngspice.get("tran_iterations", 0))
    ax.set_xlabel("Newton iteration (fast solver)")
    ax.set_ylabel("largest KCL residual over the batch (A)")
    ax.set_title("fast solver: residual per iteration")
    ax.legend(fontsize=8)
    x = range(len(labels))
    bx.bar([i - 0.2 for i in x], dc, width=0.4, label="DC (.dc sweep, whole batch)")
    bx.bar([i + 0.2 for i in x], tran, width=0.4, label=".tran (ngspice samples)")
    bx.set_xticks(list(x), labels, fontsize=7)
    if any(dc) or any(tran):
        bx.set_yscale("log")
    bx.set_ylabel("ngspice iterations")
    bx.set_title("ngspice iteration counts" if any(dc) else "ngspice not run (energy.ngspice = false)")
    bx.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------
# Command line.


def load_weights(path: Path) -> dict:
    """Model weights from a ``cosim train`` checkpoint or a plain ``torch.save(model.state_dict())``."""
    from cosim.train import load_checkpoint

    if not path.is_file():
        raise ConfigError(f"--checkpoint: {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or foreign files
        raise ConfigError(f"--checkpoint: {path} is not a readable torch file: {exc}") from None
    if isinstance(state, dict) and "format" in state:
        return load_checkpoint(path)["model"]
    if not isinstance(state, dict):
        raise ConfigError(f"--checkpoint: {path} holds no state dict")
    return state


def cmd_energy(args) -> int:
    from cosim.build import build_model, build_solver, torch_dtype
    from cosim.cli import resolve_config
    from cosim.data import load_dataset
    from cosim.io import atomic_write_json, atomic_write_text

    def say(message: str) -> None:
        if not args.json:
            print(message, file=sys.stderr, flush=True)

    config = resolve_config(args.config)
    data = load_dataset(config.data, config.seed)
    model = build_model(config, data.input_shape, solver=build_solver(config.solver, "fast"))
    if args.checkpoint is not None:
        try:
            model.load_state_dict(load_weights(Path(args.checkpoint)))
        except (RuntimeError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"--checkpoint: {args.checkpoint} does not match the model of {args.config}: {exc}"
            ) from None
    n = config.energy.samples
    x = data.test_x[:n].to(torch_dtype(config))
    y = data.test_y[:n]
    report, details = energy_report(config, model, x, y, data.n_classes, say=say)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / ENERGY_FILE, report)
    text = report_text(report)
    atomic_write_text(out / "energy.txt", text + "\n")
    plot_breakdown(report, out / BREAKDOWN_PLOT)
    plot_waveforms(details, out / WAVEFORM_PLOT)
    plot_convergence(details, out / CONVERGENCE_PLOT)
    if args.json:
        print(json.dumps(report))
    else:
        print(text)
        print(f"\nwrote {out / ENERGY_FILE}, {BREAKDOWN_PLOT}, {WAVEFORM_PLOT}, {CONVERGENCE_PLOT}")
    return 0


def add_energy_command(sub) -> None:
    p = sub.add_parser(
        "energy", help="static power, settling time and energy per phase, per inference and per training step"
    )
    p.add_argument("--config", required=True, help="TOML file or preset name (configs/NAME.toml)")
    p.add_argument("--checkpoint", default=None, help="checkpoint.pt of `cosim train` or a saved state dict")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object on stdout")
    p.add_argument("--out", type=Path, required=True, help="folder for energy.json, energy.txt and the PNGs")
    p.set_defaults(func=cmd_energy)
