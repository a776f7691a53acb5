"""Static power (analog.energy), converter/MAC counts and the `cosim energy` command."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from analog import Circuit, CircuitSpec
from analog.energy import crossbar_power, equilibrium_power, static_power
from analog.solvers import FastSolver
from analog.solvers.physics import LayeredSystem
from cosim.costs import block_counts, digital_macs
from tests.conftest import log_uniform_circuit, make_solver, random_inputs

SPECS = {
    "pairs-both-diodes": CircuitSpec((5, 7, 3), diode_up_V=0.3, diode_down_V=-0.3),
    "amplifier": CircuitSpec(
        (4, 6, 5, 3), input_pairs=False, diode_up_V=0.5, diode_down_V=-0.2, amplifier_gains=(4.0, 0.5)
    ),
    "no-bias-one-diode": CircuitSpec((6, 8, 4), bias_V=None, diode_up_V=0.2, diode_down_V=None),
    "rails-off-zero": CircuitSpec((3, 5, 4, 2), bias_V=0.7, diode_up_V=0.4, diode_down_V=-0.6),
    "dual-rail": CircuitSpec((4, 6, 5, 3), hidden_pairs=True, diode_up_V=0.3, diode_down_V=-0.3),
    "dual-rail-amplified": CircuitSpec(
        (4, 6, 5, 3), hidden_pairs=True, diode_up_V=0.5, diode_down_V=-0.2, amplifier_gains=(3.0, None)
    ),
}


def _batch(spec: CircuitSpec, seed: int, nudged: bool):
    circuit = log_uniform_circuit(spec, seed)
    source_V = spec.source_voltages(4 * random_inputs(spec, 6, seed) - 2)
    gen = torch.Generator().manual_seed(seed)
    nudge = 2e-5 * torch.randn(6, spec.n_outputs, generator=gen) if nudged else None
    return circuit, source_V, nudge


def test_crossbar_power_matches_the_elementwise_sum():
    gen = torch.Generator().manual_seed(0)
    x, y, g = torch.randn(3, 5, generator=gen), torch.randn(3, 4, generator=gen), torch.rand(5, 4, generator=gen)
    brute = (g * (x[:, :, None] - y[:, None, :]) ** 2).sum((1, 2))  # fine at this size, in a test
    torch.testing.assert_close(crossbar_power(x, y, g), brute, rtol=1e-13, atol=0)


@pytest.mark.parametrize("nudged", [False, True])
@pytest.mark.parametrize("name", list(SPECS))
def test_power_balances_at_equilibrium(name, nudged):
    circuit, source_V, nudge = _batch(SPECS[name], seed=len(name), nudged=nudged)
    eq = FastSolver().solve(circuit, source_V, nudge)
    power = equilibrium_power(circuit, source_V, eq, nudge)
    rel = (power.delivered_W - power.dissipated_W).abs() / power.delivered_W.abs()
    assert float(rel.max()) < 1e-9
    assert float(power.dissipated_W.min()) > 0
    # The same balance with the source currents recomputed from the voltages.
    again = static_power(circuit, source_V, eq.voltages, nudge)
    torch.testing.assert_close(again.delivered_W, power.delivered_W, rtol=1e-12, atol=0)
    if nudged:
        assert float(power.nudge_W.abs().max()) > 0
    if SPECS[name].amplifier_gains is not None:
        assert float(power.amplifiers_W.abs().max()) > 0


@pytest.mark.parametrize("name", list(SPECS))
def test_power_imbalance_away_from_equilibrium_is_the_charging_power(name):
    """delivered - dissipated = sum_j v_j I_net,j (Tellegen), with I_net from the solver's KCL residual."""
    spec = SPECS[name]
    circuit, source_V, nudge = _batch(spec, seed=3, nudged=True)
    gen = torch.Generator().manual_seed(9)
    voltages = tuple(0.4 * torch.randn(6, n, generator=gen) for n in spec.layer_sizes[1:])
    power = static_power(circuit, source_V, voltages, nudge)
    system = LayeredSystem(circuit, source_V, nudge)
    u = system.from_voltages(voltages)
    net_current = system.residual(u, system.diodes(u)[0]) * system.scale
    expected = (torch.cat(voltages, 1) * net_current).sum(1)
    torch.testing.assert_close(power.charging_W, expected, rtol=1e-10, atol=1e-18)
    torch.testing.assert_close(power.delivered_W - power.dissipated_W, power.charging_W, rtol=1e-9, atol=1e-18)


@pytest.mark.ngspice
@pytest.mark.parametrize("nudged", [False, True])
def test_fast_power_equals_power_from_ngspice_source_currents(nudged):
    ngspice = make_solver("ngspice")
    try:
        for seed, name in enumerate(SPECS):
            circuit, source_V, nudge = _batch(SPECS[name], seed=10 + seed, nudged=nudged)
            fast = equilibrium_power(circuit, source_V, FastSolver().solve(circuit, source_V, nudge), nudge)
            spice = equilibrium_power(circuit, source_V, ngspice.solve(circuit, source_V, nudge), nudge)
            for field in ("delivered_W", "dissipated_W"):
                a, b = getattr(fast, field), getattr(spice, field)
                assert float(((a - b).abs() / a.abs()).max()) < 1e-9, (name, field)
            torch.testing.assert_close(fast.inputs_W, spice.inputs_W, rtol=1e-9, atol=1e-15)
    finally:
        ngspice.close()


def test_block_counts_follow_the_structure():
    spec = CircuitSpec((6, 5, 3))
    circuit = Circuit.random(spec)
    counts = block_counts(circuit, n_nudged=2, n_measured=2, needs_input_grad=True)
    assert counts["devices"] == 12 * 5 + 5 * 3 + 2 * 5 + 2 * 3
    assert counts["dac_inference"] == 6 and counts["adc_inference"] == 3
    assert counts["dac_training"] == 6 + 2 * 3
    assert counts["adc_training"] == 3 + 2 * (8 + 12)
    assert block_counts(circuit, 2, 2, needs_input_grad=False)["adc_training"] == 3 + 2 * 8


def test_digital_macs_from_shapes():
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Flatten(), nn.Linear(3 * 8 * 8, 7))
    macs, out = digital_macs(model, torch.zeros(5, 2, 8, 8))
    assert out.shape == (5, 7)
    assert macs == 3 * 8 * 8 * 2 * 3 * 3 + 3 * 8 * 8 * 7


_CONFIG = """
name = "energy-test"
seed = 0
[[model.blocks]]
type = "linear"
in_features = 64
out_features = 12
[[model.blocks]]
type = "analog"
sizes = [12, 6, 10]
input_gain_V = 2.0
[[model.blocks]]
type = "scale"
factor = 10.0
[energy]
samples = 3
ngspice = false
"""


@pytest.mark.slow
def test_cli_energy_report_and_checkpoint(tmp_path, capsys):
    from cosim.build import build_model
    from cosim.cli import main
    from cosim.config import load_config

    config_path = tmp_path / "energy.toml"
    config_path.write_text(_CONFIG)
    model = build_model(load_config(config_path), (64,))
    with torch.no_grad():
        model.blocks[1].weights[0].fill_(5e-5)
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    out = tmp_path / "out"
    code = main(
        [
            "energy",
            "--config",
            str(config_path),
            "--checkpoint",
            str(tmp_path / "weights.pt"),
            "--json",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads((out / "energy.json").read_text())
    for png in ("energy_breakdown.png", "settling_waveforms.png", "solver_convergence.png"):
        assert (out / png).stat().st_size > 1000
    (block,) = report["blocks"]
    assert [r["phase"] for r in block["phases"]] == ["free", "+beta", "-beta"]
    for row in block["phases"]:
        assert row["power_W"] > 0 and row["settle_time_s"] > 0 and row["energy_J"] > 0
    inference, training = report["per_inference_J"], report["per_training_sample_J"]
    assert training["total_J"] > inference["total_J"] > 0
    assert report["counts_per_sample"]["digital_macs_inference"] == 64 * 12
    assert block["counts"]["adc_training"] == 10 + 2 * (16 + 24)  # a trainable Linear precedes the block
    # A `cosim train` checkpoint is read through cosim.checkpoint.
    from cosim.checkpoint import CHECKPOINT_FORMAT

    torch.save({"format": CHECKPOINT_FORMAT, "model": model.state_dict()}, tmp_path / "checkpoint.pt")
    args = ["energy", "--config", str(config_path), "--checkpoint", str(tmp_path / "checkpoint.pt")]
    assert main([*args, "--json", "--out", str(tmp_path / "again")]) == 0
    assert json.loads(capsys.readouterr().out)["per_inference_J"] == report["per_inference_J"]
    assert (
        main(["energy", "--config", str(config_path), "--checkpoint", str(tmp_path / "nope.pt"), "--out", str(out)])
        == 2
    )
