"""``cosim energy``: power per phase, settling, converter and digital energy per inference and
training step (the model is :mod:`cosim.energy`)."""

from __future__ import annotations

import json
from pathlib import Path

from cosim.build import build_model, build_solver, torch_dtype
from cosim.checkpoint import model_state, read_checkpoint
from cosim.commands.common import (
    CONFIG_HELP,
    add_set_argument,
    check_out_dir,
    operating_point_lines,
    overrides,
    say,
)
from cosim.config import ConfigError, parse_config, resolve_config, set_path
from cosim.costs import programming_from_run
from cosim.data import load_dataset
from cosim.energy import energy_report
from cosim.io import atomic_write_json, atomic_write_text
from cosim.plots import plot_breakdown, plot_convergence, plot_waveforms
from cosim.runs import SUMMARY_FILE
from cosim.units import si

__all__ = ["register", "report_text", "run"]

ENERGY_FILE = "energy.json"
REPORT_FILE = "energy.txt"
BREAKDOWN_PLOT = "energy_breakdown.png"
WAVEFORM_PLOT = "settling_waveforms.png"
CONVERGENCE_PLOT = "solver_convergence.png"


def report_text(report: dict) -> str:
    """The report as fixed-width tables."""
    lines = [
        f"energy report '{report['name']}': {report['samples']} samples, {report['method']}, "
        f"beta {report['beta']}, settling tolerance {report['settle_tol']:g} of each phase's swing, "
        f"hold {si(report['hold_s'], 's')} per phase",
        "",
        f"{'block':10s} {'phase':6s} {'static':>10s} {'periph.':>10s} {'settle mean':>12s} {'settle max':>11s} "
        f"{'duration':>10s} {'energy':>10s} {'charge':>10s} {'ngspice':>26s}",
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
                f"{block['name']:10s} {row['phase']:6s} {si(row['static_power_W'], 'W'):>10s} "
                f"{si(row['peripheral_power_W'], 'W'):>10s} "
                f"{si(row['settle_time_s'], 's'):>12s} {si(row['settle_time_max_s'], 's'):>11s} "
                f"{si(row['phase_duration_s'], 's'):>10s} {si(row['energy_J'], 'J'):>10s} "
                f"{si(row['charge_J'], 'J'):>10s} {ng:>26s}"
            )
    lines.append("")
    for block in report["blocks"]:
        lines += operating_point_lines(block["name"], block["operating_point"], indent="")
    counts = report["counts_per_sample"]
    costs = report["costs_J"]
    lines += [
        "",
        f"per conversion: ADC {si(costs['adc_conversion'], 'J')}, DAC {si(costs['dac_conversion'], 'J')}; "
        f"per MAC {si(costs['mac'], 'J')}",
        f"per sample: inference {counts['dac_inference']} DAC + {counts['adc_inference']} ADC conversions, "
        f"{counts['digital_macs_inference']} MACs; training {counts['dac_training']} DAC + "
        f"{counts['adc_training']} ADC, {counts['digital_macs_training']} + {counts['ep_update_macs']} (EP) MACs",
    ]
    program = report["programming"]
    for name, p in program["blocks"].items():
        lines.append(
            f"programming {name}: {p['pulses_per_step']:.3g} pulses, {si(p['energy_J_per_step'], 'J')} and "
            f"{si(p['time_s_per_step'], 's')} per training step ({program['source']})"
        )
    if not program["blocks"]:
        lines.append(f"programming: {program['source']}")
    lines += ["", f"{'per sample':18s} {'inference':>11s} {'training':>11s}"]
    inf, tr = report["energy_per_inference_J"], report["energy_per_training_sample_J"]
    for key in ("analog", "converters", "digital", "programming", "total"):
        lines.append(f"{key:18s} {si(inf[key], 'J'):>11s} {si(tr[key], 'J'):>11s}")
    lines.append(f"training step ({report['batch_size']} samples): {si(report['per_training_step_J'], 'J')}")
    comp = report["comparison"]
    lines += [
        "",
        f"inference efficiency: {comp['macs_per_inference']} MACs in {si(comp['energy_J'], 'J')} (analog + "
        f"converters): {comp['tops_per_W']:.3g} TOPS/W",
    ]
    for ref in comp["published"]:
        lines.append(
            f"  vs {ref['tops_per_W']:g} TOPS/W, {ref['name']}: {si(ref['energy_J_same_macs'], 'J')} for the same "
            f"MACs ({ref['source']})"
        )
    lines.append(f"  ({comp['note']})")
    lines += ["", "assumptions:", *(f"  {a}" for a in report["assumptions"])]
    return "\n".join(lines)


def _config_and_weights(args):
    """The configuration and weights to report on: a `cosim train` checkpoint carries its circuit
    (``--config`` may only repeat it, ``--set`` may change ``energy.*`` keys); a plain state dict
    needs ``--config``."""
    sets = overrides(args)
    if args.checkpoint is None:
        if args.config is None:
            raise ConfigError("--config: required without --checkpoint (a TOML file or a preset name)")
        return resolve_config(args.config, sets), None
    try:
        stored = read_checkpoint(args.checkpoint)
    except ConfigError:
        if args.config is None:
            raise
        return resolve_config(args.config, sets), model_state(Path(args.checkpoint))
    if args.config is not None and resolve_config(args.config).model_dump() != stored.config.model_dump():
        raise ConfigError(
            f"--config: {args.config} differs from the circuit {args.checkpoint} was trained with; omit --config "
            "(the checkpoint carries its configuration)"
        )
    for key, _ in sets:
        if not key.startswith("energy."):
            raise ConfigError(f"--set {key}: with a trained checkpoint only energy.* keys may change")
    data = json.loads(stored.config.model_dump_json())
    for key, value in sets:
        set_path(data, key, value, flag="--set")
    return parse_config(data, f"{args.checkpoint} (stored configuration) with --set"), stored.model


def run(args) -> int:
    config, weights = _config_and_weights(args)
    out = check_out_dir(args.out)
    data = load_dataset(config.data, config.seed.data)
    model = build_model(config, data.input_shape, solver=build_solver(config.solver, "fast"), n_classes=data.n_classes)
    if weights is not None:
        try:
            model.load_state_dict(weights)
        except (RuntimeError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"--checkpoint: {args.checkpoint} does not match the model of {args.config}: {exc}"
            ) from None
    n = config.energy.samples
    x = data.test_x[:n].to(torch_dtype(config))
    programming = None
    if args.checkpoint is not None and (summary := Path(args.checkpoint).parent / SUMMARY_FILE).is_file():
        try:
            programming = programming_from_run(json.loads(summary.read_text(encoding="utf-8")), model)
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"--checkpoint: {summary} is not a readable training summary ({exc})") from None
    report, details = energy_report(
        config, model, x, data.test_y[:n], data.n_classes, say=lambda m: say(m, args.json), programming=programming
    )
    atomic_write_json(out / ENERGY_FILE, report)
    text = report_text(report)
    atomic_write_text(out / REPORT_FILE, text + "\n")
    plot_breakdown(report, out / BREAKDOWN_PLOT)
    plot_waveforms(details, out / WAVEFORM_PLOT)
    plot_convergence(details, out / CONVERGENCE_PLOT)
    if args.json:
        print(json.dumps(report))
    else:
        print(text)
        print(f"\nwrote {out / ENERGY_FILE}, {BREAKDOWN_PLOT}, {WAVEFORM_PLOT}, {CONVERGENCE_PLOT}")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "energy", help="static power, settling time and energy per phase, per inference and per training step"
    )
    p.add_argument("--config", default=None, help=f"{CONFIG_HELP} (not needed with a `cosim train` checkpoint)")
    add_set_argument(p)
    p.add_argument("--checkpoint", default=None, help="checkpoint.pt of `cosim train` or a saved state dict")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object on stdout")
    p.add_argument("--out", type=Path, required=True, help="folder for energy.json, energy.txt and the PNGs")
    p.set_defaults(func=run)
