"""The energy model: what one inference and one training step cost, and how fast each phase settles.

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

Energies per conversion, MACs, programming and the published comparison: :mod:`cosim.costs`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import torch

from analog.circuit import Circuit
from analog.diode_charge import card_charge
from analog.energy import Power, equilibrium_power
from analog.ngspice import NgspiceTransient
from analog.operating_point import operating_point
from analog.settling import Capacitances, Transient, TransientOptions
from analog.settling_general import simulate as simulate_phase
from analog.solvers.base import Equilibrium, EquilibriumSolver, WrappedSolver
from analog.solvers.newton import FastSolver
from cosim.block import AnalogBlock
from cosim.config import ConfigError, EnergyConfig, RunConfig
from cosim.costs import (
    CostModel,
    block_counts,
    digital_macs,
    estimate_programming,
    peripheral_power_W,
    published_comparison,
)
from cosim.gradients import EquilibriumPropagation
from cosim.losses import loss_value

__all__ = ["PhaseResult", "energy_report", "simulate_block"]


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

    def row(self, hold_s: float = 0.0, peripheral_W: float = 0.0) -> dict:
        """The phase's figures, per sample. The phase lasts the slowest sample's settling time plus
        ``hold_s``; each sample draws its transient energy until it has settled and its static power
        from then to the end of the phase; the peripherals draw ``peripheral_W`` throughout."""
        tr = self.transient
        power = float(self.power.delivered_W.mean())
        settle = tr.settle_time_s
        duration = float(settle.max()) + hold_s
        settled_J = float((self.power.delivered_W * (duration - settle)).mean())
        array_J = float(tr.supply_J.mean()) + settled_J
        out = {
            "phase": self.name,
            "power_W": power,
            "static_power_W": power,
            "peripheral_power_W": peripheral_W,
            "dissipated_W": float(self.power.dissipated_W.mean()),
            "settle_time_s": float(settle.mean()),
            "settling_s": float(settle.mean()),
            "settle_time_max_s": float(settle.max()),
            "phase_duration_s": duration,
            "transient_energy_J": float(tr.supply_J.mean()),
            "array_energy_J": array_J,
            "peripheral_energy_J": peripheral_W * duration,
            "energy_J": array_J + peripheral_W * duration,
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
    say=lambda _: None,
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
    t0 = time.perf_counter()
    for name, nudge in phases:
        t_phase = time.perf_counter()
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
        tr = result.transient
        elapsed = time.perf_counter() - t_phase
        say(f"  {name}: settled in {float(tr.settle_time_s.max()) * 1e9:.3g} ns ({tr.steps} steps, {elapsed:.1f} s)")
    if ngspice_samples > 0:
        say(
            f"  ngspice: DC and .tran of {len(phases)} phases on {ngspice_samples} sample(s), a deck of "
            f"{circuit.spec.n_devices():,} resistors (energy.ngspice = false skips this check) ..."
        )
        _ngspice_phases(circuit, source_V, results, caps, options, ngspice_samples, ngspice_workers, say)
        say(f"  ngspice done ({time.perf_counter() - t0:.1f} s in all)")
    return results


COMPARISON_POINTS = 400
"""Most of ngspice's ``.tran`` time points the fast transient is re-run on and compared at."""


def _comparison_points(n: int, first: int = 40) -> torch.Tensor:
    """Indices of the ngspice time points compared: the first ``first`` (where the phase starts
    fastest) and evenly spaced ones after, at most :data:`COMPARISON_POINTS`, the last included."""
    if n <= COMPARISON_POINTS:
        return torch.arange(n)
    rest = torch.linspace(first, n - 1, COMPARISON_POINTS - first).round().long()
    return torch.unique(torch.cat([torch.arange(first), rest]))


MAX_TRAN_WORKERS = 8
"""At most this many ngspice processes run the ``.tran`` decks side by side, unless ``solver.workers``
asks for more (each is one more ngspice instance holding its own deck)."""


def _ngspice_phases(circuit, source_V, results, caps, options, samples, workers, say) -> None:
    """ngspice's DC solve of every phase, then the ``.tran`` decks of all phases at once (each
    phase starts from the fast transient's state, known beforehand), spread over up to one worker
    per deck and CPU; then the fast transient on ngspice's time points."""
    from analog.solvers.ngspice import NgspiceSolver

    k = min(samples, source_V.shape[0])
    runs, dc_results = [], []
    with NgspiceSolver(workers=workers) as dc:
        for result in results:
            t0 = time.perf_counter()
            eq = dc.solve(circuit, source_V, result.nudge_A)
            power = equilibrium_power(circuit, source_V, eq, result.nudge_A)
            rel = (power.delivered_W - result.power.delivered_W).abs() / result.power.delivered_W.abs()
            dc_results.append((eq, rel))
            say(f"    {result.name}: ngspice DC of {source_V.shape[0]} samples {time.perf_counter() - t0:.1f} s")
            t_stop = 1.5 * float(result.transient.settle_time_s[:k].max())
            t_stop = t_stop if t_stop > 0 else float(result.transient.times_s[-1])
            nudge = None if result.nudge_A is None else result.nudge_A[:k]
            runs.append((source_V[:k], result.start[:k], t_stop, nudge))
    tran_workers = max(workers, min(len(runs) * k, len(os.sched_getaffinity(0)), MAX_TRAN_WORKERS))
    say(f"    .tran of {len(runs) * k} deck(s) on {tran_workers} ngspice worker(s) ...")
    t0 = time.perf_counter()
    with NgspiceTransient(workers=tran_workers) as tran:
        all_waves = tran.run_many(circuit, caps, runs)
    say(f"    .tran done in {time.perf_counter() - t0:.1f} s")
    for result, (eq, rel), waves, run in zip(results, dc_results, all_waves, runs, strict=True):
        t0 = time.perf_counter()
        nudge = run[3]
        diff = 0.0
        for b, wave in enumerate(waves):
            pick = _comparison_points(len(wave.times_s))
            times = wave.times_s[pick]
            again = simulate_phase(
                circuit,
                caps,
                source_V[b : b + 1],
                result.start[b : b + 1],
                result.transient.final[b : b + 1],
                None if nudge is None else nudge[b : b + 1],
                options,
                t_eval=times,
            )
            on_grid = torch.isin(again.times_s, times)
            diff = max(diff, float((again.voltages[on_grid, 0] - wave.voltages[pick]).abs().max()))
        result.ngspice = {
            "dc_iterations": int(eq.iterations),
            "power_rel_diff": float(rel.max()),
            "tran_iterations": sum(int(w.usage.get("Transient iterations", 0)) for w in waves),
            "tran_points": sum(int(w.usage.get("Accepted timepoints", 0)) for w in waves),
            "max_wave_diff_V": diff,
            "waves": waves,
        }
        say(
            f"    {result.name}: {result.ngspice['tran_points']} ngspice time points, fast transient on them "
            f"{time.perf_counter() - t0:.1f} s; |V_fast - V_ngspice| <= {diff:.1e} V"
        )


class _Recorder(WrappedSolver):
    """Records what each phase was asked to solve."""

    def __init__(self, inner: EquilibriumSolver):
        super().__init__(inner)
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
    config: RunConfig,
    model,
    x: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    say=print,
    programming: dict | None = None,
) -> tuple[dict, dict]:
    """Simulate one training step on ``x``, ``y`` and return ``(report, details)``: the JSON-able
    report and, per analog block, its :class:`PhaseResult` list (for the plots). The model's
    solvers are replaced by recording fast solvers for the step and restored afterwards.
    ``programming``: the devices' programming per step as measured by a training run (see
    :func:`programming_from_run`), else it is estimated (:func:`estimate_programming`)."""
    cfg = config.energy
    costs = CostModel.from_config(cfg)
    caps, options = cfg.capacitances(), cfg.transient_options()
    blocks = model.analog_blocks()
    if model.conv_blocks():
        raise ConfigError(
            f"model.blocks: {model.conv_blocks()[0].name} is a conv analog block, which the energy model does not "
            "cover yet (a report without it would understate the step); run cosim energy on a model without one"
        )
    if not blocks:
        raise ConfigError(
            "model.blocks: energy is a circuit quantity and this model has no analog block (Hopfield blocks "
            "are the idealised reference, with no circuit to power)"
        )
    method = blocks[0].method
    if not isinstance(method, EquilibriumPropagation):
        raise ConfigError(
            "train.method: the energy of a training step needs EP's nudged phases; 'implicit' has no "
            "circuit counterpart (choose ep-centered, ep-positive or ep-negative)"
        )
    recorders, saved = {}, [block.solver for block in blocks]
    for block in blocks:
        recorders[block.name] = block.solver = _Recorder(FastSolver())
    try:
        model.train()
        macs, out = digital_macs(model, x.to(next(model.parameters()).dtype))
        loss_value(config.train.loss, out, y, n_classes).backward()
        model.zero_grad(set_to_none=True)
    finally:
        for block, solver in zip(blocks, saved, strict=True):
            block.solver = solver

    names = _phase_names(method)
    trainable_before = []
    seen_trainable = False
    for module in model.blocks:
        if isinstance(module, AnalogBlock):
            trainable_before.append(seen_trainable)
        seen_trainable = seen_trainable or any(p.requires_grad for p in module.parameters())

    details, block_rows = {}, []
    parts = ("analog_J", "peripherals_J", "input_lines_J", "dac_J", "adc_J", "digital_J")
    totals = {
        "inference": dict.fromkeys((*parts, "programming_J"), 0.0),
        "training": dict.fromkeys((*parts, "ep_update_J", "programming_J"), 0.0),
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
            say=say,
        )
        details[block.name] = results
        line_F = caps.input_line_F(circuit)
        input_lines_J = float((line_F * source_V.double() ** 2).sum(1).mean())
        n_measured = 2
        counts = block_counts(circuit, len(names) - 1, n_measured, needs_grad)
        for key in counts_total:
            counts_total[key] += counts[key]
        peripheral_W = peripheral_power_W(circuit.spec, cfg)
        rows = [r.row(cfg.hold_s, peripheral_W) for r in results]
        block_rows.append(
            {
                "name": block.name,
                "layer_sizes": list(block.spec.layer_sizes),
                "phases": rows,
                "peripheral_power_W": peripheral_W,
                "input_lines_J": input_lines_J,
                # The card whose junction charge replaces capacitances_F["diode"] (None: diode_F).
                "diode_charge": None if card_charge(circuit.spec) is None else circuit.spec.user_models.diode_model,
                "counts": counts,
                "operating_point": operating_point(circuit, source_V, results[0].equilibrium),
                "seconds": time.perf_counter() - start,
            }
        )
        for kind, taken in (("inference", rows[:1]), ("training", rows)):
            totals[kind]["analog_J"] += sum(r["array_energy_J"] for r in taken)
            totals[kind]["peripherals_J"] += sum(r["peripheral_energy_J"] for r in taken)
            totals[kind]["input_lines_J"] += input_lines_J
            totals[kind]["dac_J"] += counts[f"dac_{kind}"] * costs.dac_J
            totals[kind]["adc_J"] += counts[f"adc_{kind}"] * costs.adc_J
        totals["training"]["ep_update_J"] += counts["ep_update_macs"] * costs.mac_J
    totals["inference"]["digital_J"] = macs * costs.mac_J
    totals["training"]["digital_J"] = 3 * macs * costs.mac_J
    program = programming if programming is not None else estimate_programming(config, model, x, y, n_classes)
    step_J = sum(p["energy_J_per_step"] for p in program["blocks"].values())
    totals["training"]["programming_J"] = step_J / config.train.batch_size
    for kind in ("inference", "training"):
        totals[kind]["total_J"] = sum(totals[kind].values())
    split = {kind: _split(t) for kind, t in totals.items()}
    comparison = published_comparison(counts_total["ep_update_macs"] // 2, split["inference"])
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
        "energy_per_inference_J": split["inference"],
        "energy_per_training_sample_J": split["training"],
        "programming": program,
        "hold_s": cfg.hold_s,
        "comparison": comparison,
        "assumptions": _assumptions(cfg, costs, program),
    }
    return report, details


def _split(parts: dict) -> dict:
    """The per-sample energy in the four parts a design review asks for."""
    out = {
        "analog": parts["analog_J"] + parts["peripherals_J"] + parts["input_lines_J"],
        "converters": parts["dac_J"] + parts["adc_J"],
        "digital": parts["digital_J"] + parts.get("ep_update_J", 0.0),
        "programming": parts["programming_J"],
    }
    out["total"] = sum(out.values())
    return out


def _assumptions(cfg: EnergyConfig, costs: CostModel, program: dict) -> list[str]:
    """What the figures assume, named as the report and its figure legend print them."""
    out = [
        f"hold {cfg.hold_s * 1e9:g} ns per phase after settling (energy.hold_s)",
        f"ADC {costs.adc_J * 1e12:.3g} pJ/conversion (Walden FoM {cfg.adc_fom_J * 1e15:g} fJ x 2^{cfg.adc_bits})",
        f"DAC {costs.dac_J * 1e12:.3g} pJ/conversion (2^{cfg.dac_bits} x {cfg.dac_unit_F * 1e15:g} fF x "
        f"{cfg.dac_ref_V:g} V^2)",
        f"digital MAC {costs.mac_J * 1e12:.3g} pJ (energy.mac_energy_J; EP updates counted as digital MACs)",
    ]
    if cfg.driver_quiescent_A or cfg.amp_quiescent_A:
        out.append(
            f"peripheral quiescent current: driver {cfg.driver_quiescent_A * 1e6:g} uA, amplifier "
            f"{cfg.amp_quiescent_A * 1e6:g} uA at {cfg.peripheral_supply_V:g} V"
        )
    else:
        out.append("peripheral quiescent power not counted (energy.driver_quiescent_A = amp_quiescent_A = 0)")
    out.append(f"programming: {program['source']}")
    return out
